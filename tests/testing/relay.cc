#include "tests/testing/relay.h"

#include <signal.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "pkg/config/file_source.h"
#include "pkg/config/loader.h"

namespace ferry::testing {

namespace {

// `yaml` parsed, with drain.timeout 2s unless it says otherwise, so a failed
// test's teardown cannot wait 30s.
absl::StatusOr<config::v1::Config> TestConfig(const std::string& yaml) {
  config::Loaded loaded = config::ParseConfigText(yaml);
  if (!loaded.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config:\n", config::Join(loaded.errors), "\n--- yaml:\n", yaml));
  }
  if (!loaded.config.drain().has_timeout()) {
    loaded.config.mutable_drain()->mutable_timeout()->set_seconds(2);
  }
  return loaded.config;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Relay>> Relay::Start(const std::string& yaml, int workers) {
  return Start(yaml, workers, server::Server::Options());
}

absl::StatusOr<std::unique_ptr<Relay>> Relay::Start(const std::string& yaml, int workers,
                                                    server::Server::Options options) {
  // splice() into a socket the peer reset raises SIGPIPE (it has no
  // MSG_NOSIGNAL); cmd/ferry ignores SIGPIPE in main, and so must we.
  ::signal(SIGPIPE, SIG_IGN);
  auto config = TestConfig(yaml);
  if (!config.ok()) return config.status();
  options.workers = workers;
  auto server = server::Server::Create(*config, options);
  if (!server.ok()) return server.status();
  (*server)->Start();
  return std::unique_ptr<Relay>(new Relay(std::move(*server)));
}

absl::Status Relay::Reload(const std::string& yaml) {
  auto config = TestConfig(yaml);
  if (!config.ok()) return config.status();
  return server_->Reload(*config, "file", config::ContentHash(yaml));
}

Relay::~Relay() {
  server_->Drain();
  server_->Wait();
}

net::Address Relay::address(const std::string& rule) const {
  auto a = server_->BoundAddress(rule);
  return a.ok() ? *a : net::Address();
}

server::RuleTotals Relay::totals(const std::string& rule) const { return server_->Totals(rule); }

bool Relay::WaitOutcome(proxy::Outcome o, uint64_t n, Millis timeout,
                        const std::string& rule) const {
  return WaitUntil([&] { return totals(rule).outcome(o) >= n; }, timeout);
}

bool Relay::WaitIdle(Millis timeout) const {
  return WaitUntil([&] { return server_->ActiveConnections() == 0; }, timeout);
}

Connected Relay::Connect(const std::string& rule, int io_timeout_ms) const {
  return testing::Connect(address(rule), 5000, io_timeout_ms);
}

std::string OneRuleYaml(const std::string& listen, const std::vector<std::string>& targets,
                        const std::string& rule_fields, const std::string& top_fields) {
  std::string quoted;
  for (const std::string& t : targets)
    absl::StrAppend(&quoted, quoted.empty() ? "" : ", ", "\"", t, "\"");
  // The admin endpoint on a port of its own, unless the caller chose one:
  // `ferry run` would otherwise take 127.0.0.1:9901, shared by every test.
  std::string admin =
      absl::StrContains(top_fields, "admin:") ? "" : "admin: { listen: \"127.0.0.1:0\" }\n";
  return absl::StrCat(admin, top_fields, "rules:\n  - name: main\n    listen: \"", listen,
                      "\"\n    targets: [", quoted, "]\n", rule_fields);
}

std::string ListenLiteral(const std::string& family, const std::string& dir,
                          const std::string& name) {
  if (family == "ipv6") return "[::1]:0";
  if (family == "unix") return absl::StrCat("unix:", dir, "/", name, ".sock");
  return "127.0.0.1:0";
}

std::string OutcomesString(const server::RuleTotals& t) {
  std::string out;
  for (int i = 0; i < static_cast<int>(proxy::Outcome::kCount); ++i) {
    absl::StrAppend(&out, i == 0 ? "" : " ", proxy::OutcomeName(static_cast<proxy::Outcome>(i)),
                    "=", t.connections[i]);
  }
  absl::StrAppend(&out, " active=", t.active, " to_target=", t.bytes_to_target,
                  " to_client=", t.bytes_to_client);
  return out;
}

}  // namespace ferry::testing
