#pragma once

#include <atomic>

#include "pkg/base/clock.h"

namespace ferry::testing {

// A clock that moves only when the test says so.
class FakeClock final : public base::Clock {
 public:
  int64_t NowNanos() const override { return now_.load(); }
  void Advance(int64_t nanos) { now_.fetch_add(nanos); }

 private:
  std::atomic<int64_t> now_{1'000'000'000};
};

}  // namespace ferry::testing
