#include "pkg/server/server.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <fstream>
#include <iterator>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/message_differencer.h"
#include "pkg/base/log.h"
#include "pkg/base/privileges.h"
#include "pkg/base/status.h"
#include "pkg/config/loader.h"
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
  server->options_ = options;
  int n = options.workers > 0    ? options.workers
          : config.workers() > 0 ? static_cast<int>(config.workers())
                                 : DefaultWorkerCount();
  for (int i = 0; i < n; ++i) {
    server->workers_.push_back(std::make_unique<Worker>(i, options.worker));
  }
  server->table_ = std::make_shared<RuleTable>();
  if (!options.handoff_path.empty()) {
    auto taken = TakeListeners(options.handoff_path);
    if (!taken.ok()) {
      // Binding beside the old ferry still refuses no one.
      FERRY_LOG(kWarn, "no listeners taken over: binding new ones",
                {{"error", taken.status().message()}});
    } else {
      for (HandedListener& l : *taken) server->inherited_[l.key] = std::move(l.fds);
      server->took_over_ = !server->inherited_.empty();
    }
  }
  // Binds everything before any thread starts, so a taken port fails the start.
  FERRY_RETURN_IF_ERROR(
      server->Apply(config, options.config_path.empty() ? "" : "file", options.config_version));
  for (const auto& [key, fds] : server->inherited_) {
    FERRY_LOG(kInfo, "listener of the old ferry not in this config", {{"listener", key}});
  }
  FERRY_RETURN_IF_ERROR(server->StartAdmin());
  server->inherited_.clear();
  if (!options.handoff_path.empty()) {
    Server* s = server.get();
    FERRY_ASSIGN_OR_RETURN(server->handoff_, HandoffServer::Start(options.handoff_path, [s] {
                             std::lock_guard<std::mutex> lock(s->reload_mu_);
                             std::vector<HandedListener> out;
                             for (const auto& [key, fds] : s->listener_fds_) {
                               HandedListener l{key, {}};
                               for (int fd : fds)
                                 l.fds.emplace_back(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
                               out.push_back(std::move(l));
                             }
                             return out;
                           }));
  }
  // Everything that can fail has succeeded: now the listeners take clients.
  for (const auto& [fd, address] : server->deferred_listen_) {
    FERRY_RETURN_IF_ERROR(net::StartListening(fd, address, kBacklog));
  }
  server->deferred_listen_.clear();
  return server;
}

// The listening sockets of one new listener: one per worker (SO_REUSEPORT),
// or one unix socket every worker shares.
struct Bind {
  net::Address bound;
  std::vector<base::Fd> per_worker;
  base::Fd shared;
};

namespace {

// `listen` false: bound only (see net::ListenSocket); the start listens once
// nothing else can fail.
absl::StatusOr<Bind> BindListener(const proxy::Rule& rule, int workers, bool listen) {
  Bind b;
  FERRY_ASSIGN_OR_RETURN(b.bound, net::ListenAddress(rule.listen));
  auto named = [&](const absl::Status& s) {
    std::string hint;
    if (absl::StrContains(s.message(), std::strerror(EACCES))) {
      hint = base::BindPermissionHint(b.bound.port());
    }
    return absl::Status(s.code(), absl::StrCat("rule \"", rule.name, "\": ", s.message(), hint));
  };
  if (b.bound.is_unix()) {
    auto fd = net::ListenSocket(b.bound, false, kBacklog, listen);
    if (!fd.ok()) return named(fd.status());
    b.shared = std::move(*fd);
    return b;
  }
  // SO_REUSEPORT also lets a second ferry of the same user bind beside this
  // one: that is how a binary upgrade refuses no connection (the old one
  // drains on SIGTERM). A program without SO_REUSEPORT on the port still
  // makes the bind fail.
  for (int i = 0; i < workers; ++i) {
    auto fd = net::ListenSocket(b.bound, true, kBacklog, listen);
    if (!fd.ok()) return named(fd.status());
    if (b.bound.port() == 0) {
      // Port 0: the first bind picks the port; every other worker reuses it.
      FERRY_ASSIGN_OR_RETURN(net::Address local, net::LocalAddress(fd->get()));
      b.bound.set_port(local.port());
    }
    b.per_worker.push_back(std::move(*fd));
  }
  return b;
}

}  // namespace

