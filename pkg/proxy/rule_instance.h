#pragma once

#include <cstddef>
#include <memory>
#include <optional>

#include "pkg/event/loop.h"
#include "pkg/net/listener.h"
#include "pkg/proxy/rule.h"
#include "pkg/proxy/stats.h"
#include "pkg/pump/pump.h"

namespace ferry::proxy {

class Session;

// RuleInstance is one rule as one worker runs it: that worker's Listener for
// the rule, the sessions it accepted, and their counters. Owned by the
// worker; lives on the worker's loop thread, as do all its methods. It must
// outlive its sessions: a rule that stops accepting stays until they end.
class RuleInstance final : public net::Listener::Callbacks {
 public:
  RuleInstance(event::Loop& loop, pump::Context& pumps, std::shared_ptr<const Rule> rule);
  ~RuleInstance() override;

  // Starts accepting on `fd` (see net::Listener for `owned` and `shared`).
  // Returns an errno or 0.
  int Listen(int fd, base::Fd owned, bool shared);
  // Stops accepting; live sessions go on.
  void StopAccepting();
  // Ends every session now (counted with `outcome`), resetting both sides.
  void CloseAll(Outcome outcome);
  size_t sessions() const { return session_count_; }

  void OnAccept(base::Fd fd, const net::Address& peer) override;

  // For Session.
  event::Loop& loop() { return loop_; }
  pump::Context& pumps() { return pumps_; }
  const std::shared_ptr<const Rule>& rule() const { return rule_; }
  RuleStats& stats() { return stats_; }
  const RuleStats& stats() const { return stats_; }
  // Counters of rule()->endpoints[i]; readable from any thread.
  EndpointStats& endpoint_stats(size_t i) { return endpoint_stats_[i]; }
  const EndpointStats& endpoint_stats(size_t i) const { return endpoint_stats_[i]; }
  // Unlinks a closed session and passes it to the loop's deferred deletion.
  void Release(Session* session);

 private:
  event::Loop& loop_;
  pump::Context& pumps_;
  std::shared_ptr<const Rule> rule_;
  RuleStats stats_;
  std::unique_ptr<EndpointStats[]> endpoint_stats_;  // one per rule_->endpoints
  std::optional<net::Listener> listener_;
  Session* head_ = nullptr;  // intrusive list of live sessions
  size_t session_count_ = 0;
};

}  // namespace ferry::proxy
