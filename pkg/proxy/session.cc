#include "pkg/proxy/session.h"

#include <sys/epoll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <tuple>

#include "absl/time/clock.h"
#include "pkg/base/log.h"
#include "pkg/net/socket.h"
#include "pkg/proxy/proxy_protocol.h"
#include "pkg/proxy/rule_instance.h"

namespace ferry::proxy {
namespace {

// Bytes one direction moves per wake-up before yielding to other sessions.
constexpr size_t kBudgetBytes = 512 * 1024;
constexpr uint32_t kSocketEvents = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
// Events after which a socket must be read to its EOF or error.
constexpr uint32_t kPeerClosed = EPOLLRDHUP | EPOLLHUP | EPOLLERR;

}  // namespace

Session::Session(RuleInstance& owner, base::Fd client, const net::Address& peer)
    : owner_(owner),
      loop_(owner.loop()),
      rule_(owner.rule()),
      stats_(rule_->stats(owner.worker())),
      client_(std::move(client)),
      peer_(peer),
      timer_(owner.loop(), [this] { OnTimer(); }) {}

Session::~Session() { loop_.Unschedule(&wake_); }

void Session::Start() {
  started_nanos_ = loop_.now();
  last_activity_nanos_ = started_nanos_;
  if (rule_->access_log) started_unix_nanos_ = absl::GetCurrentTimeNanos();
  if (loop_.Add(client_.get(), kSocketEvents, &client_side_) != 0) {
    Close(Outcome::kError, false);
    return;
  }
  if (rule_->proxy_accept) {
    // Only a trusted peer (a load balancer) may say who the client is.
    bool trusted = false;
    for (const net::Cidr& cidr : rule_->proxy_trusted) trusted |= cidr.Contains(peer_);
    if (!trusted) {
      FERRY_LOG(kDebug, "PROXY header from an untrusted peer refused",
                {{"rule", rule_->name}, {"peer", peer_.ToString()}});
      Close(Outcome::kProxyProtocol, false);
      return;
    }
    state_ = State::kHeader;
    ArmTimer();
    ReadProxyHeader(false);
    return;
  }
  Admit();
}

void Session::ReadProxyHeader(bool peer_closed) {
  // Peek, so that only the header is taken and the bytes after it stay for
  // the pump; a new edge announces more bytes while the header is partial.
  char buf[kMaxProxyHeader];
  ssize_t n;
  do {
    n = ::recv(client_.get(), buf, sizeof(buf), MSG_PEEK);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno != EAGAIN) Close(Outcome::kError, false);
    return;
  }
  if (n == 0) {
    FERRY_LOG(kDebug, "client closed before its PROXY header", {{"rule", rule_->name}});
    Close(Outcome::kProxyProtocol, false);
    return;
  }
  ProxyParse parse = ParseProxyHeader(absl::string_view(buf, static_cast<size_t>(n)));
  if (parse.state == ProxyParse::State::kNeedMore) {
    if (peer_closed) {
      FERRY_LOG(kDebug, "client closed in its PROXY header", {{"rule", rule_->name}});
      Close(Outcome::kProxyProtocol, false);
    }
    return;
  }
  if (parse.state == ProxyParse::State::kError) {
    FERRY_LOG(kDebug, "bad PROXY header",
              {{"rule", rule_->name}, {"peer", peer_.ToString()}, {"error", parse.error}});
    Close(Outcome::kProxyProtocol, false);
    return;
  }
  // The peeked header is in the socket: take exactly it.
  if (::recv(client_.get(), buf, parse.consumed, 0) != static_cast<ssize_t>(parse.consumed)) {
    Close(Outcome::kError, false);
    return;
  }
  if (!parse.header.local) {
    peer_ = parse.header.source;
    declared_dst_ = std::make_unique<net::Address>(parse.header.destination);
  }
  Admit();
}

