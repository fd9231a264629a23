#include "pkg/metrics/progress.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"

namespace ferry::metrics {
namespace {

// snprintf into a std::string; a finite double's "%.0f" has at most 309 digits.
template <typename... Args>
std::string Format(const char* format, Args... args) {
  char buf[512];
  int n = std::snprintf(buf, sizeof(buf), format, args...);
  return std::string(buf, n < 0 ? 0 : std::min<size_t>(static_cast<size_t>(n), sizeof(buf) - 1));
}

long long LL(int64_t v) { return static_cast<long long>(v); }

constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
constexpr int kLastUnit = static_cast<int>(sizeof(kUnits) / sizeof(kUnits[0])) - 1;

// The value as it will print, so the unit choice and the text agree on
// rounding: bytes are whole, larger units keep three significant digits.
double Rounded(double v, int unit) {
  if (unit == 0) return std::round(v);
  if (v < 9.995) return std::round(v * 100) / 100;
  if (v < 99.95) return std::round(v * 10) / 10;
  return std::round(v);
}

}  // namespace

std::string FormatIecBytes(double bytes) {
  if (!(bytes > 0) || !std::isfinite(bytes)) bytes = 0;  // NaN, infinities and negatives
  double v = bytes;
  int unit = 0;
  while (unit < kLastUnit && Rounded(v, unit) >= 1024) {
    v /= 1024;
    ++unit;
  }
  if (unit == 0) return Format("%.0f B", v);
  if (v < 9.995) return Format("%.2f %s", v, kUnits[unit]);
  if (v < 99.95) return Format("%.1f %s", v, kUnits[unit]);
  return Format("%.0f %s", v, kUnits[unit]);
}

std::string FormatIecRate(double bytes_per_second) {
  return absl::StrCat(FormatIecBytes(bytes_per_second), "/s");
}

std::string FormatElapsed(int64_t nanos) {
  // Clamped so the rounding below cannot overflow.
  nanos = std::clamp<int64_t>(nanos, 0, INT64_MAX - base::kNanosPerSecond);
  // Tenths under a minute; whole seconds above, where tenths are noise.
  int64_t tenths = (nanos + base::kNanosPerSecond / 20) / (base::kNanosPerSecond / 10);
  if (tenths < 600) return Format("%lld.%llds", LL(tenths / 10), LL(tenths % 10));
  int64_t seconds = (nanos + base::kNanosPerSecond / 2) / base::kNanosPerSecond;
  if (seconds < 3600) return Format("%lldm%02llds", LL(seconds / 60), LL(seconds % 60));
  return Format("%lldh%02lldm%02llds", LL(seconds / 3600), LL(seconds / 60 % 60), LL(seconds % 60));
}

ProgressMeter::ProgressMeter(std::ostream& out, int64_t start_nanos, bool rewrite_line)
    : out_(out), start_nanos_(start_nanos), rewrite_line_(rewrite_line), last_nanos_(start_nanos) {}

std::string ProgressMeter::TickLine(uint64_t total_bytes, int64_t elapsed_nanos, double rate) {
  return absl::StrCat("progress: ", FormatElapsed(elapsed_nanos), ", ",
                      FormatIecBytes(static_cast<double>(total_bytes)), ", ", FormatIecRate(rate));
}

std::string ProgressMeter::TotalLine(uint64_t total_bytes, int64_t elapsed_nanos) {
  double seconds = static_cast<double>(elapsed_nanos) / base::kNanosPerSecond;
  double average = seconds > 0 ? static_cast<double>(total_bytes) / seconds : 0;
  return absl::StrCat("total: ", total_bytes, " bytes (",
                      FormatIecBytes(static_cast<double>(total_bytes)), ") in ",
                      FormatElapsed(elapsed_nanos), ", average ", FormatIecRate(average));
}

void ProgressMeter::Tick(uint64_t total_bytes, int64_t now_nanos) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  int64_t interval = now_nanos - last_nanos_;
  // A total that went down (a sampler that lost a source) moves nothing.
  double moved = total_bytes > last_bytes_ ? static_cast<double>(total_bytes - last_bytes_) : 0;
  double rate = interval > 0 ? moved * base::kNanosPerSecond / static_cast<double>(interval) : 0;
  std::string line = TickLine(total_bytes, now_nanos - start_nanos_, rate);
  // "\033[K" clears what a longer previous line left on the terminal.
  out_ << (rewrite_line_ ? absl::StrCat("\r", line, "\033[K") : absl::StrCat(line, "\n"));
  out_.flush();
  last_bytes_ = total_bytes;
  last_nanos_ = now_nanos;
}

void ProgressMeter::Finish(uint64_t total_bytes, int64_t now_nanos) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  finished_ = true;
  std::string line = TotalLine(total_bytes, now_nanos - start_nanos_);
  out_ << (rewrite_line_ ? absl::StrCat("\r", line, "\033[K\n") : absl::StrCat(line, "\n"));
  out_.flush();
}

ProgressReporter::ProgressReporter(std::ostream& out, std::function<uint64_t()> sample,
                                   bool rewrite_line, int64_t interval_nanos)
    : sample_(std::move(sample)),
      interval_nanos_(interval_nanos > 0 ? interval_nanos : base::kNanosPerSecond),
      start_nanos_(base::RealClock::Get().NowNanos()),
      meter_(out, start_nanos_, rewrite_line),
      thread_([this] { Run(); }) {}

ProgressReporter::~ProgressReporter() { Stop(); }

void ProgressReporter::Run() {
  const base::Clock& clock = base::RealClock::Get();
  int64_t next = start_nanos_ + interval_nanos_;
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    int64_t now = clock.NowNanos();
    if (now < next) {
      cv_.wait_for(lock, std::chrono::nanoseconds(next - now));
      continue;  // re-checks stopping_ and the time: wakeups may be spurious
    }
    lock.unlock();
    meter_.Tick(sample_(), clock.NowNanos());
    lock.lock();
    // A stall (a suspended process) skips the missed ticks instead of
    // printing them all at once.
    while (next <= now) next += interval_nanos_;
  }
}

void ProgressReporter::Stop() {
  if (stopped_) return;
  stopped_ = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  meter_.Finish(sample_(), base::RealClock::Get().NowNanos());
}

}  // namespace ferry::metrics
