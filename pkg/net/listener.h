#pragma once

#include "pkg/base/fd.h"
#include "pkg/event/loop.h"
#include "pkg/metrics/loop_stats.h"
#include "pkg/net/address.h"

namespace ferry::net {

// Listener accepts connections on one listening socket for one loop. A TCP
// rule has one socket per worker (SO_REUSEPORT); a unix socket is shared and
// each loop's Listener borrows it (EPOLLEXCLUSIVE). Lives on its loop's thread.
//
// When accept fails for lack of fds or memory it stops watching the socket for
// kRetryDelay, counts the error, and tries again: it never spins.
class Listener final : public event::Handler {
 public:
  class Callbacks {
   public:
    virtual ~Callbacks() = default;
    // Runs once per accepted connection, on the loop's thread; takes the fd.
    virtual void OnAccept(base::Fd fd, const Address& peer) = 0;
  };

  static constexpr int64_t kRetryDelayNanos = 100 * base::kNanosPerMilli;
  static constexpr int kMaxAcceptsPerEvent = 64;

  // `owned` is the socket when this Listener owns it, or empty when `fd` is
  // borrowed from the caller (a shared unix socket), which keeps it open
  // for as long as this Listener lives.
  Listener(event::Loop& loop, int fd, base::Fd owned, bool shared, Callbacks& callbacks,
           metrics::LoopStats& stats);
  ~Listener() override;

  // Begins accepting. Returns an errno or 0.
  int Start();
  // Stops accepting for good and closes an owned socket, which resets the
  // connections still queued in its backlog.
  void Stop();
  bool paused() const { return paused_; }

  void OnEvents(uint32_t events) override;

 private:
  void Pause();
  void Resume();

  event::Loop& loop_;
  int fd_;
  base::Fd owned_;
  bool shared_;
  Callbacks& callbacks_;
  metrics::LoopStats& stats_;
  event::Timer retry_;
  bool watching_ = false;
  bool paused_ = false;
  bool stopped_ = false;
  int64_t last_log_nanos_ = 0;
};

}  // namespace ferry::net