void Session::Admit() {
  if (rule_->proxy_accept && !rule_->acl.Allows(peer_)) {
    FERRY_LOG(kDebug, "connection denied", {{"rule", rule_->name}, {"client", peer_.ToString()}});
    Close(Outcome::kDenied, false);
    return;
  }
  if (rule_->max_connections_per_source > 0) {
    if (!rule_->counters->sources.TryAdd(peer_, rule_->max_connections_per_source)) {
      FERRY_LOG(kDebug, "connection over the per-source limit",
                {{"rule", rule_->name}, {"client", peer_.HostString()}});
      Close(Outcome::kLimit, false);
      return;
    }
    source_counted_ = true;
  }
  if (rule_->redirect) {
    absl::StatusOr<net::Address> local = net::LocalAddress(client_.get());
    absl::StatusOr<net::Address> dst =
        local.ok() ? net::OriginalDestination(client_.get(), *local) : local.status();
    if (!dst.ok() || *dst == *local) {
      // Not redirected: a client that connected to ferry itself. Relaying
      // to the original destination would loop.
      FERRY_LOG(kDebug, "connection was not redirected",
                {{"rule", rule_->name}, {"client", peer_.ToString()}});
      Close(Outcome::kNoEndpoint, false);
      return;
    }
    net::Address target = dst->Unmapped();
    bool allowed = false;
    for (const net::Address& e : rule_->endpoints) allowed |= e.Unmapped() == target;
    for (const net::Cidr& cidr : rule_->allow_targets) allowed |= cidr.Contains(target);
    if (!allowed) {
      // Never an open relay: only the destinations the rule names.
      FERRY_LOG(kInfo, "redirected destination not allowed",
                {{"rule", rule_->name},
                 {"client", peer_.ToString()},
                 {"destination", target.ToString()}});
      Close(Outcome::kDenied, false);
      return;
    }
    redirect_target_ = std::make_unique<net::Address>(target);
  } else if (rule_->endpoints.empty()) {
    Close(Outcome::kNoEndpoint, false);
    return;
  }
  if (rule_->delay_nanos > 0) {
    // tcppipe -w: a client that gives up within the delay never reaches the target.
    state_ = State::kDelaying;
    ArmTimer();
    return;
  }
  state_ = State::kConnecting;
  Connect();
}

const net::Address& Session::Endpoint() const {
  if (redirect_target_) return *redirect_target_;
  return rule_->endpoints[(endpoint_index_ - 1) % rule_->endpoints.size()];
}

void Session::Connect() {
  while (attempts_ < rule_->connect_attempts) {
    ++attempts_;
    ++endpoint_index_;
    const net::Address& target = Endpoint();
    attempt_started_nanos_ = loop_.now();
    const net::Address* source = nullptr;
    for (const net::Address& s : rule_->source_addresses) {
      if (s.family() == target.family()) source = &s;
    }
    int err = net::StartConnect(target, source, &upstream_);
    if (err == 0 || err == EINPROGRESS) {
      if (loop_.Add(upstream_.get(), kSocketEvents, &upstream_side_) != 0) {
        Close(Outcome::kError, false);
        return;
      }
      if (err == 0) {
        StartRelay();
      } else {
        ArmTimer();
      }
      return;
    }
    FERRY_LOG(
        kDebug, "connect failed",
        {{"rule", rule_->name}, {"endpoint", target.ToString()}, {"error", std::strerror(err)}});
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) break;
  }
  Close(Outcome::kConnectFailed, false);
}

void Session::ConnectFailed(int err) {
  FERRY_LOG(
      kDebug, "connect failed",
      {{"rule", rule_->name}, {"endpoint", Endpoint().ToString()}, {"error", std::strerror(err)}});
  upstream_.Reset();  // close() takes it out of the epoll set
  Connect();
}

// The counters of the endpoint a redirected connection reached: the
// endpoint it is, or the allow_targets CIDR it is in.
static EndpointStats& RedirectStats(const Rule& rule, const net::Address& target, int worker) {
  for (size_t i = 0; i < rule.endpoints.size(); ++i) {
    if (rule.endpoints[i].Unmapped() == target) return rule.endpoint_stats(i, worker);
  }
  for (size_t i = 0; i < rule.allow_targets.size(); ++i) {
    if (rule.allow_targets[i].Contains(target))
      return rule.redirect_counters[i]->per_worker[worker];
  }
  return rule.redirect_counters.front()->per_worker[worker];  // Admit() checked
}

