#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>

#include "pkg/event/loop.h"
#include "pkg/net/listener.h"
#include "pkg/proxy/rule.h"
#include "pkg/proxy/stats.h"
#include "pkg/pump/pump.h"

namespace ferry::proxy {

class Session;

// RuleInstance is one listener of a rule as one worker runs it: that
// worker's Listener, the sessions it accepted, and the rule generation new
// connections get (Update() swaps it at a reload; each session keeps the
// generation it was accepted under). Owned by the worker; lives on the
// worker's loop thread, as do all its methods. It must outlive its sessions:
// a removed rule stops accepting and stays until they end.
class RuleInstance final : public net::Listener::Callbacks {
 public:
  // `key`: the listener's identity across reloads (see server::ListenerSpec).
  RuleInstance(event::Loop& loop, pump::Context& pumps, int worker,
               std::shared_ptr<const Rule> rule, std::string key);
  ~RuleInstance() override;

  // Starts accepting on `fd` (see net::Listener for `owned` and `shared`).
  // Returns an errno or 0.
  int Listen(int fd, base::Fd owned, bool shared);
  // New connections get `rule` from now on (same listener).
  void Update(std::shared_ptr<const Rule> rule) { rule_ = std::move(rule); }
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
  int worker() const { return worker_; }
  // The address the listener is bound to (for the access log).
  const net::Address& listen_address() const { return listen_address_; }
  const std::string& key() const { return key_; }
  // Unlinks a closed session (accepted under `rule`) and passes it to the
  // loop's deferred deletion.
  void Release(Session* session, const Rule& rule);

 private:
  // Counts (and logs) a connection refused before it became a session.
  void Refused(Outcome outcome, const net::Address& peer);

  event::Loop& loop_;
  pump::Context& pumps_;
  const int worker_;  // the counters' slot
  std::shared_ptr<const Rule> rule_;
  const std::string key_;
  net::Address listen_address_;
  std::optional<net::Listener> listener_;
  Session* head_ = nullptr;  // intrusive list of live sessions
  size_t session_count_ = 0;
};

}  // namespace ferry::proxy
