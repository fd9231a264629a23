#include "tests/testing/target_server.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <unordered_map>

namespace ferry::testing {

TargetServer::TargetServer(const std::string& listen, Handler handler, int io_timeout_ms)
    : handler_(std::move(handler)), io_timeout_ms_(io_timeout_ms) {
  Listening l = Listen(listen);
  if (!l.fd.valid()) {
    error_ = l.err;
    return;
  }
  stop_ = base::Fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  listener_ = std::move(l.fd);
  address_ = l.address;
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

TargetServer::~TargetServer() {
  stopping_ = true;
  if (stop_.valid()) {
    uint64_t one = 1;
    ssize_t r = ::write(stop_.get(), &one, sizeof(one));
    (void)r;
  }
  if (acceptor_.joinable()) acceptor_.join();
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Unblock handlers still reading or writing; they return and close.
    for (int fd : live_) ::shutdown(fd, SHUT_RDWR);
    threads.swap(handlers_);
  }
  for (auto& t : threads) t.join();
  if (address_.is_unix()) ::unlink(address_.unix_path().c_str());
}

void TargetServer::ResetOnReturn(int fd) {
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

bool TargetServer::WaitAccepted(int n, Millis timeout) const {
  return WaitUntil([&] { return accepted_.load() >= n; }, timeout);
}

bool TargetServer::WaitFinished(int n, Millis timeout) const {
  return WaitUntil([&] { return finished_.load() >= n; }, timeout);
}

void TargetServer::AcceptLoop() {
  while (!stopping_) {
    pollfd p[2] = {{listener_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    int n = ::poll(p, 2, 1000);
    if (n <= 0 || (p[1].revents & POLLIN)) continue;
    int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    SetIoTimeouts(fd, io_timeout_ms_);
    accepted_.fetch_add(1);
    std::lock_guard<std::mutex> lock(mu_);
    live_.insert(fd);
    handlers_.emplace_back([this, fd] {
      handler_(fd);
      {
        std::lock_guard<std::mutex> lock(mu_);
        live_.erase(fd);
        ::close(fd);  // under mu_: the destructor never shuts down a reused fd
      }
      finished_.fetch_add(1);
    });
  }
}

struct EchoServer::Conn {
  base::Fd fd;
  std::string pending;  // read, not yet echoed
  size_t offset = 0;
  bool eof = false;
  bool reading = true;
};

EchoServer::EchoServer(const std::string& listen) {
  Listening l = Listen(listen);
  if (!l.fd.valid()) return;
  SetBlocking(l.fd.get(), false);
  epoll_ = base::Fd(::epoll_create1(EPOLL_CLOEXEC));
  stop_ = base::Fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, l.fd.get(), &ev);
  ev.data.u64 = 1;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, stop_.get(), &ev);
  listener_ = std::move(l.fd);
  address_ = l.address;
  thread_ = std::thread([this] { Run(); });
}

EchoServer::~EchoServer() {
  if (stop_.valid()) {
    uint64_t one = 1;
    ssize_t r = ::write(stop_.get(), &one, sizeof(one));
    (void)r;
  }
  if (thread_.joinable()) thread_.join();
  if (address_.is_unix()) ::unlink(address_.unix_path().c_str());
}

void EchoServer::Run() {
  constexpr size_t kMaxPending = 1 << 20;
  std::unordered_map<int, std::unique_ptr<Conn>> conns;
  std::vector<char> buf(64 * 1024);
  auto update = [&](Conn& c) {
    epoll_event ev{};
    ev.events = (c.reading ? uint32_t{EPOLLIN} : 0u) |
                (c.pending.size() > c.offset ? uint32_t{EPOLLOUT} : 0u);
    ev.data.u64 = static_cast<uint64_t>(c.fd.get()) + 2;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
  };
  auto close_conn = [&](int fd) {
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
    conns.erase(fd);
    open_.fetch_sub(1);
  };
  epoll_event events[256];
  for (;;) {
    int n = ::epoll_wait(epoll_.get(), events, 256, 1000);
    for (int i = 0; i < n; ++i) {
      uint64_t tag = events[i].data.u64;
      if (tag == 1) {
        conns.clear();
        open_.store(0);
        return;
      }
      if (tag == 0) {
        for (int k = 0; k < 256; ++k) {
          int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) break;
          auto c = std::make_unique<Conn>();
          c->fd = base::Fd(fd);
          epoll_event ev{};
          ev.events = EPOLLIN;
          ev.data.u64 = static_cast<uint64_t>(fd) + 2;
          ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev);
          conns[fd] = std::move(c);
          accepted_.fetch_add(1);
          open_.fetch_add(1);
        }
        continue;
      }
      int fd = static_cast<int>(tag - 2);
      auto it = conns.find(fd);
      if (it == conns.end()) continue;
      Conn& c = *it->second;
      bool dead = false;
      if (c.reading && (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
        while (c.pending.size() - c.offset < kMaxPending) {
          ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
          if (r > 0) {
            c.pending.append(buf.data(), static_cast<size_t>(r));
            bytes_.fetch_add(static_cast<uint64_t>(r));
            continue;
          }
          if (r == 0) {
            c.eof = true;
            c.reading = false;
          } else if (errno != EAGAIN && errno != EINTR) {
            dead = true;
          }
          break;
        }
      }
      while (!dead && c.pending.size() > c.offset) {
        ssize_t r =
            ::send(fd, c.pending.data() + c.offset, c.pending.size() - c.offset, MSG_NOSIGNAL);
        if (r > 0) {
          c.offset += static_cast<size_t>(r);
          continue;
        }
        if (r < 0 && errno != EAGAIN && errno != EINTR) dead = true;
        break;
      }
      if (c.offset == c.pending.size()) {
        c.pending.clear();
        c.offset = 0;
      } else if (c.offset > (1 << 20)) {
        c.pending.erase(0, c.offset);
        c.offset = 0;
      }
      if (!c.eof) c.reading = c.pending.size() - c.offset < kMaxPending;
      if (dead || (c.eof && c.pending.empty())) {
        close_conn(fd);
        continue;
      }
      update(c);
    }
  }
}

}  // namespace ferry::testing
