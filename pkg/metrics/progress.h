#pragma once

// The live throughput meter of `--progress` (tcp-pf's): one line a second on
// stderr with the elapsed time, the bytes moved so far and the last
// interval's rate, and a total line at the end. Sizes and rates are in IEC
// units (1 KiB = 1024 B).
//
//   progress: 3.0s, 12.5 MiB, 4.17 MiB/s
//   total: 13107200 bytes (12.5 MiB) in 3.0s, average 4.14 MiB/s
//
// The total line always gives the exact byte count, so scripts can parse it.

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <ostream>
#include <string>
#include <thread>

#include "pkg/base/clock.h"

namespace ferry::metrics {

// "0 B", "1023 B", "1.00 KiB", "12.5 MiB", "100 GiB": three significant
// digits from KiB up, whole bytes below; a value that would round to 1024 of
// a unit is shown in the next one ("1.00 MiB", never "1024 KiB"). Negative
// or NaN input counts as 0.
std::string FormatIecBytes(double bytes);
// FormatIecBytes(bytes_per_second) + "/s": "12.5 MiB/s".
std::string FormatIecRate(double bytes_per_second);
// "0.4s", "59.9s" (tenths) under a minute, then "1m05s", "2h03m09s".
std::string FormatElapsed(int64_t nanos);

// ProgressMeter formats and writes the lines. The caller samples its byte
// total and calls Tick() about once a second, then Finish() once. Each line
// is written with one stream insertion and flushed. Thread-safe: Tick() and
// Finish() may come from different threads (an internal mutex orders them).
// It borrows `out`, which must outlive it.
class ProgressMeter {
 public:
  // `start_nanos` is when the transfer began, on the monotonic clock the
  // caller passes to Tick() and Finish() (base::RealClock by default). With
  // `rewrite_line` (for a terminal) each tick overwrites the previous one
  // with '\r' and only the total line ends with '\n'; without it every line
  // is a whole line.
  explicit ProgressMeter(std::ostream& out, int64_t start_nanos = base::RealClock::Get().NowNanos(),
                         bool rewrite_line = false);

  // Writes one progress line: the elapsed time, `total_bytes`, and the rate
  // since the previous Tick() (or the start). Ignored after Finish().
  void Tick(uint64_t total_bytes, int64_t now_nanos);
  // Writes the total line: exact bytes, elapsed time, average rate. Only the
  // first call writes.
  void Finish(uint64_t total_bytes, int64_t now_nanos);

  // The lines Tick() and Finish() would write, without the line ending.
  static std::string TickLine(uint64_t total_bytes, int64_t elapsed_nanos, double rate);
  static std::string TotalLine(uint64_t total_bytes, int64_t elapsed_nanos);

 private:
  std::mutex mu_;
  std::ostream& out_;  // guarded by mu_
  const int64_t start_nanos_;
  const bool rewrite_line_;
  uint64_t last_bytes_ = 0;  // guarded by mu_
  int64_t last_nanos_;       // guarded by mu_
  bool finished_ = false;    // guarded by mu_
};

// ProgressReporter runs a ProgressMeter from a thread of its own: every
// `interval_nanos` (on a fixed schedule from the start, so ticks do not
// drift) it calls `sample()` and Tick()s with the result. Stop() ends the
// thread and writes the total line with a last sample. `sample` runs on the
// reporter's thread and, for the last sample, on the thread that calls
// Stop(), so it must be thread-safe (an atomic load). Owned by the command
// that moves the bytes; Stop() and the destructor must come from one thread.
class ProgressReporter {
 public:
  ProgressReporter(std::ostream& out, std::function<uint64_t()> sample, bool rewrite_line = false,
                   int64_t interval_nanos = base::kNanosPerSecond);
  // Stop() if not done yet.
  ~ProgressReporter();
  ProgressReporter(const ProgressReporter&) = delete;
  ProgressReporter& operator=(const ProgressReporter&) = delete;

  // Joins the thread, then writes the total line. Later calls do nothing.
  void Stop();

 private:
  void Run();

  std::function<uint64_t()> sample_;
  const int64_t interval_nanos_;
  const int64_t start_nanos_;
  ProgressMeter meter_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  bool stopped_ = false;   // only the owner's thread touches it
  std::thread thread_;
};

}  // namespace ferry::metrics
