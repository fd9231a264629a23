#include "pkg/server/server.h"

#include <sched.h>
#include <sys/socket.h>
#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "pkg/base/log.h"
#include "pkg/base/status.h"
#include "pkg/net/socket.h"

namespace ferry::server {
namespace {

constexpr int kBacklog = 4096;
constexpr int64_t kDrainPollNanos = 50 * base::kNanosPerMilli;

// ceil(quota / period) from cgroup files, or 0 when there is no quota.
int CgroupCpuLimit() {
  std::ifstream v2("/sys/fs/cgroup/cpu.max");
  std::string quota, period;
  if (v2 >> quota >> period) {
    double q, p;
    if (quota != "max" && absl::SimpleAtod(quota, &q) && absl::SimpleAtod(period, &p) && p > 0) {
      return static_cast<int>(std::ceil(q / p));
    }
    return 0;
  }
  std::ifstream q1("/sys/fs/cgroup/cpu/cpu.cfs_quota_us");
  std::ifstream p1("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
  double q, p;
  if (q1 >> q && p1 >> p && q > 0 && p > 0) return static_cast<int>(std::ceil(q / p));
  return 0;
}

}  // namespace

int DefaultWorkerCount() {
  cpu_set_t set;
  int cpus = 1;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cpus = CPU_COUNT(&set);
  int limit = CgroupCpuLimit();
  if (limit > 0 && limit < cpus) cpus = limit;
  return std::max(cpus, 1);
}

absl::StatusOr<std::unique_ptr<Server>> Server::Create(const config::v1::Config& config,
                                                       const Options& options) {
  std::unique_ptr<Server> server(new Server());
  server->config_ = config;
  int n = options.workers > 0 ? options.workers
          : config.workers() > 0 ? static_cast<int>(config.workers())
                                 : DefaultWorkerCount();
  if (config.drain().has_delay()) server->drain_delay_nanos_ = proxy::DurationNanos(config.drain().delay());
  if (config.drain().has_timeout()) {
    server->drain_timeout_nanos_ = proxy::DurationNanos(config.drain().timeout());
  }
  for (const auto& rule_config : config.rules()) {
    FERRY_ASSIGN_OR_RETURN(auto rule, proxy::BuildRule(rule_config));
    server->rules_.push_back(std::move(rule));
  }
  for (int i = 0; i < n; ++i) {
    server->workers_.push_back(std::make_unique<Worker>(i, options.worker));
  }
  // Bind everything before any thread starts, so a taken port fails the start.
  for (const auto& rule : server->rules_) {
    FERRY_ASSIGN_OR_RETURN(net::Address address, net::ListenAddress(rule->listen));
    if (address.is_unix()) {
      FERRY_ASSIGN_OR_RETURN(base::Fd fd, net::ListenSocket(address, false, kBacklog));
      for (auto& worker : server->workers_) {
        if (int err = worker->AddRule(rule, fd.get(), base::Fd(), /*shared=*/true); err != 0) {
          return absl::InternalError(absl::StrCat("epoll: ", std::strerror(err)));
        }
      }
      server->unix_paths_.push_back(address.unix_path());
      server->shared_fds_.push_back(std::move(fd));
    } else {
      // SO_REUSEPORT also lets a second ferry of the same user bind beside
      // this one: that is how a binary upgrade refuses no connection (the
      // old one drains on SIGTERM). A program without SO_REUSEPORT on the
      // port still makes the bind fail.
      for (auto& worker : server->workers_) {
        FERRY_ASSIGN_OR_RETURN(base::Fd fd, net::ListenSocket(address, true, kBacklog));
        if (address.port() == 0) {
          // Port 0: the first bind picks the port; every other worker reuses it.
          FERRY_ASSIGN_OR_RETURN(net::Address local, net::LocalAddress(fd.get()));
          address.set_port(local.port());
        }
        int raw = fd.get();
        if (int err = worker->AddRule(rule, raw, std::move(fd), false); err != 0) {
          return absl::InternalError(absl::StrCat("epoll: ", std::strerror(err)));
        }
      }
    }
    server->bound_.push_back({rule->name, address});
  }
  FERRY_RETURN_IF_ERROR(server->StartAdmin());
  return server;
}

Server::~Server() {
  if (started_) {
    Drain();
    Wait();
  }
  admin_.reset();  // its handlers read the workers: stop it first
}

void Server::Start() {
  started_ = true;
  for (const Bound& b : bound_) {
    std::string targets;
    for (const auto& rule : rules_) {
      if (rule->name != b.rule) continue;
      for (const auto& e : rule->endpoints) absl::StrAppend(&targets, targets.empty() ? "" : ",", e.ToString());
    }
    FERRY_LOG(kInfo, "listening", {{"rule", b.rule}, {"address", b.address.ToString()},
                                   {"endpoints", targets}});
  }
  for (auto& worker : workers_) worker->Start();
  ready_.store(true, std::memory_order_relaxed);
  control_thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "ferry-control");
    control_.Run();
  });
  FERRY_LOG(kInfo, "started", {{"workers", workers_.size()}, {"rules", rules_.size()}});
}

void Server::Drain() {
  if (draining_.exchange(true)) return;
  control_.Post([this] { StartDrainOnControl(); });
}

