#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "prometheus/metric_family.h"

namespace ferry::metrics {

// Builds the metric families of one scrape. The exporter walks the loops'
// single-writer counters and adds one sample per label set; nothing here is
// on the data path.
class Families {
 public:
  using Labels = std::initializer_list<std::pair<const char*, std::string>>;

  // Starts a family; samples added next belong to it. A family with no
  // samples is still written (with its HELP and TYPE).
  void Counter(const char* name, const char* help);
  void Gauge(const char* name, const char* help);
  void Histogram(const char* name, const char* help);

  void Add(Labels labels, double value);
  // `buckets[i]` counts samples in (bounds[i-1], bounds[i]]; the last one is +Inf.
  void AddHistogram(Labels labels, const double* bounds, const uint64_t* buckets, int n,
                    double sum);

  std::vector<prometheus::MetricFamily>& families() { return families_; }
  // The text exposition format.
  std::string Serialize() const;

 private:
  void Start(const char* name, const char* help, prometheus::MetricType type);
  std::vector<prometheus::MetricFamily> families_;
};

// The standard process_* families (open and max fds, resident and virtual
// memory, CPU seconds, start time), read from /proc/self.
void AddProcessFamilies(Families& out);

}  // namespace ferry::metrics
