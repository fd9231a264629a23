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

// One rule's counters on one loop; the loop is the only writer. The exporter
// sums them over loops.
struct RuleStats {
  metrics::Counter connections[static_cast<int>(Outcome::kCount)];
  metrics::Counter bytes_to_target;
  metrics::Counter bytes_to_client;
  metrics::Gauge active;
  metrics::Counter connect_attempts_failed;
  metrics::Counter connect_nanos;  // sum of successful connect times
  metrics::Counter connects;       // successful connects

  uint64_t outcome(Outcome o) const { return connections[static_cast<int>(o)].value(); }
};

}  // namespace ferry::proxy