absl::StatusOr<Bind> Server::AcquireListener(const proxy::Rule& rule, const std::string& key,
                                             int workers) {
  auto it = inherited_.find(key);
  // At a start, sockets listen only once everything else succeeded: a
  // ferry that fails to start then resets no client (of its own, or of the
  // running ferry whose SO_REUSEPORT group it would have joined).
  const bool listen = started_;
  if (it == inherited_.end()) return BindListener(rule, workers, listen);
  std::vector<base::Fd> fds = std::move(it->second);
  inherited_.erase(it);
  FERRY_ASSIGN_OR_RETURN(net::Address address, net::ListenAddress(rule.listen));
  bool fits = address.is_unix() ? fds.size() == 1 : fds.size() == static_cast<size_t>(workers);
  for (const base::Fd& fd : fds) {
    // Only listening stream sockets: anything else handed over is not ours to use.
    int listening = 0;
    socklen_t len = sizeof(listening);
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening) {
      fits = false;
    }
  }
  if (!fits) {
    // One socket per worker: a different worker count cannot use them all,
    // and an unused one would strand the clients queued on it.
    FERRY_LOG(kWarn, "the old ferry's listener has another worker count: binding beside it",
              {{"rule", rule.name}, {"old_sockets", fds.size()}, {"workers", workers}});
    return BindListener(rule, workers, listen);
  }
  Bind b;
  if (address.is_unix()) {
    b.bound = address;
    b.shared = std::move(fds[0]);
  } else {
    FERRY_ASSIGN_OR_RETURN(b.bound, net::LocalAddress(fds[0].get()));
    b.per_worker = std::move(fds);
  }
  FERRY_LOG(kInfo, "listener taken over", {{"rule", rule.name}, {"address", b.bound.ToString()}});
  return b;
}