void Session::StartRelay() {
  state_ = State::kRelaying;
  stats_.connect_duration.Observe(loop_.now() - attempt_started_nanos_);
  endpoint_stats_ = redirect_target_
                        ? &RedirectStats(*rule_, *redirect_target_, owner_.worker())
                        : &rule_->endpoint_stats((endpoint_index_ - 1) % rule_->endpoints.size(),
                                                 owner_.worker());
  endpoint_stats_->active.Add(1);
  net::SetNoDelay(upstream_.get());
  net::SetKeepAlive(upstream_.get(), rule_->keepalive);
  metrics::Gauge* buffered = &stats_.buffered;
  to_target_.emplace(owner_.pumps(), client_.get(), upstream_.get(), buffered);
  to_client_.emplace(owner_.pumps(), upstream_.get(), client_.get(), buffered);
  if (rule_->proxy_send) {
    // The target hears who the client is before anything else.
    std::string prefix;
    // The address the client connected to: declared, or this socket's
    // (a wildcard listener's connections each have their own).
    net::Address dst = peer_;
    if (declared_dst_) {
      dst = *declared_dst_;
    } else if (absl::StatusOr<net::Address> local = net::LocalAddress(client_.get()); local.ok()) {
      dst = *local;
    }
    AppendProxyHeader(*rule_->proxy_send, peer_, dst, &prefix);
    prefix += rule_->insert;
    to_target_->Prefix(prefix);
  } else {
    to_target_->Prefix(rule_->insert);  // the target hears the insert first
  }
  if (rule_->lazy_close) {
    to_target_->KeepDstOpen();
    to_client_->KeepDstOpen();
  }
  if (rule_->connection_rate > 0 || rule_->rule_rate[0]) {
    pacing_ = std::make_unique<Pacing>(*this);
    for (auto [pacer, pump, dir] : {std::tuple{&pacing_->to_target, &*to_target_, 0},
                                    std::tuple{&pacing_->to_client, &*to_client_, 1}}) {
      if (rule_->connection_rate > 0) {
        pacer->connection.emplace(rule_->connection_rate,
                                  pump::TokenBucket::DefaultBurst(rule_->connection_rate),
                                  loop_.now());
      }
      pacer->rule = rule_->rule_rate[dir].get();
      pump->SetPacer(pacer);
    }
  }
  last_activity_nanos_ = loop_.now();
  ArmTimer();
  Drive();
}

void Session::Side::OnEvents(uint32_t events) {
  if (upstream_) {
    session_.OnUpstreamEvents(events);
  } else {
    session_.OnClientEvents(events);
  }
}

void Session::OnClientEvents(uint32_t events) {
  if (state_ == State::kClosed) return;
  if (state_ == State::kHeader) {
    if (events & EPOLLERR) {
      Close(Outcome::kError, false);
    } else if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) {
      ReadProxyHeader((events & kPeerClosed) != 0);
    }
    return;
  }
  if (state_ == State::kConnecting || state_ == State::kDelaying) {
    // A client that resets or vanishes while we connect ends the session; a
    // client that only half-closed still gets its reply.
    if (events & EPOLLERR) Close(Outcome::kError, false);
    return;
  }
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    to_target_->SetReadable((events & kPeerClosed) != 0);
  }
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) to_client_->SetWritable();
  Drive();
}

void Session::OnUpstreamEvents(uint32_t events) {
  if (state_ == State::kClosed) return;
  if (state_ == State::kConnecting) {
    if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) return;
    int err = net::SocketError(upstream_.get());
    if (err == 0 && (events & EPOLLERR) == 0) {
      StartRelay();
    } else {
      ConnectFailed(err != 0 ? err : ECONNREFUSED);
    }
    return;
  }
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    to_client_->SetReadable((events & kPeerClosed) != 0);
  }
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) to_target_->SetWritable();
  Drive();
}

void Session::Drive() {
  if (state_ != State::kRelaying) return;
  uint64_t to_target_before = to_target_->bytes();
  uint64_t to_client_before = to_client_->bytes();
  int64_t now = loop_.now();
  pump::Pump::State up = to_target_->Run(kBudgetBytes, now);
  pump::Pump::State down = to_client_->Run(kBudgetBytes, now);
  uint64_t to_target = to_target_->bytes() - to_target_before;
  uint64_t to_client = to_client_->bytes() - to_client_before;
  if (to_target > 0) endpoint_stats_->bytes_to_target.Add(to_target);
  if (to_client > 0) endpoint_stats_->bytes_to_client.Add(to_client);
  if (to_target + to_client > 0) last_activity_nanos_ = loop_.now();

  if (up == pump::Pump::State::kError || down == pump::Pump::State::kError) {
    int err = up == pump::Pump::State::kError ? to_target_->error() : to_client_->error();
    FERRY_LOG(kDebug, "connection reset", {{"rule", rule_->name}, {"error", std::strerror(err)}});
    // close: lazy ends with a failed write once a side has closed: that is
    // its normal end, not an error.
    bool lazy_end = rule_->lazy_close && half_closed_nanos_ != 0;
    Close(lazy_end ? Outcome::kOk : Outcome::kError, /*reset=*/true);
    return;
  }
  if (up == pump::Pump::State::kDone && down == pump::Pump::State::kDone) {
    Close(Outcome::kOk, false);
    return;
  }
  if ((up == pump::Pump::State::kDone || down == pump::Pump::State::kDone) &&
      half_closed_nanos_ == 0) {
    half_closed_nanos_ = loop_.now();
    ArmTimer();
  }
  if (to_target_->more_work() || to_client_->more_work()) loop_.Schedule(&wake_);
  if (pacing_) {
    int64_t a = to_target_->paced_until(), b = to_client_->paced_until();
    int64_t wake = a == 0 ? b : b == 0 ? a : std::min(a, b);
    if (wake != 0) {
      pacing_->timer.ArmAt(wake);
    } else {
      pacing_->timer.Disarm();
    }
  }
}

