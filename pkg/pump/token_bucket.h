#pragma once

#include <algorithm>
#include <cstdint>

#include "pkg/base/clock.h"

namespace ferry::pump {

// TokenBucket paces one flow of bytes at `rate` bytes per second with a burst
// of `burst` bytes: the bucket fills at `rate` up to `burst`, and sending n
// bytes takes n tokens. Not thread-safe: one owner (a pump on its loop, or a
// blocking copier). Times are monotonic nanoseconds from the owner's clock.
class TokenBucket {
 public:
  // A burst of a tenth of a second's worth, at least 16 KiB, keeps the
  // syscall count low without letting a second's budget out at once.
  static uint64_t DefaultBurst(uint64_t rate) {
    return std::max<uint64_t>(rate / 10, 16 * 1024);
  }

  TokenBucket(uint64_t rate, uint64_t burst, int64_t now_nanos)
      : rate_(rate), burst_(burst), tokens_(burst), last_nanos_(now_nanos) {}

  uint64_t rate() const { return rate_; }

  // Bytes that may be sent now.
  uint64_t Available(int64_t now_nanos) {
    Refill(now_nanos);
    return tokens_;
  }
  // Takes `bytes` tokens (at most what Available() returned).
  void Consume(uint64_t bytes) { tokens_ -= std::min(bytes, tokens_); }
  // Nanoseconds until `want` bytes (capped at the burst) are available; 0 if now.
  int64_t WaitNanos(uint64_t want, int64_t now_nanos) {
    Refill(now_nanos);
    want = std::min(want, burst_);
    if (tokens_ >= want) return 0;
    uint64_t missing = want - tokens_;
    // Round up so the wake-up finds the tokens there.
    return static_cast<int64_t>((missing * base::kNanosPerSecond + rate_ - 1) / rate_);
  }

 private:
  void Refill(int64_t now_nanos) {
    if (now_nanos <= last_nanos_) return;
    // 128-bit product: rate * nanos overflows 64 bits after ~18 s at 1 GB/s.
    unsigned __int128 add =
        static_cast<unsigned __int128>(rate_) * static_cast<uint64_t>(now_nanos - last_nanos_) /
        base::kNanosPerSecond;
    if (add == 0) return;  // keep last_nanos_, so sub-token intervals accumulate
    tokens_ = static_cast<uint64_t>(std::min<unsigned __int128>(tokens_ + add, burst_));
    last_nanos_ = now_nanos;
  }

  uint64_t rate_;
  uint64_t burst_;
  uint64_t tokens_;
  int64_t last_nanos_;
};

}  // namespace ferry::pump
