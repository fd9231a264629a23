#include "tests/testing/sockets.h"

#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"

namespace ferry::testing {

int64_t NowMs() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1'000'000;
}

int Deadline::RemainingMs() const {
  int64_t left = end_ms_ - NowMs();
  return left <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left, 1 << 30));
}

bool WaitUntil(const std::function<bool()>& cond, Millis timeout, Millis poll) {
  Deadline deadline(timeout);
  for (;;) {
    if (cond()) return true;
    if (deadline.Expired()) return cond();
    std::this_thread::sleep_for(std::min<Millis>(poll, Millis(deadline.RemainingMs() + 1)));
  }
}

void SetIoTimeouts(int fd, int timeout_ms) {
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

void SetBlocking(int fd, bool blocking) {
  int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, blocking ? (flags & ~O_NONBLOCK) : (flags | O_NONBLOCK));
}

Connected Connect(const net::Address& address, int connect_timeout_ms, int io_timeout_ms) {
  Connected c;
  base::Fd fd(::socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    c.err = errno;
    return c;
  }
  if (::connect(fd.get(), address.sa(), address.len()) != 0) {
    if (errno != EINPROGRESS) {
      c.err = errno;
      return c;
    }
    pollfd p{fd.get(), POLLOUT, 0};
    int n;
    do n = ::poll(&p, 1, connect_timeout_ms);
    while (n < 0 && errno == EINTR);
    if (n == 0) {
      c.err = ETIMEDOUT;
      return c;
    }
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      c.err = err;
      return c;
    }
  }
  SetBlocking(fd.get(), true);
  SetIoTimeouts(fd.get(), io_timeout_ms);
  if (address.is_ip()) {
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  c.fd = std::move(fd);
  return c;
}

Listening Listen(const std::string& literal, int backlog) {
  Listening l;
  auto address = net::Address::ParseLiteral(literal);
  if (!address.ok()) {
    l.err = EINVAL;
    return l;
  }
  base::Fd fd(::socket(address->family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    l.err = errno;
    return l;
  }
  if (address->is_ip()) {
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  } else {
    ::unlink(address->unix_path().c_str());
  }
  if (::bind(fd.get(), address->sa(), address->len()) != 0 || ::listen(fd.get(), backlog) != 0) {
    l.err = errno;
    return l;
  }
  sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
  l.address = address->is_unix()
                  ? *address
                  : net::Address::FromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
  l.fd = std::move(fd);
  return l;
}

bool SendAll(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

bool SendAll(int fd, absl::string_view data) { return SendAll(fd, data.data(), data.size()); }

namespace {

ReadResult ReadUpTo(int fd, size_t n, std::string* out, bool stop_at_n) {
  ReadResult res;
  char buf[64 * 1024];
  while (!stop_at_n || res.bytes < n) {
    size_t want = sizeof(buf);
    if (res.bytes + want > n) want = n - res.bytes;
    if (want == 0) break;
    ssize_t r = ::recv(fd, buf, want, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      res.err = errno == EWOULDBLOCK ? EAGAIN : errno;
      return res;
    }
    if (r == 0) {
      res.eof = true;
      return res;
    }
    if (out != nullptr) out->append(buf, static_cast<size_t>(r));
    res.bytes += static_cast<size_t>(r);
  }
  return res;
}

}  // namespace

ReadResult ReadExactly(int fd, size_t n, std::string* out) { return ReadUpTo(fd, n, out, true); }

ReadResult ReadToEof(int fd, std::string* out, size_t max) { return ReadUpTo(fd, max, out, false); }

std::string EchoRoundTrip(int fd, absl::string_view message) {
  if (!SendAll(fd, message)) return absl::StrCat("send: ", std::strerror(errno));
  std::string got;
  ReadResult r = ReadExactly(fd, message.size(), &got);
  if (r.bytes != message.size()) {
    return absl::StrCat("read ", r.bytes, " of ", message.size(), " bytes, then ",
                        r.eof ? "EOF" : std::strerror(r.err));
  }
  if (got != message) return "echo differs from what was sent";
  return "";
}

bool WaitReadable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  Deadline deadline{Millis(timeout_ms)};
  for (;;) {
    int n = ::poll(&p, 1, deadline.RemainingMs());
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) return false;
  }
}

PeerState ProbePeer(int fd, int timeout_ms) {
  if (!WaitReadable(fd, timeout_ms)) return PeerState::kTimeout;
  char c;
  ssize_t r;
  do r = ::recv(fd, &c, 1, MSG_DONTWAIT);
  while (r < 0 && errno == EINTR);
  if (r > 0) return PeerState::kData;
  if (r == 0) return PeerState::kEof;
  if (errno == ECONNRESET) return PeerState::kReset;
  if (errno == EAGAIN || errno == EWOULDBLOCK) return PeerState::kTimeout;
  return PeerState::kOtherError;
}

const char* PeerStateName(PeerState s) {
  switch (s) {
    case PeerState::kData:
      return "data";
    case PeerState::kEof:
      return "eof";
    case PeerState::kReset:
      return "reset";
    case PeerState::kOtherError:
      return "other error";
    case PeerState::kTimeout:
      return "timeout (still open)";
  }
  return "?";
}

void ResetAndClose(base::Fd& fd) {
  if (!fd.valid()) return;
  linger l{1, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  fd.Reset();
}

bool HaveIpv6Loopback() {
  Listening l = Listen("[::1]:0", 1);
  return l.fd.valid();
}

TempDir::TempDir() {
  const char* base = ::getenv("TMPDIR");
  std::string tmpl =
      absl::StrCat(base != nullptr && *base != '\0' ? base : "/tmp", "/ferry-it-XXXXXX");
  if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  ::nftw(
      path_.c_str(), [](const char* p, const struct stat*, int, FTW*) { return ::remove(p); }, 16,
      FTW_DEPTH | FTW_PHYS);
}

std::string TempDir::File(absl::string_view name) const { return absl::StrCat(path_, "/", name); }

std::string TempDir::Write(absl::string_view name, absl::string_view content) const {
  std::string p = File(name);
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(content.data(), static_cast<std::streamsize>(content.size()));
  return p;
}

}  // namespace ferry::testing
