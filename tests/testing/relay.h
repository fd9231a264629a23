#pragma once

// An in-process ferry: a config::v1::Config parsed from YAML text by the real
// loader, run by a server::Server with its worker threads. The destructor
// drains and waits, so a test never leaks a running server.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "pkg/net/address.h"
#include "pkg/proxy/stats.h"
#include "pkg/server/server.h"
#include "tests/testing/sockets.h"

namespace ferry::testing {

class Relay {
 public:
  // Parses `yaml` with config::ParseConfigText (an error lists every
  // diagnostic), creates a Server with `workers` workers (2 by default, so
  // SO_REUSEPORT is in play) and starts it. Unless the YAML sets
  // drain.timeout, it is 2s, so a failed test's teardown cannot wait 30s.
  static absl::StatusOr<std::unique_ptr<Relay>> Start(const std::string& yaml, int workers = 2);
  // With server options (options.workers is overridden by `workers`).
  static absl::StatusOr<std::unique_ptr<Relay>> Start(const std::string& yaml, int workers,
                                                      server::Server::Options options);
  ~Relay();

  server::Server& server() { return *server_; }
  // Applies `yaml` as a reload from the file source would (with the same
  // drain.timeout default as Start), and returns the server's verdict.
  absl::Status Reload(const std::string& yaml);
  // The bound address of `rule` (the real port when the config said 0).
  net::Address address(const std::string& rule = "main") const;
  server::RuleTotals totals(const std::string& rule = "main") const;
  server::LoopTotals loop_totals() const { return server_->LoopTotalsSum(); }
  uint64_t outcome(proxy::Outcome o, const std::string& rule = "main") const {
    return totals(rule).outcome(o);
  }
  // Waits until `rule` has counted at least `n` connections with outcome `o`.
  bool WaitOutcome(proxy::Outcome o, uint64_t n, Millis timeout = Millis(5000),
                   const std::string& rule = "main") const;
  // Waits until every connection of every rule has closed.
  bool WaitIdle(Millis timeout = Millis(5000)) const;
  // Connects to `rule`'s listener.
  Connected Connect(const std::string& rule = "main", int io_timeout_ms = kIoTimeoutMs) const;

 private:
  explicit Relay(std::unique_ptr<server::Server> server) : server_(std::move(server)) {}
  std::unique_ptr<server::Server> server_;
};

// A config with one rule, named "main", from `listen` to `targets`.
// `rule_fields` are more lines of that rule, each indented four spaces
// ("    idle_timeout: \"300ms\"\n"); `top_fields` are top-level lines
// ("drain: { delay: \"0s\" }\n").
std::string OneRuleYaml(const std::string& listen, const std::vector<std::string>& targets,
                        const std::string& rule_fields = "", const std::string& top_fields = "");

// "127.0.0.1:0" etc. for a listener of `family` ("ipv4", "ipv6", "unix";
// unix needs `dir`, where the socket file goes, and `name`).
std::string ListenLiteral(const std::string& family, const std::string& dir,
                          const std::string& name);

// All outcomes of `t` as "ok=1 error=0 ..." for failure messages.
std::string OutcomesString(const server::RuleTotals& t);

}  // namespace ferry::testing
