#pragma once

#include <atomic>
#include <cstdint>

namespace ferry::metrics {

// A counter with exactly one writer (its loop's thread) and any number of
// readers (the exporter, at scrape time). No read-modify-write: the writer
// loads and stores, so the hot path never contends on a cache line.
class Counter {
 public:
  void Add(uint64_t n) {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A single-writer gauge; may go down. Summed over loops at scrape time.
class Gauge {
 public:
  void Add(int64_t n) {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  int64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

// A latency histogram with one writer; buckets are cumulative only when
// exported. Bounds suit connect times, from loopback to a slow WAN.
class Histogram {
 public:
  static constexpr double kBoundsSeconds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                              0.1,    0.25,  0.5,    1,     2.5,   5,    10};
  static constexpr int kBuckets = sizeof(kBoundsSeconds) / sizeof(kBoundsSeconds[0]);

  void Observe(int64_t nanos) {
    double seconds = static_cast<double>(nanos) / 1e9;
    int i = 0;
    while (i < kBuckets && seconds > kBoundsSeconds[i]) ++i;
    counts_[i].Add(1);  // counts_[kBuckets] is +Inf
    sum_nanos_.Add(static_cast<uint64_t>(nanos));
  }
  uint64_t bucket(int i) const { return counts_[i].value(); }  // not cumulative
  uint64_t sum_nanos() const { return sum_nanos_.value(); }

 private:
  Counter counts_[kBuckets + 1];
  Counter sum_nanos_;
};

enum class AcceptError { kEmfile = 0, kEnfile, kEnomem, kOther, kCount };
enum class PumpMode { kCopy = 0, kSplice, kCount };

// Counters of one loop that belong to no rule. Written by the loop only.
struct LoopStats {
  Counter accept_errors[static_cast<int>(AcceptError::kCount)];
  Counter pump_bytes[static_cast<int>(PumpMode::kCount)];
  Gauge buffered_bytes;  // user-space buffers plus pipes, all rules
  Gauge pipes_in_use;
  Gauge buffers_in_use;
};

}  // namespace ferry::metrics
