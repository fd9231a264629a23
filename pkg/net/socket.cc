#include "pkg/net/socket.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "pkg/base/status.h"

namespace ferry::net {
namespace {

absl::Status Errno(absl::string_view what, const Address& address, int err) {
  std::string msg = absl::StrCat(what, " ", address.ToString(), ": ", std::strerror(err));
  if (err == EADDRINUSE || err == EACCES || err == EADDRNOTAVAIL) {
    return absl::FailedPreconditionError(msg);
  }
  return absl::UnavailableError(msg);
}

void SetInt(int fd, int level, int name, int value) {
  ::setsockopt(fd, level, name, &value, sizeof(value));
}

// A unix socket file whose listener is gone refuses connections: remove it so
// a restart can bind. A live listener answers, and we must not steal its path.
void RemoveStaleUnixSocket(const Address& address) {
  std::string path = address.unix_path();
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return;
  base::Fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!probe.valid()) return;
  if (::connect(probe.get(), address.sa(), address.len()) != 0 && errno == ECONNREFUSED) {
    ::unlink(path.c_str());
  }
}

}  // namespace

absl::StatusOr<base::Fd> ListenSocket(const Address& address, bool reuse_port, int backlog,
                                      bool listen) {
  base::Fd fd(::socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Errno("socket for", address, errno);
  if (address.is_unix()) {
    RemoveStaleUnixSocket(address);
  } else {
    SetInt(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1);
    if (reuse_port) SetInt(fd.get(), SOL_SOCKET, SO_REUSEPORT, 1);
    if (address.family() == AF_INET6) SetInt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, 0);
    // Accepted sockets inherit it: no setsockopt per connection.
    SetInt(fd.get(), IPPROTO_TCP, TCP_NODELAY, 1);
  }
  if (::bind(fd.get(), address.sa(), address.len()) != 0) return Errno("bind", address, errno);
  if (listen) FERRY_RETURN_IF_ERROR(StartListening(fd.get(), address, backlog));
  return fd;
}

absl::Status StartListening(int fd, const Address& address, int backlog) {
  if (::listen(fd, backlog) != 0) return Errno("listen", address, errno);
  return absl::OkStatus();
}

int StartConnect(const Address& target, const Address* source, base::Fd* out) {
  base::Fd fd(::socket(target.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return errno;
  if (source != nullptr && source->family() == target.family()) {
    SetInt(fd.get(), SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1);
    if (::bind(fd.get(), source->sa(), source->len()) != 0) return errno;
  }
  int rc = ::connect(fd.get(), target.sa(), target.len());
  int err = rc == 0 ? 0 : errno;
  if (rc == 0 || err == EINPROGRESS) {
    *out = std::move(fd);
    return err;
  }
  // A full unix listen backlog answers EAGAIN; treat it like a refused TCP connect.
  return err == EAGAIN ? ECONNREFUSED : err;
}

int SocketError(int fd) {
  int err = 0;
  socklen_t len = sizeof(err);
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
  return err;
}

void SetNoDelay(int fd) { SetInt(fd, IPPROTO_TCP, TCP_NODELAY, 1); }

void SetKeepAlive(int fd, const KeepAlive& keepalive) {
  if (keepalive.idle_seconds <= 0) return;
  SetInt(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
  SetInt(fd, IPPROTO_TCP, TCP_KEEPIDLE, keepalive.idle_seconds);
  if (keepalive.interval_seconds > 0) {
    SetInt(fd, IPPROTO_TCP, TCP_KEEPINTVL, keepalive.interval_seconds);
  }
  if (keepalive.count > 0) SetInt(fd, IPPROTO_TCP, TCP_KEEPCNT, keepalive.count);
}

void SetLingerZero(int fd) {
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

absl::StatusOr<Address> LocalAddress(int fd) {
  sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return absl::UnavailableError(absl::StrCat("getsockname: ", std::strerror(errno)));
  }
  return Address::FromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

absl::StatusOr<Address> OriginalDestination(int fd, const Address& local) {
  // From <linux/netfilter_ipv4.h> and <linux/netfilter_ipv6/ip6_tables.h>,
  // whose headers clash with glibc's.
  constexpr int kSoOriginalDst = 80;
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (!local.is_ip()) return absl::NotFoundError("not an IP connection");
  // An IPv4 client of a dual-stack socket has IPv4 conntrack state.
  int level = local.Unmapped().family() == AF_INET ? IPPROTO_IP : IPPROTO_IPV6;
  if (::getsockopt(fd, level, kSoOriginalDst, &ss, &len) != 0) {
    return absl::NotFoundError(absl::StrCat("SO_ORIGINAL_DST: ", std::strerror(errno)));
  }
  // The kernel leaves `len` as passed (the whole sockaddr_storage): the
  // family says how much of it is the address, and equality depends on it.
  if (ss.ss_family == AF_INET) {
    len = sizeof(sockaddr_in);
  } else if (ss.ss_family == AF_INET6) {
    len = sizeof(sockaddr_in6);
  } else {
    return absl::NotFoundError("SO_ORIGINAL_DST: not an IP address");
  }
  return Address::FromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

}  // namespace ferry::net
