#include "pkg/proxy/session.h"

#include <sys/epoll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "pkg/base/log.h"
#include "pkg/net/socket.h"
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
  if (loop_.Add(client_.get(), kSocketEvents, &client_side_) != 0) {
    Close(Outcome::kError, false);
    return;
  }
  if (rule_->endpoints.empty()) {
    Close(Outcome::kNoEndpoint, false);
    return;
  }
  if (rule_->delay_nanos > 0) {
    // tcppipe -w: a client that gives up within the delay never reaches the target.
    state_ = State::kDelaying;
    ArmTimer();
    return;
  }
  Connect();
}

void Session::Connect() {
  const auto& endpoints = rule_->endpoints;
  while (attempts_ < rule_->connect_attempts) {
    const net::Address& target = endpoints[endpoint_index_ % endpoints.size()];
    ++attempts_;
    ++endpoint_index_;
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
    FERRY_LOG(kDebug, "connect failed",
              {{"rule", rule_->name}, {"endpoint", target.ToString()}, {"error", std::strerror(err)}});
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) break;
  }
  Close(Outcome::kConnectFailed, false);
}

void Session::ConnectFailed(int err) {
  FERRY_LOG(kDebug, "connect failed",
            {{"rule", rule_->name},
             {"endpoint", rule_->endpoints[(endpoint_index_ - 1) % rule_->endpoints.size()].ToString()},
             {"error", std::strerror(err)}});
  upstream_.Reset();  // close() takes it out of the epoll set
  Connect();
}

void Session::StartRelay() {
  state_ = State::kRelaying;
  stats_.connect_duration.Observe(loop_.now() - attempt_started_nanos_);
  endpoint_stats_ =
      &rule_->endpoint_stats((endpoint_index_ - 1) % rule_->endpoints.size(), owner_.worker());
  endpoint_stats_->active.Add(1);
  net::SetNoDelay(upstream_.get());
  net::SetKeepAlive(upstream_.get(), rule_->keepalive);
  metrics::Gauge* buffered = &stats_.buffered;
  to_target_.emplace(owner_.pumps(), client_.get(), upstream_.get(), buffered);
  to_client_.emplace(owner_.pumps(), upstream_.get(), client_.get(), buffered);
  to_target_->Prefix(rule_->insert);  // the target hears the insert first
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
  pump::Pump::State up = to_target_->Run(kBudgetBytes);
  pump::Pump::State down = to_client_->Run(kBudgetBytes);
  uint64_t to_target = to_target_->bytes() - to_target_before;
  uint64_t to_client = to_client_->bytes() - to_client_before;
  if (to_target > 0) endpoint_stats_->bytes_to_target.Add(to_target);
  if (to_client > 0) endpoint_stats_->bytes_to_client.Add(to_client);
  if (to_target + to_client > 0) last_activity_nanos_ = loop_.now();

  if (up == pump::Pump::State::kError || down == pump::Pump::State::kError) {
    int err = up == pump::Pump::State::kError ? to_target_->error() : to_client_->error();
    FERRY_LOG(kDebug, "connection reset",
              {{"rule", rule_->name}, {"error", std::strerror(err)}});
    Close(Outcome::kError, /*reset=*/true);
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
}

void Session::ArmTimer() {
  int64_t deadline = INT64_MAX;
  if (state_ == State::kDelaying) {
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
  if (state_ == State::kDelaying) {
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
    bool idle = rule_->idle_timeout_nanos > 0 &&
                now >= last_activity_nanos_ + rule_->idle_timeout_nanos;
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

void Session::Close(Outcome outcome, bool reset) {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  timer_.Disarm();
  loop_.Unschedule(&wake_);
  to_target_.reset();  // the pumps borrow the fds: destroy them first
  to_client_.reset();
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
