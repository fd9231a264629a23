#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "pkg/event/loop.h"
#include "pkg/metrics/admin.h"
#include "pkg/metrics/families.h"
#include "pkg/net/address.h"
#include "pkg/proxy/rule.h"
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

// Server owns the workers and the control thread, and wires a config to
// them: it resolves the rules, binds every listener (so a bad address fails
// before anything runs), starts one Worker per configured thread, and drains
// on Drain(). Create/Start/Wait from one thread; Drain() and the stats
// readers from any thread.
class Server {
 public:
  struct Options {
    int workers = 0;  // 0: from the config, or the CPUs this process may use
    Worker::Options worker;
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
  // connection at once), and returns when done. BlockTerminationSignals()
  // must have run before Create(), or a thread started there could take a
  // signal and die of it.
  void RunUntilSignal();

  bool ready() const { return ready_.load(std::memory_order_relaxed); }
  int workers() const { return static_cast<int>(workers_.size()); }
  // The address each rule listens on (the real port when the config said 0).
  struct Bound {
    std::string rule;
    net::Address address;
  };
  const std::vector<Bound>& bound() const { return bound_; }
  absl::StatusOr<net::Address> BoundAddress(const std::string& rule) const;
  RuleTotals Totals(const std::string& rule) const;
  LoopTotals LoopTotalsSum() const;
  int64_t ActiveConnections() const;

  // Every ferry_* and process_* family, summed over the workers' counters.
  // Thread-safe: the admin server calls it from its own threads.
  void Collect(metrics::Families& out) const;
  // The /endpoints document: every rule, its listener and endpoints with
  // their counters, as JSON.
  std::string EndpointsJson() const;
  // The admin server's address (the real port), or empty when it is off.
  std::optional<net::Address> admin_address() const;

 private:
  Server() = default;
  void StartDrainOnControl();
  void CheckDrained();
  void FinishDrain(bool timed_out);

  absl::Status StartAdmin();

  config::v1::Config config_;
  std::unique_ptr<metrics::AdminServer> admin_;
  std::vector<std::shared_ptr<const proxy::Rule>> rules_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<Bound> bound_;
  std::vector<base::Fd> shared_fds_;     // unix listeners all workers borrow
  std::vector<std::string> unix_paths_;  // removed at exit
  event::Loop control_;
  std::thread control_thread_;
  std::unique_ptr<event::Timer> drain_timer_;
  int64_t drain_started_nanos_ = 0;
  int64_t drain_delay_nanos_ = 0;
  int64_t drain_timeout_nanos_ = 30 * base::kNanosPerSecond;
  bool accepting_stopped_ = false;
  std::atomic<bool> ready_{false};
  std::atomic<bool> draining_{false};
  bool started_ = false;
};

// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread, and so in every
// thread it starts afterwards (workers, the admin server's), leaving them to
// RunUntilSignal(). Call it before Server::Create.
void BlockTerminationSignals();

// The CPUs this process may use: its affinity mask, capped by the cgroup v2
// (or v1) CPU quota rounded up, at least 1.
int DefaultWorkerCount();

}  // namespace ferry::server
