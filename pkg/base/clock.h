#pragma once

#include <time.h>

#include <cstdint>

namespace ferry::base {

// Monotonic time in nanoseconds. Injected so tests can drive timers by hand.
// Implementations must be safe to call from any thread.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowNanos() const = 0;
};

class RealClock final : public Clock {
 public:
  int64_t NowNanos() const override {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
  }
  static RealClock& Get() {
    static RealClock clock;
    return clock;
  }
};

inline constexpr int64_t kNanosPerMilli = 1'000'000;
inline constexpr int64_t kNanosPerSecond = 1'000'000'000;

}  // namespace ferry::base
