#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "pkg/config/file_source.h"
#include "pkg/event/loop.h"
#include "pkg/metrics/admin.h"
#include "pkg/metrics/families.h"
#include "pkg/net/address.h"
#include "pkg/proxy/rule.h"
#include "pkg/proxy/rule_table.h"
#include "pkg/server/handoff.h"
#include "pkg/server/worker.h"
#include "proto/ferry/config/v1/config.pb.h"

namespace ferry::server {

// Sums of one rule's counters over every worker. Read from any thread.
struct RuleTotals {
  uint64_t connections[static_cast<int>(proxy::Outcome::kCount)] = {};
  uint64_t bytes_to_target = 0;
  uint64_t bytes_to_client = 0;
  int64_t active = 0;
  uint64_t outcome(proxy::Outcome o) const { return connections[static_cast<int>(o)]; }
};

struct LoopTotals {
  uint64_t accept_errors[static_cast<int>(metrics::AcceptError::kCount)] = {};
  uint64_t pump_bytes[static_cast<int>(metrics::PumpMode::kCount)] = {};
  int64_t buffered_bytes = 0;
  int64_t pipes_in_use = 0;
  int64_t buffers_in_use = 0;
};

using proxy::RuleTable;
struct Bind;

// Server owns the workers, the control thread and the config source, and
// wires a config to them: it resolves the rules, binds every listener (so a
// bad address fails before anything changes), runs one Worker per configured
// thread, applies new configs (Reload) and drains on Drain(). Create/Start/
// Wait from one thread; Reload, Drain and the readers from any thread.
class Server {
 public:
  struct Options {
    int workers = 0;  // 0: from the config, or the CPUs this process may use
    Worker::Options worker;
    // The config file `config` came from: watched, and re-read on SIGHUP.
    // Empty: the rules came from the command line and never change.
    std::string config_path;
    // ContentHash of the text `config` was parsed from (with config_path).
    std::string config_version;
    // admin.listen for a config without an admin section (`ferry run`'s
    // default), applied to the first config and to every reload.
    std::string default_admin;
    config::FileSource::Options file_source;
    // Listener handoff (pkg/server/handoff.h): take the listening sockets of
    // the ferry serving this unix socket, then serve ours there. Empty: none.
    std::string handoff_path;
  };

  static absl::StatusOr<std::unique_ptr<Server>> Create(const config::v1::Config& config,
                                                        const Options& options);
  ~Server();

  void Start();
  // Begins the drain of DESIGN.md: not ready now, keep accepting for
  // drain.delay, stop accepting, wait up to drain.timeout for connections to
  // end, close the rest. Thread-safe; idempotent.
  void Drain();
  // Blocks until a drain has finished and every worker has stopped.
  void Wait();
  // Starts, drains on SIGTERM or SIGINT (a second one closes every
  // connection at once), reloads the config file on SIGHUP, and returns when
  // done. BlockTerminationSignals() must have run before Create(), or a
  // thread started there could take a signal and die of it.
  void RunUntilSignal();

  // Applies a validated config without dropping a connection: a rule whose
  // listen address is unchanged keeps its sockets and applies its new
  // settings to new connections; a removed rule stops accepting and its
  // connections drain for up to drain.timeout; new rules start. admin, dns
  // and workers cannot change (InvalidArgument naming the field). On any
  // error nothing changes. Counted in ferry_config_reloads_total{source}.
  // Thread-safe (reloads run one at a time); returns once every worker runs
  // the new rules.
  absl::Status Reload(const config::v1::Config& config, absl::string_view source,
                      absl::string_view version);
  // Parses and validates `text` (YAML or JSON), then Reload()s it. A config
  // with errors is logged, every error with its path, and counted as a
  // failed reload; the running config stays.
  absl::Status ReloadText(absl::string_view text, absl::string_view source,
                          absl::string_view version);

  bool ready() const { return ready_.load(std::memory_order_relaxed); }
  int workers() const { return static_cast<int>(workers_.size()); }
  std::shared_ptr<const RuleTable> table() const;
  // The address `rule` listens on (the real port when the config said 0).
  absl::StatusOr<net::Address> BoundAddress(const std::string& rule) const;
  RuleTotals Totals(const std::string& rule) const;
  LoopTotals LoopTotalsSum() const;
  int64_t ActiveConnections() const;
  uint64_t reloads(absl::string_view result) const;
  // Reopens every access log file (SIGUSR1, after logrotate moved them).
  absl::Status ReopenLogs() { return access_logs_.ReopenAll(); }

