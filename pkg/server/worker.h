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

// One listener of a config as one worker runs it.
struct ListenerSpec {
  std::shared_ptr<const proxy::Rule> rule;
  // The listener's identity (its canonical address): a worker already
  // listening on `key` keeps that socket (no rebind, nothing refused) and
  // only swaps the rule.
  std::string key;
  // A new socket, when no listener of this worker has `key` yet: `owned`
  // holds it, or it is a shared unix socket the server keeps open (`fd`
  // borrowed, `shared`). -1 when the listener is kept.
  int fd = -1;
  base::Fd owned;
  bool shared = false;
};

// Worker is one thread with its own Loop, pools and rule instances: a
// connection accepted here stays here until it closes. Before Start() the
// creating thread may call Apply(); afterwards everything but the stats runs
// on the loop's thread (via loop().Post()).
class Worker {
 public:
  struct Options {
    size_t pipe_pool_cap = 64;
    size_t buffer_pool_cap = 64;
    bool splice = true;
  };

  Worker(int index, const Options& options);
  ~Worker();

  // Makes this worker run `specs`: a listener whose key is in `specs` keeps
  // its socket and gets the new rule; a new key starts accepting on its
  // socket; a listener whose key is gone stops accepting, and its live
  // connections go on until they end or `drain_timeout_nanos` pass, when
  // they are closed. Returns an errno (epoll) or 0; on error nothing changed.
  int Apply(std::vector<ListenerSpec>&& specs, int64_t drain_timeout_nanos);

  void Start();
  // Stops the loop after pending work and joins the thread. Idempotent.
  void StopAndJoin();

  event::Loop& loop() { return loop_; }
  int index() const { return index_; }
  // Readable from any thread: counters are atomics.
  const metrics::LoopStats& stats() const { return stats_; }

  // On the loop's thread.
  void StopAccepting();
  void CloseAll();

 private:
  struct Retired {
    std::unique_ptr<proxy::RuleInstance> instance;
    int64_t deadline_nanos;
  };
  // Frees removed listeners whose connections ended; closes those past their deadline.
  void Sweep();

  int index_;
  event::Loop loop_;
  metrics::LoopStats stats_;
  pump::PipePool pipes_;
  pump::BufferPool buffers_;
  pump::Context pump_context_;
  std::vector<std::unique_ptr<proxy::RuleInstance>> rules_;  // accepting, in config order
  std::vector<Retired> retired_;                             // removed, with connections left
  event::Timer sweep_;
  std::thread thread_;
};

}  // namespace ferry::server
