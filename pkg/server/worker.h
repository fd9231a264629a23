#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "pkg/event/loop.h"
#include "pkg/metrics/loop_stats.h"
#include "pkg/proxy/rule_instance.h"
#include "pkg/pump/pools.h"
#include "pkg/pump/pump.h"

namespace ferry::server {

// Worker is one thread with its own Loop, pools and rule instances: a
// connection accepted here stays here until it closes. Set up (AddRule) before
// Start(); afterwards only Post()ed work and the stats readers touch it.
class Worker {
 public:
  struct Options {
    size_t pipe_pool_cap = 64;
    size_t buffer_pool_cap = 64;
    bool splice = true;
  };

  Worker(int index, const Options& options);
  ~Worker();

  // Before Start(): adds a rule listening on `fd` (see proxy::RuleInstance).
  int AddRule(std::shared_ptr<const proxy::Rule> rule, int fd, base::Fd owned, bool shared);

  void Start();
  // Stops the loop after pending work and joins the thread. Idempotent.
  void StopAndJoin();

  event::Loop& loop() { return loop_; }
  int index() const { return index_; }
  // Readable from any thread: counters are atomics. The list itself is fixed
  // once Start() ran.
  const metrics::LoopStats& stats() const { return stats_; }
  const std::vector<std::unique_ptr<proxy::RuleInstance>>& rules() const { return rules_; }

  // On the loop's thread (via loop().Post()).
  void StopAccepting();
  void CloseAll();
  size_t sessions() const;

 private:
  int index_;
  event::Loop loop_;
  metrics::LoopStats stats_;
  pump::PipePool pipes_;
  pump::BufferPool buffers_;
  pump::Context pump_context_;
  std::vector<std::unique_ptr<proxy::RuleInstance>> rules_;
  std::thread thread_;
};

}  // namespace ferry::server
