#include "pkg/event/loop.h"

#include <sys/eventfd.h>
#include <unistd.h>

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
