// The server's observability: metric families summed over the workers'
// single-writer counters at scrape time, the /endpoints document, and the
// admin server's routes.

#include "absl/strings/str_cat.h"
#include "cmd/ferry/version.h"
#include "google/protobuf/util/json_util.h"
#include "pkg/base/log.h"
#include "pkg/base/status.h"
#include "pkg/metrics/status_page.h"
#include "pkg/server/server.h"

namespace ferry::server {
namespace {

using proxy::Outcome;

std::string JsonString(absl::string_view s) {
  std::string out;
  base::AppendJsonString(&out, s);
  return out;
}

// One rule's counters summed over workers, endpoint by endpoint.
struct RuleSum {
  const RuleTable::Entry* entry = nullptr;
  uint64_t outcomes[static_cast<int>(Outcome::kCount)] = {};
  int64_t active = 0;
  int64_t buffered = 0;
  uint64_t buckets[metrics::Histogram::kBuckets + 1] = {};
  uint64_t connect_nanos = 0;
  struct Endpoint {
    std::string key;
    uint64_t to_target = 0;
    uint64_t to_client = 0;
    int64_t active = 0;
  };
  std::vector<Endpoint> endpoints;
  const std::string& name() const { return entry->rule->name; }
};

std::vector<RuleSum> SumRules(const RuleTable& table) {
  std::vector<RuleSum> sums(table.entries.size());
  for (size_t r = 0; r < table.entries.size(); ++r) {
    RuleSum& sum = sums[r];
    sum.entry = &table.entries[r];
    const proxy::Rule& rule = *sum.entry->rule;
    for (int w = 0; w < rule.counters->workers; ++w) {
      const proxy::RuleStats& s = rule.stats(w);
      for (int o = 0; o < static_cast<int>(Outcome::kCount); ++o) {
        sum.outcomes[o] += s.connections[o].value();
      }
      sum.active += s.active.value();
      sum.buffered += s.buffered.value();
      for (int b = 0; b <= metrics::Histogram::kBuckets; ++b) {
        sum.buckets[b] += s.connect_duration.bucket(b);
      }
      sum.connect_nanos += s.connect_duration.sum_nanos();
    }
    for (const proxy::EndpointCounters* c : proxy::UniqueEndpoints(rule)) {
      RuleSum::Endpoint ep;
      ep.key = c->key;
      for (int w = 0; w < rule.counters->workers; ++w) {
        ep.to_target += c->per_worker[w].bytes_to_target.value();
        ep.to_client += c->per_worker[w].bytes_to_client.value();
        ep.active += c->per_worker[w].active.value();
      }
      sum.endpoints.push_back(std::move(ep));
    }
  }
  return sums;
}

}  // namespace

void Server::Collect(metrics::Families& out) const {
  std::shared_ptr<const RuleTable> running = table();
  std::vector<RuleSum> sums = SumRules(*running);

  out.Counter("ferry_bytes_total", "Bytes relayed, by rule, endpoint and direction.");
  for (const RuleSum& r : sums) {
    for (const RuleSum::Endpoint& e : r.endpoints) {
      out.Add({{"rule", r.name()}, {"endpoint", e.key}, {"direction", "to_target"}},
              static_cast<double>(e.to_target));
      out.Add({{"rule", r.name()}, {"endpoint", e.key}, {"direction", "to_client"}},
              static_cast<double>(e.to_client));
    }
  }
  out.Counter("ferry_connections_total", "Connections, by rule and how they ended.");
  for (const RuleSum& r : sums) {
    for (int o = 0; o < static_cast<int>(Outcome::kCount); ++o) {
      out.Add({{"rule", r.name()}, {"outcome", proxy::OutcomeName(static_cast<Outcome>(o))}},
              static_cast<double>(r.outcomes[o]));
    }
  }
  out.Gauge("ferry_connections_active", "Connections open now.");
  for (const RuleSum& r : sums) out.Add({{"rule", r.name()}}, static_cast<double>(r.active));
  out.Gauge("ferry_buffered_bytes", "Bytes read and not yet written (user space and pipes).");
  for (const RuleSum& r : sums) out.Add({{"rule", r.name()}}, static_cast<double>(r.buffered));
  out.Histogram("ferry_connect_duration_seconds", "Time to reach the target.");
  for (const RuleSum& r : sums) {
    out.AddHistogram({{"rule", r.name()}}, metrics::Histogram::kBoundsSeconds, r.buckets,
                     metrics::Histogram::kBuckets, static_cast<double>(r.connect_nanos) / 1e9);
  }

  LoopTotals loops = LoopTotalsSum();
  out.Counter("ferry_accept_errors_total", "accept() failures, by reason.");
  const char* reasons[] = {"emfile", "enfile", "enomem", "other"};
  for (int i = 0; i < static_cast<int>(metrics::AcceptError::kCount); ++i) {
    out.Add({{"reason", reasons[i]}}, static_cast<double>(loops.accept_errors[i]));
  }
  out.Counter("ferry_pump_bytes_total", "Bytes moved, by mode: copy (recv/send) or splice.");
  out.Add({{"mode", "copy"}}, static_cast<double>(loops.pump_bytes[0]));
  out.Add({{"mode", "splice"}}, static_cast<double>(loops.pump_bytes[1]));
  if (!running->source.empty()) {
    out.Counter("ferry_config_reloads_total", "Config reloads, by source and result.");
    out.Add({{"source", running->source}, {"result", "success"}},
            static_cast<double>(reloads_ok_.load(std::memory_order_relaxed)));
    out.Add({{"source", running->source}, {"result", "failure"}},
            static_cast<double>(reloads_failed_.load(std::memory_order_relaxed)));
    out.Gauge("ferry_config_version_info", "The running config's version (the file's hash).");
    out.Add({{"source", running->source}, {"version", running->version}}, 1);
  }
  out.Gauge("ferry_config_last_success_timestamp_seconds",
            "When the running config was applied (start or reload), in Unix seconds.");
  out.Add({}, static_cast<double>(last_success_unix_nanos_.load(std::memory_order_relaxed)) / 1e9);
  out.Gauge("ferry_build_info", "ferry's version and source revision.");
  out.Add({{"version", FERRY_VERSION}, {"revision", FERRY_REVISION}}, 1);
  metrics::AddProcessFamilies(out);
}

// Endpoints carry no "up" field until health checking exists: a page or
// client must not be told an endpoint is healthy when nobody checked.
std::string Server::EndpointsJson() const {
  std::shared_ptr<const RuleTable> running = table();
  std::vector<RuleSum> sums = SumRules(*running);
  std::string out = "{\"ready\":";
  absl::StrAppend(&out, ready() ? "true" : "false", ",\"rules\":[");
  for (size_t r = 0; r < sums.size(); ++r) {
    const RuleSum& sum = sums[r];
    absl::StrAppend(&out, r ? "," : "", "{\"name\":", JsonString(sum.name()),
                    ",\"listen\":", JsonString(sum.entry->bound.ToString()),
                    ",\"draining\":", sum.entry->draining ? "true" : "false",
                    ",\"active\":", sum.active, ",\"buffered_bytes\":", sum.buffered,
                    ",\"connections\":{");
    for (int o = 0; o < static_cast<int>(Outcome::kCount); ++o) {
      absl::StrAppend(&out, o ? "," : "", "\"", proxy::OutcomeName(static_cast<Outcome>(o)),
                      "\":", sum.outcomes[o]);
    }
    absl::StrAppend(&out, "},\"endpoints\":[");
    for (size_t e = 0; e < sum.endpoints.size(); ++e) {
      const RuleSum::Endpoint& ep = sum.endpoints[e];
      absl::StrAppend(&out, e ? "," : "", "{\"address\":", JsonString(ep.key),
                      ",\"active\":", ep.active, ",\"bytes_to_target\":", ep.to_target,
                      ",\"bytes_to_client\":", ep.to_client, "}");
    }
    absl::StrAppend(&out, "]}");
  }
  absl::StrAppend(&out, "],\"config\":{\"source\":", JsonString(running->source),
                  ",\"version\":", JsonString(running->version), "}}\n");
  return out;
}

std::optional<net::Address> Server::admin_address() const {
  std::lock_guard<std::mutex> lock(admin_mu_);
  if (!admin_) return std::nullopt;
  return admin_->address();
}

absl::Status Server::StartAdmin() {
  const config::v1::Admin admin = table()->config.admin();
  if (admin.listen().empty()) return absl::OkStatus();
  FERRY_ASSIGN_OR_RETURN(net::HostPort hp, net::ParseHostPort(admin.listen()));
  FERRY_ASSIGN_OR_RETURN(net::Address address, net::ListenAddress(hp));
  std::vector<metrics::AdminServer::Route> routes;
  routes.push_back({"/metrics", [this] {
                      metrics::Families families;
                      Collect(families);
                      return metrics::HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8",
                                                   families.Serialize()};
                    }});
  routes.push_back(
      {"/", [] {
         return metrics::HttpResponse{200, "text/html; charset=utf-8", metrics::StatusPageHtml()};
       }});
  routes.push_back({"/healthz", [] { return metrics::HttpResponse{200, "text/plain", "ok\n"}; }});
  routes.push_back({"/readyz", [this] {
                      return ready() ? metrics::HttpResponse{200, "text/plain", "ready\n"}
                                     : metrics::HttpResponse{503, "text/plain", "not ready\n"};
                    }});
  routes.push_back({"/endpoints", [this] {
                      return metrics::HttpResponse{200, "application/json", EndpointsJson()};
                    }});
  if (admin.expose_config()) {
    // The running config as JSON. No field this build implements holds a
    // secret (token files are paths, not tokens).
    routes.push_back({"/config", [this] {
                        std::string json;
                        google::protobuf::util::JsonPrintOptions options;
                        options.add_whitespace = true;
                        options.preserve_proto_field_names = true;
                        (void)google::protobuf::util::MessageToJsonString(table()->config, &json,
                                                                          options);
                        return metrics::HttpResponse{200, "application/json", json};
                      }});
  }
  auto started = metrics::AdminServer::Start(address, routes);
  if (!started.ok()) {
    if (!took_over_) return started.status();
    // The ferry being replaced holds the admin address until it exits: this
    // one serves it from then on (RetryAdmin, on the control thread).
    FERRY_LOG(kWarn, "admin address held by the ferry being replaced: retrying until it is free",
              {{"address", address.ToString()}, {"error", started.status().message()}});
    admin_retry_ = std::make_unique<AdminRetry>(AdminRetry{address, std::move(routes), nullptr});
    return absl::OkStatus();
  }
  std::lock_guard<std::mutex> lock(admin_mu_);
  admin_ = std::move(*started);
  FERRY_LOG(kInfo, "admin listening", {{"address", admin_->address().ToString()}});
  return absl::OkStatus();
}

void Server::RetryAdmin() {
  if (draining_.load()) return;
  auto started = metrics::AdminServer::Start(admin_retry_->address, admin_retry_->routes);
  if (!started.ok()) {
    admin_retry_->timer->ArmAfter(kAdminRetryNanos);
    return;
  }
  std::lock_guard<std::mutex> lock(admin_mu_);
  admin_ = std::move(*started);
  FERRY_LOG(kInfo, "admin listening", {{"address", admin_->address().ToString()}});
}

}  // namespace ferry::server
