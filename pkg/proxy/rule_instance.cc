#include "pkg/proxy/rule_instance.h"

#include "absl/time/clock.h"
#include "pkg/base/log.h"
#include "pkg/net/socket.h"
#include "pkg/proxy/session.h"

namespace ferry::proxy {

const char* OutcomeName(Outcome outcome) {
  switch (outcome) {
    case Outcome::kOk:
      return "ok";
    case Outcome::kTimeout:
      return "timeout";
    case Outcome::kDenied:
      return "denied";
    case Outcome::kLimit:
      return "limit";
    case Outcome::kProxyProtocol:
      return "proxy_protocol";
    case Outcome::kNoEndpoint:
      return "no_endpoint";
    case Outcome::kConnectFailed:
      return "connect_failed";
    case Outcome::kError:
      return "error";
    case Outcome::kCount:
      break;
  }
  return "error";
}

RuleInstance::RuleInstance(event::Loop& loop, pump::Context& pumps, int worker,
                           std::shared_ptr<const Rule> rule, std::string key)
    : loop_(loop), pumps_(pumps), worker_(worker), rule_(std::move(rule)), key_(std::move(key)) {}

RuleInstance::~RuleInstance() {
  StopAccepting();
  CloseAll(Outcome::kError);
}

int RuleInstance::Listen(int fd, base::Fd owned, bool shared) {
  if (auto local = net::LocalAddress(fd); local.ok()) listen_address_ = *local;
  listener_.emplace(loop_, fd, std::move(owned), shared, *this, pumps_.stats);
  return listener_->Start();
}

void RuleInstance::StopAccepting() {
  if (listener_) listener_->Stop();
}

void RuleInstance::CloseAll(Outcome outcome) {
  while (head_ != nullptr) head_->Close(outcome, /*reset=*/true);
}

void RuleInstance::Refused(Outcome outcome, const net::Address& peer) {
  const Rule& rule = *rule_;
  rule.stats(worker_).connections[static_cast<int>(outcome)].Add(1);
  if (!rule.access_log) return;
  AccessRecord r;
  r.start_unix_nanos = absl::GetCurrentTimeNanos();
  r.rule = rule.name;
  r.client = &peer;
  r.listen = &listen_address_;
  r.outcome = OutcomeName(outcome);
  rule.access_log->Write(r);
}

void RuleInstance::OnAccept(base::Fd fd, const net::Address& peer) {
  const Rule& rule = *rule_;
  RuleStats& stats = rule.stats(worker_);
  // With PROXY protocol the client is the header's: the session checks it.
  if (!rule.proxy_accept && !rule.acl.Allows(peer)) {
    Refused(Outcome::kDenied, peer);
    FERRY_LOG(kDebug, "connection denied", {{"rule", rule.name}, {"client", peer.ToString()}});
    return;  // fd closes here
  }
  if (rule.max_connections > 0) {
    int64_t now_active = rule.counters->active.fetch_add(1, std::memory_order_relaxed) + 1;
    if (now_active > static_cast<int64_t>(rule.max_connections)) {
      rule.counters->active.fetch_sub(1, std::memory_order_relaxed);
      Refused(Outcome::kLimit, peer);
      FERRY_LOG(kDebug, "connection over limit", {{"rule", rule.name}});
      return;
    }
  }
  // TCP_NODELAY comes from the listening socket (accept() inherits it).
  net::SetKeepAlive(fd.get(), rule.keepalive);
  auto* session = new Session(*this, std::move(fd), peer);
  session->next = head_;
  if (head_ != nullptr) head_->prev = session;
  head_ = session;
  ++session_count_;
  stats.active.Add(1);
  session->Start();
}

void RuleInstance::Release(Session* session, const Rule& rule) {
  if (session->prev != nullptr) session->prev->next = session->next;
  if (session->next != nullptr) session->next->prev = session->prev;
  if (head_ == session) head_ = session->next;
  session->prev = session->next = nullptr;
  --session_count_;
  rule.stats(worker_).active.Add(-1);
  if (rule.max_connections > 0) rule.counters->active.fetch_sub(1, std::memory_order_relaxed);
  loop_.DeferDelete(std::unique_ptr<event::Deletable>(session));
}

}  // namespace ferry::proxy
