#include "pkg/proxy/rule.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "pkg/base/status.h"
#include "pkg/pump/pools.h"

namespace ferry::proxy {

int64_t DurationNanos(const google::protobuf::Duration& d) {
  return d.seconds() * base::kNanosPerSecond + d.nanos();
}

absl::StatusOr<std::string> InsertBytes(const std::string& rule,
                                        const config::v1::Insert& insert) {
  std::string bytes;
  switch (insert.source_case()) {
    case config::v1::Insert::kText:
      bytes = insert.text();
      break;
    case config::v1::Insert::kBase64:
      if (!absl::Base64Unescape(insert.base64(), &bytes)) {
        return absl::InvalidArgumentError(absl::StrCat("rule \"", rule, "\": insert: bad base64"));
      }
      break;
    case config::v1::Insert::kFile: {
      std::ifstream file(insert.file(), std::ios::binary);
      if (!file) {
        return absl::FailedPreconditionError(absl::StrCat(
            "rule \"", rule, "\": insert file \"", insert.file(), "\": ", std::strerror(errno)));
      }
      bytes.assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
      break;
    }
    case config::v1::Insert::SOURCE_NOT_SET:
      break;
  }
  if (bytes.size() > pump::BufferPool::kSize) {
    return absl::InvalidArgumentError(absl::StrCat("rule \"", rule, "\": insert of ", bytes.size(),
                                                   " bytes, more than the maximum of ",
                                                   pump::BufferPool::kSize));
  }
  return bytes;
}

absl::StatusOr<std::shared_ptr<Rule>> BuildRule(const config::v1::Rule& in) {
  auto rule = std::make_shared<Rule>();
  rule->name = in.name();
  FERRY_ASSIGN_OR_RETURN(rule->listen, net::ParseHostPort(in.listen()));
  for (const auto& target : in.targets()) {
    FERRY_ASSIGN_OR_RETURN(net::HostPort hp, net::ParseHostPort(target.address()));
    auto addresses = net::Resolve(hp);
    if (!addresses.ok()) {
      return absl::UnavailableError(
          absl::StrCat("rule \"", in.name(), "\": ", addresses.status().message()));
    }
    for (const net::Address& a : *addresses) rule->endpoints.push_back(a);
    rule->targets.push_back(std::move(hp));
  }
  std::vector<net::Cidr> allow, deny;
  for (const auto& c : in.allow()) {
    FERRY_ASSIGN_OR_RETURN(net::Cidr cidr, net::Cidr::Parse(c));
    allow.push_back(cidr);
  }
  for (const auto& c : in.deny()) {
    FERRY_ASSIGN_OR_RETURN(net::Cidr cidr, net::Cidr::Parse(c));
    deny.push_back(cidr);
  }
  rule->acl = net::Acl(std::move(allow), std::move(deny));
  if (in.has_connect_timeout()) rule->connect_timeout_nanos = DurationNanos(in.connect_timeout());
  if (in.connect_attempts() > 0) rule->connect_attempts = static_cast<int>(in.connect_attempts());
  if (in.has_idle_timeout()) rule->idle_timeout_nanos = DurationNanos(in.idle_timeout());
  if (in.has_half_close_timeout()) {
    rule->half_close_timeout_nanos = DurationNanos(in.half_close_timeout());
  }
  if (in.has_max_lifetime()) rule->max_lifetime_nanos = DurationNanos(in.max_lifetime());
  rule->max_connections = in.max_connections();
  if (in.has_keepalive()) {
    rule->keepalive.idle_seconds = static_cast<int>(in.keepalive().idle().seconds());
    rule->keepalive.interval_seconds = static_cast<int>(in.keepalive().interval().seconds());
    rule->keepalive.count = static_cast<int>(in.keepalive().count());
  }
  if (in.has_delay()) rule->delay_nanos = DurationNanos(in.delay());
  if (in.has_insert()) {
    FERRY_ASSIGN_OR_RETURN(rule->insert, InsertBytes(in.name(), in.insert()));
  }
  FERRY_ASSIGN_OR_RETURN(rule->source_addresses, net::DefaultSourceAddress());
  return rule;
}

void AttachCounters(Rule& rule, const Rule* previous, int workers) {
  rule.counters = previous != nullptr ? previous->counters : std::make_shared<RuleCounters>(workers);
  rule.endpoint_counters.clear();
  for (const net::Address& address : rule.endpoints) {
    std::shared_ptr<EndpointCounters> counters;
    if (previous != nullptr) {
      for (const auto& old : previous->endpoint_counters) {
        if (old->address == address) counters = old;
      }
    }
    // A target listed twice resolves to one endpoint twice: one series.
    for (const auto& mine : rule.endpoint_counters) {
      if (mine->address == address) counters = mine;
    }
    if (!counters) counters = std::make_shared<EndpointCounters>(address, workers);
    rule.endpoint_counters.push_back(std::move(counters));
  }
}

}  // namespace ferry::proxy
