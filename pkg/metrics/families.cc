#include "pkg/metrics/families.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "prometheus/text_serializer.h"

namespace ferry::metrics {

void Families::Start(const char* name, const char* help, prometheus::MetricType type) {
  prometheus::MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  families_.push_back(std::move(family));
}

void Families::Counter(const char* name, const char* help) {
  Start(name, help, prometheus::MetricType::Counter);
}
void Families::Gauge(const char* name, const char* help) {
  Start(name, help, prometheus::MetricType::Gauge);
}
void Families::Histogram(const char* name, const char* help) {
  Start(name, help, prometheus::MetricType::Histogram);
}

void Families::Add(Labels labels, double value) {
  prometheus::ClientMetric m;
  for (const auto& [k, v] : labels) m.label.push_back({k, v});
  if (families_.back().type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  families_.back().metric.push_back(std::move(m));
}

void Families::AddHistogram(Labels labels, const double* bounds, const uint64_t* buckets, int n,
                            double sum) {
  prometheus::ClientMetric m;
  for (const auto& [k, v] : labels) m.label.push_back({k, v});
  uint64_t cumulative = 0;
  for (int i = 0; i < n; ++i) {
    cumulative += buckets[i];
    m.histogram.bucket.push_back({cumulative, bounds[i]});
  }
  cumulative += buckets[n];
  m.histogram.bucket.push_back({cumulative, std::numeric_limits<double>::infinity()});
  m.histogram.sample_count = cumulative;
  m.histogram.sample_sum = sum;
  families_.back().metric.push_back(std::move(m));
}

std::string Families::Serialize() const {
  return prometheus::TextSerializer().Serialize(families_);
}

namespace {

double OpenFds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  int n = 0;
  while (dirent* e = ::readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(dir);
  return n - 1;  // the directory's own fd
}

double BootTimeSeconds() {
  std::ifstream stat("/proc/stat");
  std::string line;
  while (std::getline(stat, line)) {
    if (line.rfind("btime ", 0) == 0) {
      double t = 0;
      if (absl::SimpleAtod(line.substr(6), &t)) return t;
    }
  }
  return 0;
}

}  // namespace

void AddProcessFamilies(Families& out) {
  // /proc/self/stat: fields after the command name, which is in parentheses.
  std::ifstream in("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> f;
  if (size_t close = stat.rfind(')'); close != std::string::npos) {
    f = absl::StrSplit(stat.substr(close + 2), ' ');
  }
  auto field = [&](size_t stat_index) {  // 1-based index of proc(5)
    double v = 0;
    if (stat_index >= 3 && stat_index - 3 < f.size()) absl::SimpleAtod(f[stat_index - 3], &v);
    return v;
  };
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  rlimit nofile{};
  ::getrlimit(RLIMIT_NOFILE, &nofile);

  out.Counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.");
  out.Add({}, (field(14) + field(15)) / ticks);
  out.Gauge("process_open_fds", "Number of open file descriptors.");
  out.Add({}, OpenFds());
  out.Gauge("process_max_fds", "Maximum number of open file descriptors.");
  out.Add({}, static_cast<double>(nofile.rlim_cur));
  out.Gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.");
  out.Add({}, field(23));
  out.Gauge("process_resident_memory_bytes", "Resident memory size in bytes.");
  out.Add({}, field(24) * page);
  out.Gauge("process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.");
  out.Add({}, BootTimeSeconds() + field(22) / ticks);
}

}  // namespace ferry::metrics
