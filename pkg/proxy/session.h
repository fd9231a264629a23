#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>

#include "pkg/base/fd.h"
#include "pkg/event/loop.h"
#include "pkg/net/address.h"
#include "pkg/proxy/rule.h"
#include "pkg/proxy/stats.h"
#include "pkg/pump/pump.h"

namespace ferry::proxy {

class RuleInstance;

// Session is one relayed connection: the client's socket, the target's
// socket, and a Pump for each direction. It owns both fds; the pumps borrow
// them. It lives on one loop from accept to close, is owned by its
// RuleInstance, and ends by Close(), which closes the sockets at once and
// hands the object to Loop::DeferDelete().
//
// Lifecycle: with proxy_protocol.accept, Start() first reads the client's
// PROXY header (from a trusted peer, within its timeout), whose client
// address then stands for the client. Then come the checks that need the
// client (ACL for PROXY rules, max_connections_per_source), the target
// (transparent: redirect) and the delay. It connects to the endpoints in
// order (up to connect_attempts, each bounded by connect_timeout), then
// relays both directions, paced by the rule's rate limits. EOF on one side
// becomes a FIN on the other (unless close: lazy); the session ends when
// both directions are done (outcome ok), on a reset or error (the other side
// is reset too; outcome error), or on a timeout; the access log gets a line.
class Session final : public event::Deletable {
 public:
  Session(RuleInstance& owner, base::Fd client, const net::Address& peer);
  ~Session() override;

  void Start();
  // Ends the session now; the outcome is counted once.
  void Close(Outcome outcome, bool reset);
  bool closed() const { return state_ == State::kClosed; }

  // Intrusive list of the owner's sessions.
  Session* prev = nullptr;
  Session* next = nullptr;

 private:
  enum class State { kHeader, kDelaying, kConnecting, kRelaying, kClosed };

  // Rate limiting of a rule that has it: a pacer per direction and the
  // timer that wakes a paced direction.
  struct Pacing {
    explicit Pacing(Session& s) : timer(s.loop_, [&s] { s.Drive(); }) {}
    pump::Pacer to_target;
    pump::Pacer to_client;
    event::Timer timer;
  };

  // Each socket has its own epoll handler so events say which side they are for.
  class Side final : public event::Handler {
   public:
    Side(Session& session, bool upstream) : session_(session), upstream_(upstream) {}
    void OnEvents(uint32_t events) override;

   private:
    Session& session_;
    bool upstream_;
  };
  class Wake final : public event::Handler {
   public:
    explicit Wake(Session& session) : session_(session) {}
    void OnEvents(uint32_t) override { session_.Drive(); }

   private:
    Session& session_;
  };

  void ReadProxyHeader(bool peer_closed);
  // The checks after the client is known, then the delay or the connect.
  void Admit();
  const net::Address& Endpoint() const;
  void LogAccess(Outcome outcome);
  void OnClientEvents(uint32_t events);
  void OnUpstreamEvents(uint32_t events);
  void Connect();
  void ConnectFailed(int err);
  void StartRelay();
  // Runs both pumps and acts on their states.
  void Drive();
  void OnTimer();
  void ArmTimer();
  // A half-closed connection times out after half_close_timeout without
  // bytes, like HAProxy's client-fin: a client that sent its request and a
  // FIN may download for hours.
  int64_t HalfCloseIdleSince() const { return std::max(half_closed_nanos_, last_activity_nanos_); }

  RuleInstance& owner_;
  event::Loop& loop_;
  std::shared_ptr<const Rule> rule_;  // the generation this session was accepted under
  RuleStats& stats_;                  // rule_'s slot for this worker
  State state_ = State::kConnecting;
  base::Fd client_;
  base::Fd upstream_;
  net::Address peer_;                              // the client: the PROXY header's when accepted
  std::unique_ptr<net::Address> declared_dst_;     // the PROXY header's destination
  std::unique_ptr<net::Address> redirect_target_;  // transparent: redirect
  std::unique_ptr<Pacing> pacing_;
  Side client_side_{*this, false};
  Side upstream_side_{*this, true};
  Wake wake_{*this};
  event::Timer timer_;
  std::optional<pump::Pump> to_target_;
  std::optional<pump::Pump> to_client_;
  int attempts_ = 0;
  size_t endpoint_index_ = 0;                // the next endpoint to try
  EndpointStats* endpoint_stats_ = nullptr;  // the connected endpoint's
  int64_t started_nanos_ = 0;
  int64_t attempt_started_nanos_ = 0;
  int64_t last_activity_nanos_ = 0;
  int64_t half_closed_nanos_ = 0;   // when the first direction finished; 0 = not yet
  int64_t started_unix_nanos_ = 0;  // for the access log
  bool source_counted_ = false;     // in the rule's SourceCounts
};

}  // namespace ferry::proxy
