#include "pkg/server/worker.h"

#include <pthread.h>
#include <signal.h>

#include "absl/strings/str_cat.h"
#include "pkg/base/log.h"
#include "pkg/base/status.h"
#include "pkg/net/sys_ops.h"

namespace ferry::server {
namespace {

// How often removed listeners are checked for their last connection.
constexpr int64_t kSweepNanos = 100 * base::kNanosPerMilli;

}  // namespace

Worker::Worker(int index, const Options& options)
    : index_(index),
      pipes_(net::RealSysOps::Get(), options.pipe_pool_cap, stats_),
      buffers_(options.buffer_pool_cap, stats_),
      pump_context_{net::RealSysOps::Get(), buffers_, pipes_, stats_},
      sweep_(loop_, [this] { Sweep(); }) {
  pump_context_.splice = options.splice;
}

Worker::~Worker() {
  StopAndJoin();
  retired_.clear();
  rules_.clear();
}

int Worker::Apply(std::vector<ListenerSpec>&& specs, int64_t drain_timeout_nanos) {
  std::vector<std::unique_ptr<proxy::RuleInstance>> next;
  next.reserve(specs.size());
  // Start the new listeners first: if one fails, nothing has changed yet.
  for (ListenerSpec& spec : specs) {
    if (spec.fd < 0) {
      next.push_back(nullptr);
      continue;
    }
    auto instance =
        std::make_unique<proxy::RuleInstance>(loop_, pump_context_, index_, spec.rule, spec.key);
    if (int err = instance->Listen(spec.fd, std::move(spec.owned), spec.shared); err != 0) {
      return err;
    }
    next.push_back(std::move(instance));
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    if (next[i]) continue;
    for (auto& old : rules_) {
      if (old && old->key() == specs[i].key) {
        old->Update(std::move(specs[i].rule));
        next[i] = std::move(old);
        break;
      }
    }
    // The server hands a socket for every key this worker does not have.
    FERRY_CHECK(next[i] != nullptr);
  }
  int64_t deadline = loop_.now() + drain_timeout_nanos;
  for (auto& old : rules_) {
    if (!old) continue;
    old->StopAccepting();
    if (old->sessions() > 0) retired_.push_back({std::move(old), deadline});
  }
  rules_ = std::move(next);
  if (!retired_.empty() && !sweep_.armed()) sweep_.ArmAfter(kSweepNanos);
  return 0;
}

void Worker::Sweep() {
  int64_t now = loop_.now();
  for (size_t i = 0; i < retired_.size();) {
    Retired& r = retired_[i];
    if (r.instance->sessions() > 0 && now >= r.deadline_nanos) {
      FERRY_LOG(kInfo, "closing connections of a removed rule at the drain timeout",
                {{"rule", r.instance->rule()->name}, {"connections", r.instance->sessions()}});
      r.instance->CloseAll(proxy::Outcome::kTimeout);
    }
    if (r.instance->sessions() == 0) {
      retired_[i] = std::move(retired_.back());
      retired_.pop_back();
    } else {
      ++i;
    }
  }
  if (!retired_.empty()) sweep_.ArmAfter(kSweepNanos);
}

void Worker::Start() {
  thread_ = std::thread([this] {
    // splice() into a reset socket raises SIGPIPE (it has no MSG_NOSIGNAL):
    // block it here so an embedding process never dies of it; EPIPE is
    // handled as the error it is.
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);
    std::string name = absl::StrCat("ferry-w", index_);
    pthread_setname_np(pthread_self(), name.c_str());
    loop_.Run();
  });
}

void Worker::StopAndJoin() {
  if (!thread_.joinable()) return;
  loop_.Stop();
  thread_.join();
}

void Worker::StopAccepting() {
  for (auto& rule : rules_) rule->StopAccepting();
}

void Worker::CloseAll() {
  for (auto& rule : rules_) rule->CloseAll(proxy::Outcome::kTimeout);
  for (auto& r : retired_) r.instance->CloseAll(proxy::Outcome::kTimeout);
  retired_.clear();
}

}  // namespace ferry::server
