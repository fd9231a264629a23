#pragma once

#include <sys/epoll.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "pkg/base/clock.h"
#include "pkg/base/fd.h"

namespace ferry::event {

// Receives readiness for the fds it registered, and the wake-ups it scheduled.
// Called only on its loop's thread.
class Handler {
 public:
  virtual ~Handler() = default;
  // `events` is a mask of EPOLL* bits; 0 for a Schedule()d wake-up.
  virtual void OnEvents(uint32_t events) = 0;
};

// An object whose destruction must wait until the current event returns.
class Deletable {
 public:
  virtual ~Deletable() = default;
};

class Timer;

// Loop is one thread's epoll loop: fd readiness, timers, cross-thread posts and
// deferred deletion. Loops share nothing. Every method must be called on the
// loop's thread, except Post() and Stop(), which are thread-safe.
//
// One iteration: wait for events (until the nearest timer), dispatch fd events,
// run the handlers Schedule()d before this iteration, fire expired timers, run
// posted tasks, then free what DeferDelete() received.
class Loop {
 public:
  explicit Loop(base::Clock& clock = base::RealClock::Get());
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // Registers `fd`; `handler` is borrowed and must stay valid until Remove(fd)
  // and the end of the iteration in which Remove() was called. Returns errno or 0.
  int Add(int fd, uint32_t events, Handler* handler);
  int Modify(int fd, uint32_t events, Handler* handler);
  void Remove(int fd);

  // Runs handler->OnEvents(0) in the next iteration, once, however often it is
  // called before then. Used to continue work a handler stopped for fairness.
  // A handler that is destroyed must call Unschedule() first.
  void Schedule(Handler* handler);
  void Unschedule(Handler* handler);

  // Runs `fn` on this loop's thread in a later iteration. Thread-safe.
  void Post(std::function<void()> fn);
  // Frees `object` after the current iteration's callbacks have returned.
  void DeferDelete(std::unique_ptr<Deletable> object);

  // Runs iterations until Stop(). Records the calling thread as the loop's.
  void Run();
  // Makes Run() return after the current iteration. Thread-safe.
  void Stop();
  // Runs iterations without blocking until no fd event, scheduled handler,
  // expired timer or posted task is left (for tests).
  void RunUntilIdle();
  // One iteration waiting at most `timeout_ms` (-1: until the next timer).
  // Returns the number of callbacks it ran.
  int RunOnce(int timeout_ms);

  // Monotonic time, read once per iteration; cheap.
  int64_t now() const { return now_; }
  base::Clock& clock() { return clock_; }
  bool InLoopThread() const;

 private:
  friend class Timer;
  // The timers form a binary min-heap on deadline; each Timer knows its
  // slot, so arming, re-arming and disarming allocate nothing.
  void ArmTimer(Timer* timer);
  void DisarmTimer(Timer* timer);
  void SiftUp(size_t i);
  void SiftDown(size_t i);
  void Place(size_t i, Timer* timer);
  int RunTimers();
  int RunPosted();
  int RunScheduled();
  int NextTimeoutMs() const;

  base::Clock& clock_;
  base::Fd epoll_;
  base::Fd wake_;  // eventfd that Post() and Stop() write
  int64_t now_ = 0;
  bool stopping_ = false;
  std::thread::id thread_;
  std::vector<Timer*> timers_;  // min-heap on Timer::deadline_
  std::vector<Handler*> scheduled_;  // for the next iteration
  std::vector<Handler*> running_;    // being run now; Unschedule() clears entries
  std::vector<std::unique_ptr<Deletable>> deferred_;
  std::mutex posted_mu_;
  std::vector<std::function<void()>> posted_;  // guarded by posted_mu_
  bool stop_requested_ = false;                 // guarded by posted_mu_

  class WakeHandler final : public Handler {
   public:
    explicit WakeHandler(Loop& loop) : loop_(loop) {}
    void OnEvents(uint32_t) override;
    Loop& loop_;
  };
  WakeHandler wake_handler_{*this};
};

// A one-shot timer on a loop. Owned by its user; destroying it disarms it.
// The callback runs on the loop's thread, once per arming.
class Timer {
 public:
  Timer(Loop& loop, std::function<void()> callback)
      : loop_(loop), callback_(std::move(callback)) {}
  ~Timer() { Disarm(); }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  // (Re)arms the timer to fire `delay_nanos` after loop.now().
  void ArmAfter(int64_t delay_nanos) { ArmAt(loop_.now() + delay_nanos); }
  void ArmAt(int64_t deadline_nanos);
  void Disarm();
  bool armed() const { return armed_; }
  int64_t deadline() const { return deadline_; }

 private:
  friend class Loop;
  Loop& loop_;
  std::function<void()> callback_;
  int64_t deadline_ = 0;
  bool armed_ = false;
  size_t heap_index_ = 0;  // while armed: its slot in Loop::timers_
};

}  // namespace ferry::event
