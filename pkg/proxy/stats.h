#pragma once

#include "pkg/metrics/loop_stats.h"

namespace ferry::proxy {

// How a connection ended; exactly one per connection, counted when it closes.
enum class Outcome {
  kOk = 0,         // relayed, closed by a peer
  kTimeout,        // idle, half-close or lifetime timeout
  kDenied,         // ACL
  kLimit,          // max_connections
  kProxyProtocol,  // PROXY header missing, bad or untrusted
  kNoEndpoint,     // no endpoint resolved
  kConnectFailed,  // every attempt refused or timed out
  kError,          // anything else, e.g. a reset mid-stream
  kCount
};

const char* OutcomeName(Outcome outcome);

// One endpoint's counters in one rule on one loop; the loop is the only
// writer. A rule's byte totals are the sums over its endpoints.
struct EndpointStats {
  metrics::Counter bytes_to_target;
  metrics::Counter bytes_to_client;
  metrics::Gauge active;
};

// One rule's counters on one loop; the loop is the only writer. The exporter
// sums them over loops.
struct RuleStats {
  metrics::Counter connections[static_cast<int>(Outcome::kCount)];
  metrics::Gauge active;
  metrics::Gauge buffered;  // bytes read and not yet written, user space + pipes
  metrics::Histogram connect_duration;  // time to reach the target, per success

  uint64_t outcome(Outcome o) const { return connections[static_cast<int>(o)].value(); }
};

}  // namespace ferry::proxy
