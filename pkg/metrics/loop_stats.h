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
