#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "pkg/base/clock.h"
#include "pkg/net/address.h"
#include "pkg/net/cidr.h"
#include "pkg/net/socket.h"
#include "pkg/proxy/access_log.h"
#include "pkg/proxy/proxy_protocol.h"
#include "pkg/proxy/stats.h"
#include "pkg/pump/token_bucket.h"
#include "proto/ferry/config/v1/config.pb.h"

namespace ferry::proxy {

// Connections open now per client IP (the port ignored), shared by the
// workers. Thread-safe.
class SourceCounts {
 public:
  // Counts one more connection from `client` unless it has `limit` already.
  bool TryAdd(const net::Address& client, uint32_t limit);
  void Remove(const net::Address& client);
  size_t size() const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, uint32_t> counts_;  // by HostString(); guarded by mu_
};

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
  // Connections open now per client IP, for max_connections_per_source: a
  // lock per accepted and per closed connection of a rule that sets it.
  SourceCounts sources;
};

// The counters of one endpoint (by its key, IP:PORT) of one rule, one slot
// per worker; carried from generation to generation while the endpoint stays.
struct EndpointCounters {
  EndpointCounters(std::string key, int workers)
      : key(std::move(key)), per_worker(new EndpointStats[workers]) {}
  // IP:PORT, [IPv6]:PORT or unix:/path; with transparent: redirect, the
  // allow_targets CIDR a destination fell in (labels stay bounded by the config).
  const std::string key;
  const std::unique_ptr<EndpointStats[]> per_worker;
};

// Rule is the run-time form of one config rule (one generation of it): parsed
// addresses, resolved endpoints, and durations in nanoseconds with defaults
// applied. Built on the control thread for each config, then shared read-only
// by every worker and by each session it accepted (std::shared_ptr<const
// Rule>), so a reload changes what new connections get and never what a live
// one runs with. Its counters are shared between generations.
struct Rule {
  // What an insert may hold: one copy buffer less room for a PROXY header.
  static constexpr size_t kMaxInsertBytes = 64 * 1024 - 256;
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
  int64_t idle_timeout_nanos = kDefaultIdleTimeoutNanos;             // 0: never
  int64_t half_close_timeout_nanos = kDefaultHalfCloseTimeoutNanos;  // 0: never
  int64_t max_lifetime_nanos = 0;                                    // 0: unlimited
  uint32_t max_connections = 0;                                      // 0: unlimited
  net::KeepAlive keepalive;
  int64_t delay_nanos = 0;  // wait after accepting, before connecting
  std::string insert;       // written to the target before the client's bytes
  // Bound before connecting ($INADDR_DEFAULT); empty: the kernel chooses.
  std::vector<net::Address> source_addresses;
  uint32_t max_connections_per_source = 0;  // 0: unlimited
  bool lazy_close = false;                  // close: lazy: a FIN is not passed on
  // rate_limit: per connection (each direction), and shared by the rule's
  // connections (one bucket per direction: [0] to the target, [1] to the client).
  uint64_t connection_rate = 0;  // bytes per second; 0: unlimited
  std::shared_ptr<pump::SharedTokenBucket> rule_rate[2];
  // PROXY protocol.
  std::optional<ProxyVersion> proxy_send;
  bool proxy_accept = false;
  std::vector<net::Cidr> proxy_trusted;  // peers whose header is believed; empty: none
  int64_t proxy_timeout_nanos = 3 * base::kNanosPerSecond;
  // transparent: redirect: the target is the connection's original
  // destination, when it is one of `endpoints` or in `allow_targets`.
  bool redirect = false;
  std::vector<net::Cidr> allow_targets;
  std::shared_ptr<AccessLog> access_log;  // null: none

  // Set by AttachCounters before the rule is shared; never null after.
  std::shared_ptr<RuleCounters> counters;
  std::vector<std::shared_ptr<EndpointCounters>> endpoint_counters;  // one per endpoint
  // With redirect: one per allow_targets CIDR, in order.
  std::vector<std::shared_ptr<EndpointCounters>> redirect_counters;

  // This worker's slots. `worker` < counters->workers.
  RuleStats& stats(int worker) const { return counters->per_worker[worker]; }
  EndpointStats& endpoint_stats(size_t endpoint, int worker) const {
    return endpoint_counters[endpoint]->per_worker[worker];
  }
};

// Builds a Rule from a validated config rule, resolving its targets (blocking
// DNS) and opening its access log through `logs` (may be null: no access
// log). Fails with Unavailable when a target does not resolve. The result
// has no counters yet: AttachCounters gives them.
absl::StatusOr<std::shared_ptr<Rule>> BuildRule(const config::v1::Rule& rule,
                                                AccessLogs* logs = nullptr);

// Gives `rule` its counters: those of `previous` (the running generation of
// the same name, or null) and of its endpoints that stay, new ones (at 0) for
// the rest.
void AttachCounters(Rule& rule, const Rule* previous, int workers);

int64_t DurationNanos(const google::protobuf::Duration& d);

}  // namespace ferry::proxy
