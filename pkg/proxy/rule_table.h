#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "pkg/net/address.h"
#include "pkg/proxy/rule.h"
#include "proto/ferry/config/v1/config.pb.h"

namespace ferry::proxy {

// RuleTable is a config's rules as the server runs them: an immutable
// snapshot, swapped whole at each reload, that the scrape and status readers
// hold while they read (shared_ptr<const RuleTable>). Rules removed by a
// reload stay in it, marked draining, until their last connection ends, so
// their series disappear when they are really gone.
struct RuleTable {
  struct Entry {
    std::shared_ptr<const Rule> rule;
    std::string key;        // the listener's identity across reloads (ListenerKey)
    net::Address bound;     // the real address (the port when the config said 0)
    bool draining = false;  // removed from the config, connections left
  };
  config::v1::Config config;
  std::vector<Entry> entries;  // the config's rules in order, then the draining ones
  std::string source;          // "file", or empty (the command line)
  std::string version;         // the file's content hash

  // The entry of rule `name` (live or draining), or null.
  const Entry* Find(absl::string_view name) const;
};

// What a listener is known by across reloads: its canonical address, so
// "0.0.0.0:80" and ":80" are one listener. A port-0 listener is its rule's
// own: each bind of port 0 picks a new port.
absl::StatusOr<std::string> ListenerKey(const Rule& rule);

// What applying `next` (a config's entries, in order, keys set) does to the
// running table. Pure: no sockets.
struct ReloadPlan {
  // Per entry of `next`: the index of the running entry whose listener (and
  // bound address) it keeps, or -1 when it needs a new one.
  std::vector<int> keep;
  // Running entries that stay as draining: removed rules with connections
  // maybe left, and earlier draining ones not brought back by name.
  std::vector<size_t> draining;
};
ReloadPlan PlanReload(const RuleTable& running, const std::vector<RuleTable::Entry>& next);

// Connections of `rule` open now: the sum of its workers' gauges.
int64_t ActiveConnections(const Rule& rule);

// A rule's endpoint counters (and its redirect CIDRs'), each once: a target
// listed twice, or two names of one address, share theirs.
std::vector<const EndpointCounters*> UniqueEndpoints(const Rule& rule);

}  // namespace ferry::proxy