namespace {

// Whether a reload may change `field` of the running config.
absl::Status CheckFixed(const config::v1::Config& running, const config::v1::Config& next) {
  using google::protobuf::util::MessageDifferencer;
  if (!MessageDifferencer::Equals(running.admin(), next.admin())) {
    return absl::InvalidArgumentError("admin: cannot change while ferry runs (restart it)");
  }
  if (!MessageDifferencer::Equals(running.dns(), next.dns())) {
    return absl::InvalidArgumentError("dns: cannot change while ferry runs (restart it)");
  }
  if (running.workers() != next.workers()) {
    return absl::InvalidArgumentError("workers: cannot change while ferry runs (restart it)");
  }
  if (running.rendezvous().hub().tunnel_listen() != next.rendezvous().hub().tunnel_listen()) {
    return absl::InvalidArgumentError(
        "rendezvous.hub.tunnel_listen: cannot change while ferry runs (restart it)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Server::Apply(config::v1::Config config, absl::string_view source,
                           absl::string_view version) {
  std::lock_guard<std::mutex> lock(reload_mu_);
  if (!config.has_admin() && !options_.default_admin.empty()) {
    config.mutable_admin()->set_listen(options_.default_admin);
  }
  std::shared_ptr<const RuleTable> running = table();
  if (started_) {
    if (draining_.load()) {
      return absl::FailedPreconditionError("ferry is shutting down: no config is applied");
    }
    FERRY_RETURN_IF_ERROR(CheckFixed(running->config, config));
  }
  const int workers = static_cast<int>(workers_.size());

  // Resolve and build every rule first: a failure changes nothing.
  auto next = std::make_shared<RuleTable>();
  next->config = config;
  next->source = std::string(source);
  next->version = std::string(version);
  for (const auto& rule_config : config.rules()) {
    FERRY_ASSIGN_OR_RETURN(std::shared_ptr<proxy::Rule> rule,
                           proxy::BuildRule(rule_config, &access_logs_));
    const RuleTable::Entry* previous = running->Find(rule->name);
    proxy::AttachCounters(*rule, previous ? previous->rule.get() : nullptr, workers);
    FERRY_ASSIGN_OR_RETURN(std::string key, proxy::ListenerKey(*rule));
    next->entries.push_back({std::move(rule), std::move(key), net::Address(), false});
  }

  // Then the sockets of new listen addresses; a kept address keeps its
  // sockets, so nothing is refused there during the reload.
  std::vector<std::vector<ListenerSpec>> specs(workers);
  std::map<std::string, UnixListener> new_unix;
  std::vector<size_t> fresh;                        // entries with new sockets
  std::map<std::string, std::vector<int>> new_fds;  // their raw fds, by key
  proxy::ReloadPlan plan = proxy::PlanReload(*running, next->entries);
  for (size_t i = 0; i < next->entries.size(); ++i) {
    RuleTable::Entry& e = next->entries[i];
    if (plan.keep[i] >= 0) {
      e.bound = running->entries[plan.keep[i]].bound;
      for (int w = 0; w < workers; ++w) specs[w].push_back({e.rule, e.key, -1, base::Fd(), false});
      continue;
    }
    FERRY_ASSIGN_OR_RETURN(Bind b, AcquireListener(*e.rule, e.key, workers));
    e.bound = b.bound;
    fresh.push_back(i);
    if (!started_) {
      // Listened to at the end of Create() (again, for taken-over sockets:
      // harmless, it only sets the backlog).
      if (b.shared.valid()) deferred_listen_.push_back({b.shared.get(), b.bound});
      for (const base::Fd& fd : b.per_worker) deferred_listen_.push_back({fd.get(), b.bound});
    }
    std::vector<int>& raw = new_fds[e.key];
    if (b.shared.valid()) raw.push_back(b.shared.get());
    for (const base::Fd& fd : b.per_worker) raw.push_back(fd.get());
    if (b.shared.valid()) {
      for (int w = 0; w < workers; ++w) {
        specs[w].push_back({e.rule, e.key, b.shared.get(), base::Fd(), /*shared=*/true});
      }
      new_unix[e.key] = {std::move(b.shared), b.bound.unix_path()};
    } else {
      for (int w = 0; w < workers; ++w) {
        int raw = b.per_worker[w].get();
        specs[w].push_back({e.rule, e.key, raw, std::move(b.per_worker[w]), false});
      }
    }
  }

  // Rules that are gone, and earlier ones still draining, stay in the table
  // until their last connection ends.
  for (size_t i : plan.draining) {
    RuleTable::Entry gone = running->entries[i];
    gone.draining = true;
    next->entries.push_back(std::move(gone));
  }

  int64_t drain_timeout = config.drain().has_timeout()
                              ? proxy::DurationNanos(config.drain().timeout())
                              : 30 * base::kNanosPerSecond;
  if (!started_) {
    for (int w = 0; w < workers; ++w) {
      if (int err = workers_[w]->Apply(std::move(specs[w]), drain_timeout); err != 0) {
        return absl::InternalError(absl::StrCat("epoll: ", std::strerror(err)));
      }
    }
  } else {
    // Every worker switches on its own thread; wait for all of them, so the
    // caller (and a test) may rely on the new rules once this returns.
    std::mutex mu;
    std::condition_variable cv;
    int pending = workers;
    int error = 0;
    for (int w = 0; w < workers; ++w) {
      Worker* worker = workers_[w].get();
      auto worker_specs = std::make_shared<std::vector<ListenerSpec>>(std::move(specs[w]));
      worker->loop().Post([&, worker, worker_specs, drain_timeout] {
        int err = worker->Apply(std::move(*worker_specs), drain_timeout);
        std::lock_guard<std::mutex> l(mu);
        if (err != 0) error = err;
        if (--pending == 0) cv.notify_all();
      });
    }
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return pending == 0; });
    if (error != 0) {
      return absl::InternalError(absl::StrCat("epoll: ", std::strerror(error)));
    }
  }

  // Unix sockets of removed listeners: every worker has let go of them.
  for (auto it = unix_listeners_.begin(); it != unix_listeners_.end();) {
    bool kept = false;
    for (const RuleTable::Entry& e : next->entries) kept |= !e.draining && e.key == it->first;
    if (kept) {
      ++it;
      continue;
    }
    ::unlink(it->second.path.c_str());
    it = unix_listeners_.erase(it);
  }
  for (auto& [key, listener] : new_unix) unix_listeners_[key] = std::move(listener);
  // The sockets a successor would take: those of the listeners now live.
  for (auto& [key, fds] : new_fds) listener_fds_[key] = std::move(fds);
  for (auto it = listener_fds_.begin(); it != listener_fds_.end();) {
    bool live = false;
    for (const RuleTable::Entry& e : next->entries) live |= !e.draining && e.key == it->first;
    it = live ? std::next(it) : listener_fds_.erase(it);
  }

  drain_delay_nanos_.store(config.drain().has_delay() ? proxy::DurationNanos(config.drain().delay())
                                                      : 0);
  drain_timeout_nanos_.store(drain_timeout);
  if (started_) {
    int added = 0, removed = 0;
    for (const RuleTable::Entry& e : next->entries) {
      if (!e.draining && running->Find(e.rule->name) == nullptr) ++added;
      if (e.draining && !running->Find(e.rule->name)->draining) ++removed;
    }
    for (size_t i : fresh) {
      const RuleTable::Entry& e = next->entries[i];
      FERRY_LOG(kInfo, "listening", {{"rule", e.rule->name}, {"address", e.bound.ToString()}});
    }
    FERRY_LOG(kInfo, "config applied",
              {{"source", source},
               {"version", version},
               {"rules", config.rules_size()},
               {"added", added},
               {"removed", removed}});
  }
  Publish(std::move(next));
  return absl::OkStatus();
}

void Server::Publish(std::shared_ptr<const RuleTable> table) {
  bool draining = false;
  for (const RuleTable::Entry& e : table->entries) draining |= e.draining;
  {
    std::lock_guard<std::mutex> lock(table_mu_);
    table_ = std::move(table);
  }
  if (draining && started_) {
    control_.Post([this] {
      if (!sweep_timer_) {
        sweep_timer_ = std::make_unique<event::Timer>(control_, [this] { SweepDrainingRules(); });
      }
      if (!sweep_timer_->armed()) sweep_timer_->ArmAfter(kDrainPollNanos);
    });
  }
}

std::shared_ptr<const RuleTable> Server::table() const {
  std::lock_guard<std::mutex> lock(table_mu_);
  return table_;
}

void Server::SweepDrainingRules() {
  std::lock_guard<std::mutex> lock(reload_mu_);
  std::shared_ptr<const RuleTable> running = table();
  bool changed = false, left = false;
  auto next = std::make_shared<RuleTable>(*running);
  next->entries.clear();
  for (const RuleTable::Entry& e : running->entries) {
    if (e.draining && proxy::ActiveConnections(*e.rule) == 0) {
      FERRY_LOG(kInfo, "removed rule drained", {{"rule", e.rule->name}});
      changed = true;
      continue;
    }
    left |= e.draining;
    next->entries.push_back(e);
  }
  if (changed) {
    std::lock_guard<std::mutex> l(table_mu_);
    table_ = std::move(next);
  }
  if (left) sweep_timer_->ArmAfter(kDrainPollNanos);
}

absl::Status Server::Reload(const config::v1::Config& config, absl::string_view source,
                            absl::string_view version) {
  absl::Status status = Apply(config, source, version);
  if (status.ok()) {
    reloads_ok_.fetch_add(1, std::memory_order_relaxed);
    last_success_unix_nanos_.store(absl::GetCurrentTimeNanos(), std::memory_order_relaxed);
  } else {
    reloads_failed_.fetch_add(1, std::memory_order_relaxed);
    FERRY_LOG(kError, "config reload failed: the running config stays",
              {{"source", source}, {"version", version}, {"error", status.message()}});
  }
  return status;
}

absl::Status Server::ReloadText(absl::string_view text, absl::string_view source,
                                absl::string_view version) {
  config::Loaded loaded = config::ParseConfigText(std::string_view(text.data(), text.size()));
  if (!loaded.ok()) {
    reloads_failed_.fetch_add(1, std::memory_order_relaxed);
    for (const config::Diagnostic& d : loaded.errors) {
      FERRY_LOG(kError, "config error",
                {{"source", source}, {"version", version}, {"path", d.path}, {"error", d.message}});
    }
    FERRY_LOG(kError, "config reload failed: the running config stays",
              {{"source", source}, {"version", version}, {"errors", loaded.errors.size()}});
    return absl::InvalidArgumentError(config::Join(loaded.errors));
  }
  return Reload(loaded.config, source, version);
}

uint64_t Server::reloads(absl::string_view result) const {
  return result == "success" ? reloads_ok_.load() : reloads_failed_.load();
}

Server::~Server() {
  if (started_) {
    Drain();
    Wait();
  }
  {
    std::lock_guard<std::mutex> lock(admin_mu_);
    admin_.reset();  // its handlers read the workers: stop it first
  }
  admin_retry_.reset();
}

void Server::Start() {
  std::shared_ptr<const RuleTable> running = table();
  for (const RuleTable::Entry& e : running->entries) {
    std::string targets;
    for (const auto& a : e.rule->endpoints) {
      absl::StrAppend(&targets, targets.empty() ? "" : ",", a.ToString());
    }
    FERRY_LOG(kInfo, "listening",
              {{"rule", e.rule->name}, {"address", e.bound.ToString()}, {"endpoints", targets}});
  }
  {
    std::lock_guard<std::mutex> lock(reload_mu_);
    started_ = true;
  }
  last_success_unix_nanos_.store(absl::GetCurrentTimeNanos(), std::memory_order_relaxed);
  for (auto& worker : workers_) worker->Start();
  ready_.store(true, std::memory_order_relaxed);
  if (!options_.config_path.empty()) {
    // Made and started before the control thread runs it, so that once
    // "started" is logged its inotify fd exists (and a change is not missed).
    file_source_ = std::make_unique<config::FileSource>(
        control_, options_.config_path, options_.file_source,
        [this](const std::string& text, const std::string& version,
               config::FileSource::Trigger trigger) {
          FERRY_LOG(kInfo, "config file changed",
                    {{"path", options_.config_path},
                     {"version", version},
                     {"trigger", config::TriggerName(trigger)}});
          (void)ReloadText(text, "file", version);
        });
    if (absl::Status s = file_source_->Start(running->version); !s.ok()) {
      FERRY_LOG(kError, "config file not watched",
                {{"path", options_.config_path}, {"error", s.message()}});
    }
  }
  if (admin_retry_) {
    control_.Post([this] {
      admin_retry_->timer = std::make_unique<event::Timer>(control_, [this] { RetryAdmin(); });
      admin_retry_->timer->ArmAfter(kAdminRetryNanos);
    });
  }
  control_thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "ferry-control");
    control_.Run();
  });
  FERRY_LOG(kInfo, "started",
            {{"workers", workers_.size()}, {"rules", running->config.rules_size()}});
}

