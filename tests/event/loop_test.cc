#include "pkg/event/loop.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"

namespace ferry::event {
namespace {

using testing::FakeClock;

TEST(TimerTest, FiresInDeadlineOrderOnlyWhenDue) {
  FakeClock clock;
  Loop loop(clock);
  std::vector<int> fired;
  Timer a(loop, [&] { fired.push_back(1); });
  Timer b(loop, [&] { fired.push_back(2); });
  a.ArmAfter(200 * base::kNanosPerMilli);
  b.ArmAfter(100 * base::kNanosPerMilli);
  loop.RunUntilIdle();
  EXPECT_TRUE(fired.empty());
  clock.Advance(150 * base::kNanosPerMilli);
  loop.RunUntilIdle();
  EXPECT_EQ(fired, std::vector<int>({2}));
  clock.Advance(100 * base::kNanosPerMilli);
  loop.RunUntilIdle();
  EXPECT_EQ(fired, std::vector<int>({2, 1}));
}

TEST(TimerTest, RearmMovesDeadlineAndDestructionDisarms) {
  FakeClock clock;
  Loop loop(clock);
  int fired = 0;
  Timer t(loop, [&] { ++fired; });
  t.ArmAfter(100 * base::kNanosPerMilli);
  t.ArmAfter(300 * base::kNanosPerMilli);
  clock.Advance(200 * base::kNanosPerMilli);
  loop.RunUntilIdle();
  EXPECT_EQ(fired, 0);
  {
    Timer gone(loop, [&] { fired += 100; });
    gone.ArmAfter(0);
  }
  clock.Advance(200 * base::kNanosPerMilli);
  loop.RunUntilIdle();
  EXPECT_EQ(fired, 1);
}

// The timer heap against a model: random arms, re-arms (earlier and later)
// and disarms; every timer that is armed at the end fires once, in deadline
// order, and no other does.
TEST(TimerTest, HeapFiresExactlyTheArmedTimersInDeadlineOrder) {
  FakeClock clock;
  Loop loop(clock);
  constexpr int kTimers = 500;
  std::vector<std::pair<int64_t, int>> fired;  // (deadline, id)
  std::vector<std::unique_ptr<Timer>> timers;
  std::vector<int64_t> expected(kTimers, -1);  // -1: not armed
  for (int i = 0; i < kTimers; ++i) {
    timers.push_back(std::make_unique<Timer>(loop, [&, i] {
      fired.push_back({timers[i]->deadline(), i});
    }));
  }
  std::mt19937 rng(7);
  for (int step = 0; step < 20000; ++step) {
    int i = static_cast<int>(rng() % kTimers);
    if (rng() % 4 == 0) {
      timers[i]->Disarm();
      expected[i] = -1;
    } else {
      int64_t delay = 1 + static_cast<int64_t>(rng() % 100000);
      timers[i]->ArmAfter(delay);
      expected[i] = timers[i]->deadline();
    }
  }
  clock.Advance(200000);
  loop.RunUntilIdle();
  std::vector<std::pair<int64_t, int>> want;
  for (int i = 0; i < kTimers; ++i) {
    if (expected[i] >= 0) want.push_back({expected[i], i});
  }
  std::sort(want.begin(), want.end());
  ASSERT_EQ(fired.size(), want.size());
  for (size_t k = 0; k < fired.size(); ++k) {
    EXPECT_EQ(fired[k].first, want[k].first) << k;  // ties may fire in any order
  }
  for (auto& t : timers) EXPECT_FALSE(t->armed());
}

class CountingHandler : public Handler {
 public:
  void OnEvents(uint32_t events) override {
    ++calls;
    last = events;
  }
  int calls = 0;
  uint32_t last = 0;
};

TEST(LoopTest, ScheduleRunsOnceInNextIteration) {
  Loop loop;
  CountingHandler h;
  loop.Schedule(&h);
  loop.Schedule(&h);
  EXPECT_EQ(h.calls, 0);
  loop.RunUntilIdle();
  EXPECT_EQ(h.calls, 1);
  EXPECT_EQ(h.last, 0u);
}

TEST(LoopTest, UnscheduleCancelsPendingWakeUp) {
  Loop loop;
  CountingHandler h;
  loop.Schedule(&h);
  loop.Unschedule(&h);
  loop.RunUntilIdle();
  EXPECT_EQ(h.calls, 0);
}

TEST(LoopTest, SelfSchedulingHandlerYieldsBetweenIterations) {
  Loop loop;
  struct Again : Handler {
    explicit Again(Loop& l) : loop(l) {}
    void OnEvents(uint32_t) override {
      if (++calls < 3) loop.Schedule(this);
    }
    Loop& loop;
    int calls = 0;
  } h(loop);
  loop.Schedule(&h);
  EXPECT_EQ(loop.RunOnce(0), 1);
  EXPECT_EQ(h.calls, 1);
  loop.RunUntilIdle();
  EXPECT_EQ(h.calls, 3);
}

TEST(LoopTest, FdReadinessReachesHandler) {
  Loop loop;
  CountingHandler h;
  base::Fd efd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  ASSERT_EQ(loop.Add(efd.get(), EPOLLIN, &h), 0);
  loop.RunUntilIdle();
  EXPECT_EQ(h.calls, 0);
  uint64_t one = 1;
  ASSERT_EQ(::write(efd.get(), &one, sizeof(one)), 8);
  loop.RunOnce(1000);
  EXPECT_EQ(h.calls, 1);
  EXPECT_TRUE(h.last & EPOLLIN);
  loop.Remove(efd.get());
}

TEST(LoopTest, DeferDeleteFreesAfterTheIteration) {
  Loop loop;
  struct Tracked : Deletable {
    explicit Tracked(bool* gone) : gone(gone) {}
    ~Tracked() override { *gone = true; }
    bool* gone;
  };
  bool gone = false;
  bool seen_alive_in_task = false;
  loop.Post([&] {
    loop.DeferDelete(std::make_unique<Tracked>(&gone));
    seen_alive_in_task = !gone;
  });
  loop.RunOnce(0);
  EXPECT_TRUE(seen_alive_in_task);
  EXPECT_TRUE(gone);
}

TEST(LoopTest, PostFromAnotherThreadWakesRun) {
  Loop loop;
  int value = 0;
  std::thread t([&] {
    loop.Post([&] { value = 42; });
    loop.Stop();
  });
  loop.Run();  // returns only after Stop(), which follows the post
  t.join();
  EXPECT_EQ(value, 42);
}

}  // namespace
}  // namespace ferry::event
