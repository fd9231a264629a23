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

absl::StatusOr<std::string> InsertBytes(const std::string& rule, const config::v1::Insert& insert) {
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
  if (bytes.size() > Rule::kMaxInsertBytes) {
    return absl::InvalidArgumentError(absl::StrCat("rule \"", rule, "\": insert of ", bytes.size(),
                                                   " bytes, more than the maximum of ",
                                                   Rule::kMaxInsertBytes));
  }
  return bytes;
}

bool SourceCounts::TryAdd(const net::Address& client, uint32_t limit) {
  std::string ip = client.HostString();
  std::lock_guard<std::mutex> lock(mu_);
  uint32_t& n = counts_[ip];
  if (n >= limit) {
    if (n == 0) counts_.erase(ip);
    return false;
  }
  ++n;
  return true;
}

void SourceCounts::Remove(const net::Address& client) {
  std::string ip = client.HostString();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = counts_.find(ip);
  if (it != counts_.end() && --it->second == 0) counts_.erase(it);
}

size_t SourceCounts::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counts_.size();
}

absl::StatusOr<std::shared_ptr<Rule>> BuildRule(const config::v1::Rule& in, AccessLogs* logs) {
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
  rule->max_connections_per_source = in.max_connections_per_source();
  rule->lazy_close = in.close() == config::v1::Rule::CLOSE_LAZY;
  rule->connection_rate = in.rate_limit().connection_bytes_per_second();
  if (uint64_t rate = in.rate_limit().rule_bytes_per_second(); rate > 0) {
    for (auto& bucket : rule->rule_rate) {
      bucket =
          std::make_shared<pump::SharedTokenBucket>(rate, pump::TokenBucket::DefaultBurst(rate));
    }
  }
  const config::v1::ProxyProtocol& pp = in.proxy_protocol();
  if (pp.send() == config::v1::ProxyProtocol::VERSION_V1) rule->proxy_send = ProxyVersion::kV1;
  if (pp.send() == config::v1::ProxyProtocol::VERSION_V2) rule->proxy_send = ProxyVersion::kV2;
  rule->proxy_accept = pp.accept();
  if (pp.has_timeout()) rule->proxy_timeout_nanos = DurationNanos(pp.timeout());
  for (const auto& c : pp.trusted()) {
    FERRY_ASSIGN_OR_RETURN(net::Cidr cidr, net::Cidr::Parse(c));
    rule->proxy_trusted.push_back(cidr);
  }
  rule->redirect = in.transparent() == config::v1::Rule::TRANSPARENT_REDIRECT;
  for (const auto& c : in.allow_targets()) {
    FERRY_ASSIGN_OR_RETURN(net::Cidr cidr, net::Cidr::Parse(c));
    rule->allow_targets.push_back(cidr);
  }
  if (logs != nullptr) {
    std::optional<AccessLogFormat> format = AccessLogFormatFromProto(in.access_log().format());
    if (format) {
      const std::string& path = in.access_log().path().empty() ? "stdout" : in.access_log().path();
      auto log = logs->Get(path, *format);
      if (!log.ok()) {
        return absl::Status(
            log.status().code(),
            absl::StrCat("rule \"", in.name(), "\": access_log: ", log.status().message()));
      }
      rule->access_log = std::move(*log);
    }
  }
  return rule;
}

void AttachCounters(Rule& rule, const Rule* previous, int workers) {
  rule.counters =
      previous != nullptr ? previous->counters : std::make_shared<RuleCounters>(workers);
  auto counters_for = [&](const std::string& key) {
    // A target listed twice resolves to one endpoint twice: one series.
    for (const auto* list : {&rule.endpoint_counters, &rule.redirect_counters}) {
      for (const auto& mine : *list) {
        if (mine->key == key) return mine;
      }
    }
    if (previous != nullptr) {
      for (const auto* list : {&previous->endpoint_counters, &previous->redirect_counters}) {
        for (const auto& old : *list) {
          if (old->key == key) return old;
        }
      }
    }
    return std::make_shared<EndpointCounters>(key, workers);
  };
  rule.endpoint_counters.clear();
  rule.redirect_counters.clear();
  for (const net::Address& address : rule.endpoints) {
    rule.endpoint_counters.push_back(counters_for(address.ToString()));
  }
  if (rule.redirect) {
    for (const net::Cidr& cidr : rule.allow_targets) {
      rule.redirect_counters.push_back(counters_for(cidr.ToString()));
    }
  }
}

}  // namespace ferry::proxy
