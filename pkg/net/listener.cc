#include "pkg/net/listener.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "pkg/base/log.h"

namespace ferry::net {

Listener::Listener(event::Loop& loop, int fd, base::Fd owned, bool shared,
                   Callbacks& callbacks, metrics::LoopStats& stats)
    : loop_(loop),
      fd_(fd),
      owned_(std::move(owned)),
      shared_(shared),
      callbacks_(callbacks),
      stats_(stats),
      retry_(loop, [this] { Resume(); }) {}

Listener::~Listener() { Stop(); }

int Listener::Start() {
  // Level-triggered: we accept a bounded batch per wake-up for fairness and
  // rely on the next wake-up for the rest.
  uint32_t events = EPOLLIN | (shared_ ? uint32_t{EPOLLEXCLUSIVE} : 0u);
  int err = loop_.Add(fd_, events, this);
  watching_ = err == 0;
  return err;
}

void Listener::Stop() {
  if (stopped_) return;
  stopped_ = true;
  retry_.Disarm();
  if (watching_) loop_.Remove(fd_);
  watching_ = false;
  // Closing refuses new connections at once instead of leaving them queued.
  owned_.Reset();
}

void Listener::Pause() {
  if (watching_) loop_.Remove(fd_);
  watching_ = false;
  paused_ = true;
  retry_.ArmAfter(kRetryDelayNanos);
}

void Listener::Resume() {
  if (stopped_) return;
  paused_ = false;
  if (!watching_) Start();
}

void Listener::OnEvents(uint32_t events) {
  if (stopped_ || paused_) return;
  for (int i = 0; i < kMaxAcceptsPerEvent; ++i) {
    sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int fd = ::accept4(fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      callbacks_.OnAccept(base::Fd(fd), Address::FromSockaddr(reinterpret_cast<sockaddr*>(&ss), len));
      if (stopped_) return;
      continue;
    }
    int err = errno;
    switch (err) {
      case EAGAIN:
      case EINTR:
      case ECONNABORTED:
      case EPROTO:
        if (err == EAGAIN) return;
        continue;
      case EMFILE:
      case ENFILE:
      case ENOMEM:
      case ENOBUFS: {
        metrics::AcceptError kind = err == EMFILE   ? metrics::AcceptError::kEmfile
                                    : err == ENFILE ? metrics::AcceptError::kEnfile
                                                    : metrics::AcceptError::kEnomem;
        stats_.accept_errors[static_cast<int>(kind)].Add(1);
        // One line a second at most: a flood of these would be its own outage.
        if (loop_.now() - last_log_nanos_ >= base::kNanosPerSecond) {
          last_log_nanos_ = loop_.now();
          FERRY_LOG(kWarn, "accept paused", {{"error", std::strerror(err)},
                                             {"retry_ms", kRetryDelayNanos / base::kNanosPerMilli}});
        }
        Pause();
        return;
      }
      case EINVAL:
        // The socket was shut down under us (a drain shuts a shared unix
        // listener for reading): no error, there is nothing left to accept.
        Stop();
        return;
      default:
        stats_.accept_errors[static_cast<int>(metrics::AcceptError::kOther)].Add(1);
        FERRY_LOG(kWarn, "accept failed", {{"error", std::strerror(err)}});
        Pause();
        return;
    }
  }
}

}  // namespace ferry::net
