#pragma once

// Target servers for the relay to connect to, each on its own thread(s),
// bound to port 0 (IPv4, IPv6) or a unix path. Destroying one stops it and
// joins every thread it started; nothing it runs can block without a bound.

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "pkg/base/fd.h"
#include "pkg/net/address.h"
#include "tests/testing/sockets.h"

namespace ferry::testing {

// Runs `handler(fd)` on a thread of its own for each accepted connection.
// The fd is blocking with I/O timeouts of `io_timeout_ms`; the server closes
// it when the handler returns (set SO_LINGER 0 first to make that an RST, or
// use ResetOnReturn()). The destructor shuts down the sockets of handlers
// still running, so they return, and joins them.
class TargetServer {
 public:
  using Handler = std::function<void(int fd)>;

  // `listen`: "127.0.0.1:0", "[::1]:0" or "unix:/path". Check ok() after.
  TargetServer(const std::string& listen, Handler handler, int io_timeout_ms = kIoTimeoutMs);
  ~TargetServer();
  TargetServer(const TargetServer&) = delete;
  TargetServer& operator=(const TargetServer&) = delete;

  bool ok() const { return listener_.valid(); }
  int error() const { return error_; }
  const net::Address& address() const { return address_; }
  // What a config's `targets` says for this server.
  std::string target() const { return address_.ToString(); }
  int accepted() const { return accepted_.load(); }
  int finished() const { return finished_.load(); }
  bool WaitAccepted(int n, Millis timeout) const;
  bool WaitFinished(int n, Millis timeout) const;

  // Makes the close after `fd`'s handler returns an RST. Call from the handler.
  static void ResetOnReturn(int fd);

 private:
  void AcceptLoop();

  Handler handler_;
  int io_timeout_ms_;
  int error_ = 0;
  base::Fd listener_;
  base::Fd stop_;  // eventfd
  net::Address address_;
  std::atomic<int> accepted_{0};
  std::atomic<int> finished_{0};
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::set<int> live_;                 // fds whose handler runs; guarded by mu_
  std::vector<std::thread> handlers_;  // guarded by mu_
};

// An echo server for many connections on one epoll thread: what a connection
// sends comes back, in order; its EOF is answered with the rest of the echo
// and then a close. Reading stops while 1 MiB waits to go back, so TCP pushes
// back on a fast sender.
class EchoServer {
 public:
  explicit EchoServer(const std::string& listen);
  ~EchoServer();
  EchoServer(const EchoServer&) = delete;
  EchoServer& operator=(const EchoServer&) = delete;

  bool ok() const { return listener_.valid(); }
  const net::Address& address() const { return address_; }
  std::string target() const { return address_.ToString(); }
  int accepted() const { return accepted_.load(); }
  int open() const { return open_.load(); }
  uint64_t bytes() const { return bytes_.load(); }

 private:
  struct Conn;
  void Run();

  base::Fd listener_;
  base::Fd epoll_;
  base::Fd stop_;
  net::Address address_;
  std::atomic<int> accepted_{0};
  std::atomic<int> open_{0};
  std::atomic<uint64_t> bytes_{0};
  std::thread thread_;
};

}  // namespace ferry::testing