void Server::StartDrainOnControl() {
  ready_.store(false, std::memory_order_relaxed);
  drain_started_nanos_ = control_.now();
  FERRY_LOG(kInfo, "draining", {{"delay_ms", drain_delay_nanos_ / base::kNanosPerMilli},
                                {"timeout_ms", drain_timeout_nanos_ / base::kNanosPerMilli},
                                {"active", ActiveConnections()}});
  drain_timer_ = std::make_unique<event::Timer>(control_, [this] { CheckDrained(); });
  drain_timer_->ArmAfter(drain_delay_nanos_);
}

void Server::CheckDrained() {
  if (!accepting_stopped_) {
    accepting_stopped_ = true;
    for (auto& worker : workers_) {
      Worker* w = worker.get();
      w->loop().Post([w] { w->StopAccepting(); });
    }
    // A shared unix socket stays open until every worker let go of it; shut
    // it for reading now so new clients are refused instead of queued.
    for (const base::Fd& fd : shared_fds_) ::shutdown(fd.get(), SHUT_RD);
    drain_started_nanos_ = control_.now();
  }
  if (ActiveConnections() == 0) {
    FinishDrain(false);
  } else if (control_.now() - drain_started_nanos_ >= drain_timeout_nanos_) {
    FinishDrain(true);
  } else {
    drain_timer_->ArmAfter(kDrainPollNanos);
  }
}

void Server::FinishDrain(bool timed_out) {
  int64_t left = ActiveConnections();
  for (auto& worker : workers_) {
    Worker* w = worker.get();
    w->loop().Post([w] {
      w->StopAccepting();
      w->CloseAll();
    });
    w->StopAndJoin();
  }
  FERRY_LOG(kInfo, "drained", {{"closed_at_timeout", timed_out ? left : 0}});
  control_.Stop();
}

void Server::Wait() {
  if (control_thread_.joinable()) control_thread_.join();
  shared_fds_.clear();
  for (const std::string& path : unix_paths_) ::unlink(path.c_str());
  unix_paths_.clear();
}

static sigset_t TerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  return set;
}

void BlockTerminationSignals() {
  sigset_t set = TerminationSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void Server::RunUntilSignal() {
  BlockTerminationSignals();
  sigset_t set = TerminationSignals();
  Start();
  // A thread waits for the signals; this one waits for the drain to end.
  std::atomic<bool> exiting{false};
  std::thread signals([this, set, &exiting] {
    int terms = 0;
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (exiting.load()) return;
      if (sig == SIGHUP) {
        FERRY_LOG(kWarn, "SIGHUP ignored: this build has no config reload");
        continue;
      }
      ++terms;
      FERRY_LOG(kInfo, "signal", {{"signal", strsignal(sig)}});
      if (terms == 1) {
        Drain();
      } else {
        // A second request: no more waiting.
        control_.Post([this] {
          if (drain_timer_) drain_timer_->Disarm();
          accepting_stopped_ = true;
          FinishDrain(true);
        });
        return;
      }
    }
  });
  Wait();
  // Wake the signal thread (if it still waits) so it can exit.
  exiting.store(true);
  pthread_kill(signals.native_handle(), SIGHUP);
  signals.join();
}

absl::StatusOr<net::Address> Server::BoundAddress(const std::string& rule) const {
  for (const Bound& b : bound_) {
    if (b.rule == rule) return b.address;
  }
  return absl::NotFoundError(absl::StrCat("no rule \"", rule, "\""));
}

RuleTotals Server::Totals(const std::string& rule) const {
  RuleTotals t;
  for (const auto& worker : workers_) {
    for (const auto& instance : worker->rules()) {
      if (instance->rule()->name != rule) continue;
      const proxy::RuleStats& s = instance->stats();
      for (int i = 0; i < static_cast<int>(proxy::Outcome::kCount); ++i) {
        t.connections[i] += s.connections[i].value();
      }
      for (size_t i = 0; i < instance->rule()->endpoints.size(); ++i) {
        const proxy::EndpointStats& e = instance->endpoint_stats(i);
        t.bytes_to_target += e.bytes_to_target.value();
        t.bytes_to_client += e.bytes_to_client.value();
      }
      t.active += s.active.value();
    }
  }
  return t;
}

LoopTotals Server::LoopTotalsSum() const {
  LoopTotals t;
  for (const auto& worker : workers_) {
    const metrics::LoopStats& s = worker->stats();
    for (int i = 0; i < static_cast<int>(metrics::AcceptError::kCount); ++i) {
      t.accept_errors[i] += s.accept_errors[i].value();
    }
    for (int i = 0; i < static_cast<int>(metrics::PumpMode::kCount); ++i) {
      t.pump_bytes[i] += s.pump_bytes[i].value();
    }
    t.buffered_bytes += s.buffered_bytes.value();
    t.pipes_in_use += s.pipes_in_use.value();
    t.buffers_in_use += s.buffers_in_use.value();
  }
  return t;
}

int64_t Server::ActiveConnections() const {
  int64_t n = 0;
  for (const auto& worker : workers_) n += static_cast<int64_t>(worker->sessions());
  return n;
}

}  // namespace ferry::server