  // Every ferry_* and process_* family, summed over the workers' counters.
  // Thread-safe: the admin server calls it from its own threads.
  void Collect(metrics::Families& out) const;
  // The /endpoints document: every rule, its listener and endpoints with
  // their counters, as JSON.
  std::string EndpointsJson() const;
  // The admin server's address (the real port), or empty when it is off.
  std::optional<net::Address> admin_address() const;

 private:
  struct UnixListener {
    base::Fd fd;  // every worker borrows it
    std::string path;
  };

  Server() = default;
  // The sockets of a new listener: the predecessor's for `key` when it
  // handed them over (and they fit), else bound now.
  absl::StatusOr<Bind> AcquireListener(const proxy::Rule& rule, const std::string& key,
                                       int workers);
  absl::Status Apply(config::v1::Config config, absl::string_view source,
                     absl::string_view version);
  void Publish(std::shared_ptr<const RuleTable> table);
  void SweepDrainingRules();
  void StartDrainOnControl();
  void CheckDrained();
  void FinishDrain(bool timed_out);

  absl::Status StartAdmin();

  Options options_;
  mutable std::mutex admin_mu_;  // guards admin_ (set late when retried)
  std::unique_ptr<metrics::AdminServer> admin_;
  // An admin address still held by the ferry this one took the listeners
  // from: retried on the control thread until it is free.
  struct AdminRetry {
    net::Address address;
    std::vector<metrics::AdminServer::Route> routes;
    std::unique_ptr<event::Timer> timer;
  };
  static constexpr int64_t kAdminRetryNanos = 200 * base::kNanosPerMilli;
  std::unique_ptr<AdminRetry> admin_retry_;
  bool took_over_ = false;  // listeners came from a predecessor (--handoff)
  // Sockets bound by Create(), listened to once nothing else can fail.
  std::vector<std::pair<int, net::Address>> deferred_listen_;
  void RetryAdmin();
  std::vector<std::unique_ptr<Worker>> workers_;
  mutable std::mutex table_mu_;             // guards table_ (the pointer, not the table)
  std::shared_ptr<const RuleTable> table_;  // never null after Create
  std::mutex reload_mu_;                    // one Apply at a time; guards unix_listeners_
  std::map<std::string, UnixListener> unix_listeners_;  // by key
  std::unique_ptr<config::FileSource> file_source_;     // on control_
  // Listener handoff. Guarded by reload_mu_: the sockets taken from the
  // predecessor and not used yet, and the raw fds of every live listener.
  std::map<std::string, std::vector<base::Fd>> inherited_;
  std::map<std::string, std::vector<int>> listener_fds_;
  std::unique_ptr<HandoffServer> handoff_;
  proxy::AccessLogs access_logs_;  // the rules' access logs, one per path
  std::atomic<uint64_t> reloads_ok_{0};
  std::atomic<uint64_t> reloads_failed_{0};
  std::atomic<int64_t> last_success_unix_nanos_{0};
  event::Loop control_;
  std::thread control_thread_;
  std::unique_ptr<event::Timer> drain_timer_;
  std::unique_ptr<event::Timer> sweep_timer_;  // drops drained rules from the table
  int64_t drain_started_nanos_ = 0;
  // Of the running config; Apply() writes them, the control thread reads.
  std::atomic<int64_t> drain_delay_nanos_{0};
  std::atomic<int64_t> drain_timeout_nanos_{30 * base::kNanosPerSecond};
  bool accepting_stopped_ = false;
  // Workers that ran StopAccepting() since the drain began: until all did,
  // a worker may still accept, and the active count says nothing yet.
  std::atomic<size_t> workers_stopped_{0};
  std::atomic<bool> ready_{false};
  std::atomic<bool> draining_{false};
  bool started_ = false;
};

// Blocks SIGTERM, SIGINT, SIGHUP and SIGUSR1 in the calling thread, and so in every
// thread it starts afterwards (workers, the admin server's), leaving them to
// RunUntilSignal(). Call it before Server::Create.
void BlockTerminationSignals();

// The CPUs this process may use: its affinity mask, capped by the cgroup v2
// (or v1) CPU quota rounded up, at least 1.
int DefaultWorkerCount();

}  // namespace ferry::server
