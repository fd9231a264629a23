#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "pkg/base/clock.h"
#include "pkg/net/address.h"
#include "pkg/net/cidr.h"
#include "pkg/net/socket.h"
#include "pkg/proxy/stats.h"
#include "proto/ferry/config/v1/config.pb.h"

namespace ferry::proxy {

// The counters of one rule name, one slot per worker (each worker is its
// slot's only writer). Every generation of the rule a reload builds shares
// them, so a counter never goes back and no series restarts at a reload. Lives
// as long as any generation or session of the rule.
struct RuleCounters {
  explicit RuleCounters(int workers) : workers(workers), per_worker(new RuleStats[workers]) {}
  const int workers;
  const std::unique_ptr<RuleStats[]> per_worker;
  // Connections open now on every worker; max_connections reads it. One
  // atomic RMW per accepted and per closed connection, nothing per byte.
  std::atomic<int64_t> active{0};
};

// The counters of one endpoint (by its key, IP:PORT) of one rule, one slot
// per worker; carried from generation to generation while the endpoint stays.
struct EndpointCounters {
  EndpointCounters(const net::Address& address, int workers)
      : address(address), per_worker(new EndpointStats[workers]) {}
  const net::Address address;
  const std::unique_ptr<EndpointStats[]> per_worker;
};

// Rule is the run-time form of one config rule (one generation of it): parsed
// addresses, resolved endpoints, and durations in nanoseconds with defaults
// applied. Built on the control thread for each config, then shared read-only
// by every worker and by each session it accepted (std::shared_ptr<const
// Rule>), so a reload changes what new connections get and never what a live
// one runs with. Its counters are shared between generations.
struct Rule {
  static constexpr int64_t kDefaultConnectTimeoutNanos = 5 * base::kNanosPerSecond;
  static constexpr int kDefaultConnectAttempts = 3;
  static constexpr int64_t kDefaultIdleTimeoutNanos = 15 * 60 * base::kNanosPerSecond;
  static constexpr int64_t kDefaultHalfCloseTimeoutNanos = 60 * base::kNanosPerSecond;

  std::string name;
  net::HostPort listen;
  std::vector<net::HostPort> targets;
  // Every address the targets resolve to, in order; connect attempts walk it.
  std::vector<net::Address> endpoints;
  net::Acl acl;
  int64_t connect_timeout_nanos = kDefaultConnectTimeoutNanos;
  int connect_attempts = kDefaultConnectAttempts;
  int64_t idle_timeout_nanos = kDefaultIdleTimeoutNanos;  // 0: never
  int64_t half_close_timeout_nanos = kDefaultHalfCloseTimeoutNanos;  // 0: never
  int64_t max_lifetime_nanos = 0;  // 0: unlimited
  uint32_t max_connections = 0;    // 0: unlimited
  net::KeepAlive keepalive;
  int64_t delay_nanos = 0;  // wait after accepting, before connecting
  std::string insert;       // written to the target before the client's bytes
  // Bound before connecting ($INADDR_DEFAULT); empty: the kernel chooses.
  std::vector<net::Address> source_addresses;

  // Set by AttachCounters before the rule is shared; never null after.
  std::shared_ptr<RuleCounters> counters;
  std::vector<std::shared_ptr<EndpointCounters>> endpoint_counters;  // one per endpoint

  // This worker's slots. `worker` < counters->workers.
  RuleStats& stats(int worker) const { return counters->per_worker[worker]; }
  EndpointStats& endpoint_stats(size_t endpoint, int worker) const {
    return endpoint_counters[endpoint]->per_worker[worker];
  }
};

// Builds a Rule from a validated config rule, resolving its targets (blocking
// DNS). Fails with Unavailable when a target does not resolve. The result has
// no counters yet: AttachCounters gives them.
absl::StatusOr<std::shared_ptr<Rule>> BuildRule(const config::v1::Rule& rule);

// Gives `rule` its counters: those of `previous` (the running generation of
// the same name, or null) and of its endpoints that stay, new ones (at 0) for
// the rest.
void AttachCounters(Rule& rule, const Rule* previous, int workers);

int64_t DurationNanos(const google::protobuf::Duration& d);

}  // namespace ferry::proxy