void Server::Drain() {
  if (draining_.exchange(true)) return;
  control_.Post([this] { StartDrainOnControl(); });
}

void Server::StartDrainOnControl() {
  // No successor may take sockets this ferry is about to close.
  if (handoff_) handoff_->Stop();
  ready_.store(false, std::memory_order_relaxed);
  drain_started_nanos_ = control_.now();
  FERRY_LOG(kInfo, "draining",
            {{"delay_ms", drain_delay_nanos_ / base::kNanosPerMilli},
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
      w->loop().Post([this, w] {
        w->StopAccepting();
        workers_stopped_.fetch_add(1, std::memory_order_release);
      });
    }
    // A shared unix socket stays open until every worker let go of it; shut
    // it for reading now so new clients are refused instead of queued.
    // Not when a successor took the sockets: shutdown() would stop them
    // for it too.
    std::lock_guard<std::mutex> lock(reload_mu_);
    if (!handoff_ || !handoff_->handed_over()) {
      for (const auto& [key, listener] : unix_listeners_) ::shutdown(listener.fd.get(), SHUT_RD);
    }
    drain_started_nanos_ = control_.now();
  }
  // A worker may accept until it ran StopAccepting(): a count read before
  // that misses those connections, and FinishDrain() would reset them.
  bool all_stopped = workers_stopped_.load(std::memory_order_acquire) == workers_.size();
  if (all_stopped && ActiveConnections() == 0) {
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
  file_source_.reset();  // its fd is on this loop: gone before the loop stops
  control_.Stop();
}

void Server::Wait() {
  if (control_thread_.joinable()) control_thread_.join();
  // A successor that took the listeners serves the unix socket files now.
  bool handed_over = handoff_ && handoff_->handed_over();
  handoff_.reset();
  std::lock_guard<std::mutex> lock(reload_mu_);
  for (const auto& [key, listener] : unix_listeners_) {
    if (!handed_over) ::unlink(listener.path.c_str());
  }
  unix_listeners_.clear();
  listener_fds_.clear();
}

static sigset_t TerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR1);
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
        if (options_.config_path.empty()) {
          FERRY_LOG(kWarn, "SIGHUP ignored: the rules come from the command line");
        } else {
          FERRY_LOG(kInfo, "signal", {{"signal", "SIGHUP"}, {"action", "reload"}});
          control_.Post([this] {
            if (file_source_) file_source_->Reload();
          });
        }
        continue;
      }
      if (sig == SIGUSR1) {
        FERRY_LOG(kInfo, "signal", {{"signal", "SIGUSR1"}, {"action", "reopen logs"}});
        if (absl::Status s = ReopenLogs(); !s.ok()) {
          FERRY_LOG(kError, "cannot reopen a log file", {{"error", s.message()}});
        }
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
  std::shared_ptr<const RuleTable> running = table();
  const RuleTable::Entry* e = running->Find(rule);
  if (e == nullptr || e->draining)
    return absl::NotFoundError(absl::StrCat("no rule \"", rule, "\""));
  return e->bound;
}

RuleTotals Server::Totals(const std::string& rule) const {
  RuleTotals t;
  std::shared_ptr<const RuleTable> running = table();
  const RuleTable::Entry* e = running->Find(rule);
  if (e == nullptr) return t;
  const proxy::Rule& r = *e->rule;
  for (int w = 0; w < r.counters->workers; ++w) {
    const proxy::RuleStats& s = r.stats(w);
    for (int i = 0; i < static_cast<int>(proxy::Outcome::kCount); ++i) {
      t.connections[i] += s.connections[i].value();
    }
    t.active += s.active.value();
  }
  for (const proxy::EndpointCounters* c : proxy::UniqueEndpoints(r)) {
    for (int w = 0; w < r.counters->workers; ++w) {
      t.bytes_to_target += c->per_worker[w].bytes_to_target.value();
      t.bytes_to_client += c->per_worker[w].bytes_to_client.value();
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
  for (const RuleTable::Entry& e : table()->entries) n += proxy::ActiveConnections(*e.rule);
  return n;
}

}  // namespace ferry::server
