#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <optional>

#include "pkg/base/clock.h"

namespace ferry::pump {

// TokenBucket paces one flow of bytes at `rate` bytes per second with a burst
// of `burst` bytes: the bucket fills at `rate` up to `burst`, and sending n
// bytes takes n tokens. Not thread-safe: one owner (a pump on its loop, or a
// blocking copier). Times are monotonic nanoseconds from the owner's clock.
class TokenBucket {
 public:
  // A burst of 50 ms worth: small against any measuring window, large
  // enough that a fast limit reads big chunks.
  static uint64_t DefaultBurst(uint64_t rate) { return std::max<uint64_t>(rate / 20, 1); }

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
    unsigned __int128 add = static_cast<unsigned __int128>(rate_) *
                            static_cast<uint64_t>(now_nanos - last_nanos_) / base::kNanosPerSecond;
    if (add == 0) return;  // keep last_nanos_, so sub-token intervals accumulate
    tokens_ = static_cast<uint64_t>(std::min<unsigned __int128>(tokens_ + add, burst_));
    last_nanos_ = now_nanos;
  }

  uint64_t rate_;
  uint64_t burst_;
  uint64_t tokens_;
  int64_t last_nanos_;
};

// SharedTokenBucket is a TokenBucket that every connection of a rule, on
// every worker, draws from: lock-free, one compare-and-swap per read. It keeps
// the time at which the bucket was (or will be) empty; the tokens at `now`
// are (now - empty_at) * rate, capped at the burst (GCRA's formulation).
class SharedTokenBucket {
 public:
  SharedTokenBucket(uint64_t rate, uint64_t burst)
      : rate_(rate), burst_nanos_(NanosFor(burst, rate)) {}

  uint64_t rate() const { return rate_; }

  // Takes up to `want` bytes of tokens; returns how many (0: none yet).
  uint64_t Take(uint64_t want, int64_t now_nanos) {
    int64_t empty_at = empty_at_.load(std::memory_order_relaxed);
    for (;;) {
      int64_t base = std::max(empty_at, now_nanos - burst_nanos_);
      if (base >= now_nanos) return 0;
      uint64_t available = static_cast<uint64_t>(static_cast<unsigned __int128>(now_nanos - base) *
                                                 rate_ / base::kNanosPerSecond);
      uint64_t granted = std::min(want, available);
      if (granted == 0) return 0;
      int64_t next = base + NanosFor(granted, rate_);
      if (empty_at_.compare_exchange_weak(empty_at, next, std::memory_order_relaxed)) {
        return granted;
      }
    }
  }
  // Gives back tokens taken and not used (a read returned fewer bytes).
  void Return(uint64_t bytes) {
    if (bytes > 0) empty_at_.fetch_sub(NanosFor(bytes, rate_), std::memory_order_relaxed);
  }
  // Nanoseconds until `want` bytes (capped at the burst) are available.
  int64_t WaitNanos(uint64_t want, int64_t now_nanos) const {
    int64_t base = std::max(empty_at_.load(std::memory_order_relaxed), now_nanos - burst_nanos_);
    int64_t need = std::min(NanosFor(want, rate_), burst_nanos_);
    return std::max<int64_t>(base + need - now_nanos, 0);
  }

 private:
  static int64_t NanosFor(uint64_t bytes, uint64_t rate) {
    return static_cast<int64_t>(
        (static_cast<unsigned __int128>(bytes) * base::kNanosPerSecond + rate - 1) / rate);
  }

  const uint64_t rate_;
  const int64_t burst_nanos_;
  std::atomic<int64_t> empty_at_{INT64_MIN / 2};  // long ago: a full bucket
};

// Pacer limits how fast one direction of a connection reads: its own bucket,
// the rule's shared one, or both. Owned by the Session; the Pump borrows it.
struct Pacer {
  std::optional<TokenBucket> connection;
  SharedTokenBucket* rule = nullptr;

  // Bytes the direction may read now (taken from the rule's bucket; give
  // back what the read did not use with Used()).
  uint64_t Allow(uint64_t want, int64_t now_nanos) {
    if (connection) want = std::min(want, connection->Available(now_nanos));
    if (rule != nullptr && want > 0) want = rule->Take(want, now_nanos);
    return want;
  }
  void Used(uint64_t allowed, uint64_t read) {
    if (connection) connection->Consume(read);
    if (rule != nullptr && allowed > read) rule->Return(allowed - read);
  }
  // When it is worth reading again: once 20 ms worth of the slower limit
  // has refilled, so a paced direction wakes about 50 times a second.
  int64_t WaitNanos(int64_t now_nanos) {
    uint64_t rate = UINT64_MAX;
    if (connection) rate = connection->rate();
    if (rule != nullptr) rate = std::min(rate, rule->rate());
    uint64_t want = std::max<uint64_t>(rate / 50, 1);
    int64_t wait = 0;
    if (connection) wait = connection->WaitNanos(want, now_nanos);
    if (rule != nullptr) wait = std::max(wait, rule->WaitNanos(want, now_nanos));
    return std::max<int64_t>(wait, base::kNanosPerMilli);  // never a busy timer
  }
};

}  // namespace ferry::pump