void Session::ArmTimer() {
  int64_t deadline = INT64_MAX;
  if (state_ == State::kHeader) {
    deadline = started_nanos_ + rule_->proxy_timeout_nanos;
  } else if (state_ == State::kDelaying) {
    deadline = started_nanos_ + rule_->delay_nanos;
  } else if (state_ == State::kConnecting) {
    deadline = attempt_started_nanos_ + rule_->connect_timeout_nanos;
  } else {
    if (rule_->idle_timeout_nanos > 0) {
      deadline = std::min(deadline, last_activity_nanos_ + rule_->idle_timeout_nanos);
    }
    if (rule_->half_close_timeout_nanos > 0 && half_closed_nanos_ != 0) {
      deadline = std::min(deadline, HalfCloseIdleSince() + rule_->half_close_timeout_nanos);
    }
  }
  if (rule_->max_lifetime_nanos > 0) {
    deadline = std::min(deadline, started_nanos_ + rule_->max_lifetime_nanos);
  }
  if (deadline == INT64_MAX) {
    timer_.Disarm();
  } else {
    timer_.ArmAt(deadline);
  }
}

void Session::OnTimer() {
  if (state_ == State::kClosed) return;
  int64_t now = loop_.now();
  if (rule_->max_lifetime_nanos > 0 && now >= started_nanos_ + rule_->max_lifetime_nanos) {
    Close(Outcome::kTimeout, /*reset=*/true);
    return;
  }
  if (state_ == State::kHeader) {
    if (now >= started_nanos_ + rule_->proxy_timeout_nanos) {
      FERRY_LOG(kDebug, "no PROXY header in time", {{"rule", rule_->name}});
      Close(Outcome::kProxyProtocol, false);
      return;
    }
  } else if (state_ == State::kDelaying) {
    if (now >= started_nanos_ + rule_->delay_nanos) {
      state_ = State::kConnecting;
      Connect();
      return;
    }
  } else if (state_ == State::kConnecting) {
    if (now >= attempt_started_nanos_ + rule_->connect_timeout_nanos) {
      ConnectFailed(ETIMEDOUT);
      return;
    }
  } else {
    bool idle =
        rule_->idle_timeout_nanos > 0 && now >= last_activity_nanos_ + rule_->idle_timeout_nanos;
    bool half = rule_->half_close_timeout_nanos > 0 && half_closed_nanos_ != 0 &&
                now >= HalfCloseIdleSince() + rule_->half_close_timeout_nanos;
    if (idle || half) {
      FERRY_LOG(kDebug, idle ? "idle timeout" : "half-close timeout", {{"rule", rule_->name}});
      Close(Outcome::kTimeout, /*reset=*/false);
      return;
    }
  }
  ArmTimer();  // activity moved the deadline: sleep until the new one
}

void Session::LogAccess(Outcome outcome) {
  if (!rule_->access_log) return;
  AccessRecord r;
  r.start_unix_nanos = started_unix_nanos_;
  r.duration_nanos = loop_.now() - started_nanos_;
  r.rule = rule_->name;
  r.client = &peer_;
  r.listen = &owner_.listen_address();
  r.endpoint = endpoint_stats_ != nullptr ? &Endpoint() : nullptr;
  r.bytes_from_client = to_target_ ? to_target_->bytes() : 0;
  r.bytes_to_client = to_client_ ? to_client_->bytes() : 0;
  r.outcome = OutcomeName(outcome);
  rule_->access_log->Write(r);
}

void Session::Close(Outcome outcome, bool reset) {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  timer_.Disarm();
  loop_.Unschedule(&wake_);
  LogAccess(outcome);
  if (source_counted_) rule_->counters->sources.Remove(peer_);
  to_target_.reset();  // the pumps borrow the fds and pacers: destroy them first
  to_client_.reset();
  pacing_.reset();
  for (base::Fd* fd : {&client_, &upstream_}) {
    if (!fd->valid()) continue;
    // No epoll_ctl(DEL): the fd is never duplicated, so close() removes it
    // from the epoll set, one syscall per socket cheaper.
    if (reset) net::SetLingerZero(fd->get());
    fd->Reset();
  }
  if (endpoint_stats_ != nullptr) endpoint_stats_->active.Add(-1);
  stats_.connections[static_cast<int>(outcome)].Add(1);
  owner_.Release(this, *rule_);
}

}  // namespace ferry::proxy
