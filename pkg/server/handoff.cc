#include "pkg/server/handoff.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "pkg/base/log.h"

namespace ferry::server {
namespace {

constexpr size_t kMaxKey = 1024;
constexpr size_t kMaxFds = 1024;  // sockets of one listener: its workers'
constexpr int kTimeoutMs = 5000;

absl::StatusOr<sockaddr_un> UnixAddress(const std::string& path) {
  sockaddr_un sa{};
  if (path.empty() || path.size() >= sizeof(sa.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("--handoff \"", path,
                                                   "\": ", "a unix socket path of 1 to ",
                                                   sizeof(sa.sun_path) - 1, " bytes"));
  }
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.data(), path.size());
  return sa;
}

// Only the same user (or root) may take or hand over listening sockets.
bool PeerTrusted(int fd) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
  return cred.uid == ::geteuid() || cred.uid == 0;
}

bool SendMessage(int conn, const std::string& payload, const std::vector<int>& fds) {
  iovec iov{const_cast<char*>(payload.data()), payload.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  }
  return ::sendmsg(conn, &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(payload.size());
}

}  // namespace

absl::StatusOr<std::vector<HandedListener>> TakeListeners(const std::string& path) {
  auto sa = UnixAddress(path);
  if (!sa.ok()) return sa.status();
  base::Fd conn(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!conn.valid()) {
    return absl::UnavailableError(absl::StrCat("handoff socket: ", std::strerror(errno)));
  }
  if (::connect(conn.get(), reinterpret_cast<const sockaddr*>(&*sa), sizeof(*sa)) != 0) {
    if (errno == ENOENT || errno == ECONNREFUSED) return std::vector<HandedListener>();
    return absl::UnavailableError(
        absl::StrCat("handoff \"", path, "\": connect: ", std::strerror(errno)));
  }
  if (!PeerTrusted(conn.get())) {
    return absl::PermissionDeniedError(
        absl::StrCat("handoff \"", path, "\": the ferry there runs as another user"));
  }
  timeval tv{kTimeoutMs / 1000, 0};
  ::setsockopt(conn.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::vector<HandedListener> out;
  for (;;) {
    char payload[kMaxKey + 1];
    iovec iov{payload, sizeof(payload)};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ssize_t n = ::recvmsg(conn.get(), &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      return absl::UnavailableError(
          absl::StrCat("handoff \"", path, "\": receive: ", std::strerror(errno)));
    }
    HandedListener l;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        l.fds.emplace_back(fd);  // owned from here, whatever comes next
      }
    }
    if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
      return absl::DataLossError(absl::StrCat("handoff \"", path, "\": a message was cut"));
    }
    if (n == 1 && payload[0] == 'E') return out;
    if (n < 2 || payload[0] != 'L' || l.fds.empty()) {
      return absl::DataLossError(
          absl::StrCat("handoff \"", path, "\": unexpected message of ", n, " bytes"));
    }
    l.key.assign(payload + 1, static_cast<size_t>(n - 1));
    out.push_back(std::move(l));
  }
}

absl::StatusOr<std::unique_ptr<HandoffServer>> HandoffServer::Start(std::string path,
                                                                    Snapshot snapshot) {
  auto sa = UnixAddress(path);
  if (!sa.ok()) return sa.status();
  base::Fd listener(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!listener.valid()) {
    return absl::UnavailableError(absl::StrCat("handoff socket: ", std::strerror(errno)));
  }
  // The predecessor's socket file (it handed over already, or is gone).
  ::unlink(path.c_str());
  mode_t old_mask = ::umask(0177);  // 0600 from the start: no window for others
  int rc = ::bind(listener.get(), reinterpret_cast<const sockaddr*>(&*sa), sizeof(*sa));
  int err = errno;
  ::umask(old_mask);
  if (rc != 0 || ::listen(listener.get(), 4) != 0) {
    if (rc == 0) err = errno;
    return absl::FailedPreconditionError(
        absl::StrCat("handoff \"", path, "\": bind: ", std::strerror(err)));
  }
  auto server =
      std::unique_ptr<HandoffServer>(new HandoffServer(path, std::move(listener), snapshot));
  if (!server->stop_.valid()) {
    return absl::UnavailableError(absl::StrCat("eventfd: ", std::strerror(errno)));
  }
  server->thread_ = std::thread([s = server.get()] { s->Run(); });
  return server;
}

HandoffServer::HandoffServer(std::string path, base::Fd listener, Snapshot snapshot)
    : path_(std::move(path)),
      listener_(std::move(listener)),
      stop_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      snapshot_(std::move(snapshot)) {}

HandoffServer::~HandoffServer() {
  Stop();
  if (thread_.joinable()) thread_.join();
  // The socket file is the successor's once it bound its own there.
  struct stat st;
  if (!handed_over() && ::stat(path_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
    ::unlink(path_.c_str());
  }
}

void HandoffServer::Stop() {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopped_) return;
  stopped_ = true;
  uint64_t one = 1;
  (void)::write(stop_.get(), &one, sizeof(one));
}

bool HandoffServer::handed_over() const {
  std::lock_guard<std::mutex> lock(mu_);
  return handed_over_;
}

void HandoffServer::Run() {
  for (;;) {
    pollfd p[2] = {{listener_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0 && errno != EINTR) return;
    if (p[1].revents != 0) return;
    if ((p[0].revents & POLLIN) == 0) continue;
    base::Fd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn.valid()) continue;
    Serve(conn.get());
  }
}

void HandoffServer::Serve(int conn) {
  if (!PeerTrusted(conn)) {
    FERRY_LOG(kWarn, "listener handoff refused to a process of another user", {{"socket", path_}});
    return;
  }
  timeval tv{kTimeoutMs / 1000, 0};
  ::setsockopt(conn, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  std::lock_guard<std::mutex> lock(mu_);
  if (stopped_) return;  // draining: the sockets are about to close
  size_t sockets = 0;
  for (const HandedListener& l : snapshot_()) {
    std::vector<int> raw;
    for (const base::Fd& fd : l.fds) raw.push_back(fd.get());
    if (!SendMessage(conn, "L" + l.key, raw)) {
      FERRY_LOG(kWarn, "listener handoff failed",
                {{"socket", path_}, {"error", std::strerror(errno)}});
      return;
    }
    sockets += raw.size();
  }
  if (!SendMessage(conn, "E", {})) return;
  handed_over_ = true;
  FERRY_LOG(kInfo, "listeners handed over", {{"socket", path_}, {"sockets", sockets}});
}

}  // namespace ferry::server
