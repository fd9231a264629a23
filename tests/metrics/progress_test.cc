// The --progress meter: IEC formatting, the per-second and total lines for
// known inputs, and the reporter thread's tick-then-total sequence.

#include "pkg/metrics/progress.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace ferry::metrics {
namespace {

constexpr double kKiB = 1024.0;
constexpr double kMiB = kKiB * 1024;
constexpr double kGiB = kMiB * 1024;
constexpr double kTiB = kGiB * 1024;
constexpr int64_t kSecond = base::kNanosPerSecond;

struct IecCase {
  double bytes;
  const char* want;
};

TEST(FormatIecBytesTest, Table) {
  const IecCase cases[] = {
      {0, "0 B"},
      {1, "1 B"},
      {999, "999 B"},
      {1023, "1023 B"},
      {1023.4, "1023 B"},
      {1023.6, "1.00 KiB"},  // would print as 1024 B: the next unit instead
      {1024, "1.00 KiB"},
      {1025, "1.00 KiB"},
      {1536, "1.50 KiB"},
      {10 * kKiB - 6, "9.99 KiB"},
      {10 * kKiB - 1, "10.0 KiB"},  // 9.999 rounds up to three digits, not "10.00"
      {10 * kKiB, "10.0 KiB"},
      {99.9 * kKiB, "99.9 KiB"},
      {99.96 * kKiB, "100 KiB"},
      {100 * kKiB, "100 KiB"},
      {1023 * kKiB, "1023 KiB"},
      {1023.4 * kKiB, "1023 KiB"},
      {1023.6 * kKiB, "1.00 MiB"},
      {kMiB - 1, "1.00 MiB"},
      {kMiB, "1.00 MiB"},
      {12.5 * kMiB, "12.5 MiB"},
      {512 * kMiB, "512 MiB"},
      {kGiB, "1.00 GiB"},
      {3.2 * kGiB, "3.20 GiB"},
      {kTiB, "1.00 TiB"},
      {42.42 * kTiB, "42.4 TiB"},
      {1024 * kTiB, "1.00 PiB"},
      {kTiB * kTiB, "1048576 EiB"},  // past the last unit: the number grows
  };
  for (const IecCase& c : cases) {
    EXPECT_EQ(FormatIecBytes(c.bytes), c.want) << "bytes=" << c.bytes;
  }
}

TEST(FormatIecBytesTest, BadInputCountsAsZero) {
  EXPECT_EQ(FormatIecBytes(-1), "0 B");
  EXPECT_EQ(FormatIecBytes(std::nan("")), "0 B");
  EXPECT_EQ(FormatIecBytes(std::numeric_limits<double>::infinity()), "0 B");
}

TEST(FormatIecRateTest, AppendsPerSecond) {
  EXPECT_EQ(FormatIecRate(0), "0 B/s");
  EXPECT_EQ(FormatIecRate(1023), "1023 B/s");
  EXPECT_EQ(FormatIecRate(12.5 * kMiB), "12.5 MiB/s");
  EXPECT_EQ(FormatIecRate(3.2 * kGiB), "3.20 GiB/s");
}

TEST(FormatElapsedTest, Table) {
  EXPECT_EQ(FormatElapsed(0), "0.0s");
  EXPECT_EQ(FormatElapsed(-5), "0.0s");
  EXPECT_EQ(FormatElapsed(kSecond * 3 / 10), "0.3s");
  EXPECT_EQ(FormatElapsed(kSecond + kSecond / 20), "1.1s");  // rounds half up
  EXPECT_EQ(FormatElapsed(3 * kSecond), "3.0s");
  EXPECT_EQ(FormatElapsed(59 * kSecond + kSecond * 9 / 10), "59.9s");
  EXPECT_EQ(FormatElapsed(59 * kSecond + kSecond * 96 / 100), "1m00s");
  EXPECT_EQ(FormatElapsed(65 * kSecond), "1m05s");
  EXPECT_EQ(FormatElapsed(3599 * kSecond), "59m59s");
  EXPECT_EQ(FormatElapsed(3600 * kSecond), "1h00m00s");
  EXPECT_EQ(FormatElapsed((2 * 3600 + 3 * 60 + 9) * kSecond), "2h03m09s");
  EXPECT_FALSE(FormatElapsed(INT64_MAX).empty());
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(ProgressMeterTest, TickPrintsElapsedTotalAndTheIntervalsRate) {
  std::ostringstream out;
  const int64_t start = 1000 * kSecond;  // any monotonic origin
  ProgressMeter meter(out, start);
  meter.Tick(static_cast<uint64_t>(2 * kMiB), start + kSecond);
  // The second interval moves 4 MiB in 2 s: the rate is the interval's, not the average.
  meter.Tick(static_cast<uint64_t>(6 * kMiB), start + 3 * kSecond);
  EXPECT_EQ(out.str(),
            "progress: 1.0s, 2.00 MiB, 2.00 MiB/s\n"
            "progress: 3.0s, 6.00 MiB, 2.00 MiB/s\n");
}

TEST(ProgressMeterTest, TickWithNoTimePassedOrAFallingTotalShowsZeroRate) {
  std::ostringstream out;
  ProgressMeter meter(out, 0);
  meter.Tick(5000, kSecond);
  meter.Tick(6000, kSecond);    // same instant
  meter.Tick(10, 2 * kSecond);  // total went down
  EXPECT_EQ(Lines(out.str()), (std::vector<std::string>{
                                  "progress: 1.0s, 4.88 KiB, 4.88 KiB/s",
                                  "progress: 1.0s, 5.86 KiB, 0 B/s",
                                  "progress: 2.0s, 10 B, 0 B/s",
                              }));
}

TEST(ProgressMeterTest, FinishPrintsExactBytesElapsedAndAverageOnce) {
  std::ostringstream out;
  ProgressMeter meter(out, 0);
  meter.Tick(1000, kSecond);
  meter.Finish(13107200, 3 * kSecond);
  meter.Finish(99, 5 * kSecond);  // only the first total counts
  meter.Tick(99, 6 * kSecond);    // and no ticks after it
  EXPECT_EQ(Lines(out.str()), (std::vector<std::string>{
                                  "progress: 1.0s, 1000 B, 1000 B/s",
                                  "total: 13107200 bytes (12.5 MiB) in 3.0s, average 4.17 MiB/s",
                              }));
}

TEST(ProgressMeterTest, FinishAtTheStartHasZeroAverage) {
  std::ostringstream out;
  ProgressMeter meter(out, 7 * kSecond);
  meter.Finish(0, 7 * kSecond);
  EXPECT_EQ(out.str(), "total: 0 bytes (0 B) in 0.0s, average 0 B/s\n");
}

TEST(ProgressMeterTest, RewriteModeOverwritesTicksAndEndsWithTheTotalLine) {
  std::ostringstream out;
  ProgressMeter meter(out, 0, /*rewrite_line=*/true);
  meter.Tick(1024, kSecond);
  meter.Tick(2048, 2 * kSecond);
  meter.Finish(2048, 2 * kSecond);
  EXPECT_EQ(out.str(),
            "\rprogress: 1.0s, 1.00 KiB, 1.00 KiB/s\033[K"
            "\rprogress: 2.0s, 2.00 KiB, 1.00 KiB/s\033[K"
            "\rtotal: 2048 bytes (2.00 KiB) in 2.0s, average 1.00 KiB/s\033[K\n");
}

TEST(ProgressReporterTest, TicksFromItsThreadThenStopPrintsTheTotal) {
  std::ostringstream out;
  std::atomic<uint64_t> total{0};
  std::atomic<int> samples{0};
  {
    ProgressReporter reporter(
        out,
        [&] {
          samples.fetch_add(1);
          return total.load();
        },
        /*rewrite_line=*/false, /*interval_nanos=*/5'000'000);
    total.store(4096);
    // Two ticks at 5 ms intervals; bounded at 10 s for a loaded machine.
    for (int i = 0; i < 10'000 && samples.load() < 2; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_GE(samples.load(), 2);
    total.store(12345);
    reporter.Stop();
    reporter.Stop();  // idempotent; the destructor's is a no-op too
  }
  std::vector<std::string> lines = Lines(out.str());
  ASSERT_GE(lines.size(), 3u) << out.str();
  for (size_t i = 0; i + 1 < lines.size(); ++i) {
    EXPECT_EQ(lines[i].rfind("progress: ", 0), 0u) << lines[i];
  }
  EXPECT_EQ(lines.back().rfind("total: 12345 bytes (12.1 KiB) in ", 0), 0u) << lines.back();
}

TEST(ProgressReporterTest, StopBeforeTheFirstTickPrintsOnlyTheTotal) {
  std::ostringstream out;
  {
    // A 1 s interval; the destructor stops it at once.
    ProgressReporter reporter(out, [] { return uint64_t{7}; });
  }
  EXPECT_EQ(out.str().rfind("total: 7 bytes (7 B) in 0.", 0), 0u) << out.str();
  EXPECT_EQ(Lines(out.str()).size(), 1u) << out.str();
}

}  // namespace
}  // namespace ferry::metrics
