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
#include "proto/ferry/config/v1/config.pb.h"

namespace ferry::proxy {

// Rule is the run-time form of one config rule: parsed addresses, resolved
// endpoints, and durations in nanoseconds with defaults applied. Built once
// per config on the control thread and shared read-only by every worker
// (std::shared_ptr<const Rule>); the only mutable part is the rule-wide
// connection count that max_connections needs across workers.
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

  // Connections of this rule open now, on every worker. One atomic RMW per
  // accepted and per closed connection; nothing per byte.
  mutable std::atomic<int64_t> active{0};
};

// Builds a Rule from a validated config rule, resolving its targets (blocking
// DNS). Fails with Unavailable when a target does not resolve.
absl::StatusOr<std::shared_ptr<const Rule>> BuildRule(const config::v1::Rule& rule);

int64_t DurationNanos(const google::protobuf::Duration& d);

}  // namespace ferry::proxy
