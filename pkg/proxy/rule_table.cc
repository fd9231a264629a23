#include "pkg/proxy/rule_table.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "pkg/base/status.h"

namespace ferry::proxy {

const RuleTable::Entry* RuleTable::Find(absl::string_view name) const {
  for (const Entry& e : entries) {
    if (e.rule->name == name) return &e;
  }
  return nullptr;
}

absl::StatusOr<std::string> ListenerKey(const Rule& rule) {
  FERRY_ASSIGN_OR_RETURN(net::Address address, net::ListenAddress(rule.listen));
  if (!address.is_unix() && address.port() == 0) {
    return absl::StrCat(address.ToString(), " of ", rule.name);
  }
  return address.ToString();
}

ReloadPlan PlanReload(const RuleTable& running, const std::vector<RuleTable::Entry>& next) {
  ReloadPlan plan;
  for (const RuleTable::Entry& e : next) {
    int kept = -1;
    for (size_t i = 0; i < running.entries.size(); ++i) {
      const RuleTable::Entry& old = running.entries[i];
      // A draining listener has stopped accepting for good.
      if (!old.draining && old.key == e.key) kept = static_cast<int>(i);
    }
    plan.keep.push_back(kept);
  }
  for (size_t i = 0; i < running.entries.size(); ++i) {
    const std::string& name = running.entries[i].rule->name;
    bool stays = std::any_of(next.begin(), next.end(),
                             [&](const RuleTable::Entry& e) { return e.rule->name == name; });
    if (!stays) plan.draining.push_back(i);
  }
  return plan;
}

int64_t ActiveConnections(const Rule& rule) {
  int64_t n = 0;
  for (int w = 0; w < rule.counters->workers; ++w) n += rule.stats(w).active.value();
  return n;
}

std::vector<const EndpointCounters*> UniqueEndpoints(const Rule& rule) {
  std::vector<const EndpointCounters*> out;
  for (const auto* list : {&rule.endpoint_counters, &rule.redirect_counters}) {
    for (const auto& c : *list) {
      if (std::find(out.begin(), out.end(), c.get()) == out.end()) out.push_back(c.get());
    }
  }
  return out;
}

}  // namespace ferry::proxy
