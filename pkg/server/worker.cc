#include "pkg/server/worker.h"

#include "absl/strings/str_cat.h"
#include "pkg/net/sys_ops.h"

#include <pthread.h>
#include <signal.h>

namespace ferry::server {

Worker::Worker(int index, const Options& options)
    : index_(index),
      pipes_(net::RealSysOps::Get(), options.pipe_pool_cap, stats_),
      buffers_(options.buffer_pool_cap, stats_),
      pump_context_{net::RealSysOps::Get(), buffers_, pipes_, stats_} {
  pump_context_.splice = options.splice;
}

Worker::~Worker() {
  StopAndJoin();
  rules_.clear();
}

int Worker::AddRule(std::shared_ptr<const proxy::Rule> rule, int fd, base::Fd owned,
                    bool shared) {
  rules_.push_back(std::make_unique<proxy::RuleInstance>(loop_, pump_context_, std::move(rule)));
  return rules_.back()->Listen(fd, std::move(owned), shared);
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
}

size_t Worker::sessions() const {
  size_t n = 0;
  for (const auto& rule : rules_) n += static_cast<size_t>(rule->stats().active.value());
  return n;
}

}  // namespace ferry::server
