// reuseport_probe: what Linux does to connections queued on a SO_REUSEPORT
// listener when the process that owns it stops listening, case by case and
// without timing luck: clients connect to 127.0.0.1 (the loopback handshake
// completes inside connect()), nobody accepts, then the "old" listeners go
// away and every client is checked: accepted by a surviving listener, or reset.
//
//   reuseport_probe [CASE...]     (default: every case)
//   close       old closes its 2 listeners; new has 2 in the group
//   shutdown    old calls shutdown(SHUT_RD) instead of close(), then accept()
//   cbpf        new attaches SO_ATTACH_REUSEPORT_CBPF returning the index of its
//               first socket (2), then old closes one listener at a time, with
//               clients connecting before and between the closes
//   cbpf-shift  the same with a program returning 3 (new's second socket):
//               index 3 is gone after the first close (the last socket moves
//               into the freed slot) and the kernel falls back to hashing
//   bind-only   new bind()s 2 sockets to the port but never calls listen(),
//               then closes them (a start that fails after binding); old
//               accepts: a socket joins the group at listen(), not at bind()
//   scm         old passes its listeners to a forked new process over a unix
//               socketpair (SCM_RIGHTS), clients connect, old closes its fds
//               and exits; new accepts from the passed sockets
// Prints one line per case:
//   case=.. migrate_req=.. clients=.. accepted=.. reset=.. lost=.. migrated=..
// accepted: clients a surviving listener accepted; reset: clients that got an
// RST; lost: neither (never expected); migrated: the TCPMigrateReqSuccess
// counter's increase (net.ipv4.tcp_migrate_req at work). Exit 1 when a
// syscall the setup needs fails, 2 on an unknown case.
//
// One file; compile with `g++ -O2 -std=c++17 -o reuseport_probe reuseport_probe.cc`.
#include <arpa/inet.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif

namespace {

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "reuseport_probe: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

long Netstat(const std::string& key) {
  std::ifstream in("/proc/net/netstat");
  std::string names, values;
  while (std::getline(in, names) && std::getline(in, values)) {
    if (names.rfind("TcpExt:", 0) != 0) continue;
    std::istringstream n(names), v(values);
    std::string name, value;
    while (n >> name && v >> value) {
      if (name == key) return std::stol(value);
    }
  }
  return 0;
}

std::string MigrateReq() {
  std::ifstream in("/proc/sys/net/ipv4/tcp_migrate_req");
  std::string v;
  return in >> v ? v : "-";
}

sockaddr_in Loopback(int port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sa;
}

// A SO_REUSEPORT listener on 127.0.0.1:port (0 = pick); *port gets the port.
int Listen(int* port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) Die("socket");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  sockaddr_in sa = Loopback(*port);
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) Die("bind");
  if (listen(fd, 1024) != 0) Die("listen");
  socklen_t len = sizeof(sa);
  getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  *port = ntohs(sa.sin_port);
  return fd;
}

void AttachConstantIndex(int fd, unsigned index) {
  sock_filter code[] = {{BPF_RET | BPF_K, 0, 0, index}};
  sock_fprog prog{1, code};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)) != 0) {
    Die("SO_ATTACH_REUSEPORT_CBPF");
  }
}

struct Client {
  int fd;
  int local_port;
};

// Connects n clients; each one's handshake is done when connect() returns.
void ConnectClients(int port, int n, std::vector<Client>* out) {
  for (int i = 0; i < n; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) Die("socket");
    sockaddr_in sa = Loopback(port);
    if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) Die("connect");
    socklen_t len = sizeof(sa);
    getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    out->push_back({fd, ntohs(sa.sin_port)});
  }
}

// Accepts everything queued on `fd`; returns the peers' ports.
std::vector<int> AcceptAll(int fd) {
  std::vector<int> ports;
  for (;;) {
    sockaddr_in sa{};
    socklen_t len = sizeof(sa);
    int c = accept4(fd, reinterpret_cast<sockaddr*>(&sa), &len, SOCK_CLOEXEC);
    if (c < 0) break;
    ports.push_back(ntohs(sa.sin_port));
    close(c);
  }
  return ports;
}

bool WasReset(int fd) {
  int err = 0;
  socklen_t len = sizeof(err);
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err == ECONNRESET) return true;
  char c;
  return recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK) < 0 && errno == ECONNRESET;
}

void Report(const char* name, const std::vector<Client>& clients, const std::vector<int>& accepted,
            long migrated_before, const std::string& extra = "") {
  std::map<int, bool> got;
  for (int p : accepted) got[p] = true;
  int ok = 0, reset = 0, lost = 0;
  for (const Client& c : clients) {
    if (got.count(c.local_port)) {
      ++ok;
    } else if (WasReset(c.fd)) {
      ++reset;
    } else {
      ++lost;
    }
    close(c.fd);
  }
  std::printf("case=%s migrate_req=%s clients=%zu accepted=%d reset=%d lost=%d migrated=%ld%s\n",
              name, MigrateReq().c_str(), clients.size(), ok, reset, lost,
              Netstat("TCPMigrateReqSuccess") - migrated_before, extra.c_str());
  std::fflush(stdout);
}

void CaseClose(bool use_shutdown) {
  long migrated = Netstat("TCPMigrateReqSuccess");
  int port = 0;
  int old0 = Listen(&port), old1 = Listen(&port);
  int new0 = Listen(&port), new1 = Listen(&port);
  std::vector<Client> clients;
  ConnectClients(port, 64, &clients);
  std::string extra;
  if (use_shutdown) {
    int r0 = shutdown(old0, SHUT_RD);
    shutdown(old1, SHUT_RD);
    int c = accept(old0, nullptr, nullptr);
    extra = std::string(" shutdown_rc=") + std::to_string(r0) +
            " accept_after_shutdown=" + (c < 0 ? std::strerror(errno) : "ok");
    if (c >= 0) close(c);
  }
  close(old0);
  close(old1);
  std::vector<int> accepted = AcceptAll(new0);
  for (int p : AcceptAll(new1)) accepted.push_back(p);
  Report(use_shutdown ? "shutdown" : "close", clients, accepted, migrated, extra);
  close(new0);
  close(new1);
}

// A new process that binds, fails before listen() and closes: with the
// sockets outside the group, every client lands on the old listeners.
void CaseBindOnly() {
  long migrated = Netstat("TCPMigrateReqSuccess");
  int port = 0;
  int old0 = Listen(&port), old1 = Listen(&port);
  int bound[2];
  for (int& fd : bound) {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    sockaddr_in sa = Loopback(port);
    if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) Die("bind");
  }
  std::vector<Client> clients;
  ConnectClients(port, 64, &clients);
  for (int fd : bound) close(fd);
  std::vector<int> accepted = AcceptAll(old0);
  for (int p : AcceptAll(old1)) accepted.push_back(p);
  Report("bind-only", clients, accepted, migrated);
  close(old0);
  close(old1);
}

// Old listeners at indices 0 and 1, new ones at 2 and 3; the new process's
// program returns `index`. 16 clients connect before the first close, 16
// between the closes and 16 after the last.
void CaseCbpf(unsigned index) {
  long migrated = Netstat("TCPMigrateReqSuccess");
  int port = 0;
  int old0 = Listen(&port), old1 = Listen(&port);
  int new0 = Listen(&port), new1 = Listen(&port);
  AttachConstantIndex(new0, index);
  std::vector<Client> clients;
  ConnectClients(port, 16, &clients);
  // A draining old process accepts (and serves) what reached it, then closes.
  std::vector<int> accepted = AcceptAll(old0);
  int served_by_old = static_cast<int>(accepted.size());
  close(old0);
  ConnectClients(port, 16, &clients);
  for (int p : AcceptAll(old1)) accepted.push_back(p);
  served_by_old = static_cast<int>(accepted.size());
  close(old1);
  ConnectClients(port, 16, &clients);
  std::vector<int> on_new0 = AcceptAll(new0), on_new1 = AcceptAll(new1);
  accepted.insert(accepted.end(), on_new0.begin(), on_new0.end());
  accepted.insert(accepted.end(), on_new1.begin(), on_new1.end());
  std::string extra = " served_by_old=" + std::to_string(served_by_old) +
                      " on_new0=" + std::to_string(on_new0.size()) +
                      " on_new1=" + std::to_string(on_new1.size());
  Report(index == 2 ? "cbpf" : "cbpf-shift", clients, accepted, migrated, extra);
  close(new0);
  close(new1);
}

void SendFds(int channel, const std::vector<int>& fds) {
  char byte = 'L';
  iovec iov{&byte, 1};
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  if (sendmsg(channel, &msg, 0) != 1) Die("sendmsg");
}

std::vector<int> ReceiveFds(int channel, size_t n) {
  char byte;
  iovec iov{&byte, 1};
  std::vector<char> control(CMSG_SPACE(sizeof(int) * n));
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  if (recvmsg(channel, &msg, MSG_CMSG_CLOEXEC) != 1) Die("recvmsg");
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  if (cmsg == nullptr || cmsg->cmsg_type != SCM_RIGHTS) Die("recvmsg: no SCM_RIGHTS");
  std::vector<int> fds((cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int));
  std::memcpy(fds.data(), CMSG_DATA(cmsg), sizeof(int) * fds.size());
  return fds;
}

// The old process (this one) passes its listeners to the new one (a child);
// clients queue; the old closes its fds; the new accepts and reports the
// peers' ports back over the channel.
void CaseScm() {
  long migrated = Netstat("TCPMigrateReqSuccess");
  int port = 0;
  int old0 = Listen(&port), old1 = Listen(&port);
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) Die("socketpair");
  pid_t child = fork();
  if (child < 0) Die("fork");
  if (child == 0) {
    close(pair[0]);
    std::vector<int> fds = ReceiveFds(pair[1], 2);
    char go;
    if (read(pair[1], &go, 1) != 1) _exit(1);  // the old process has let go
    std::vector<int> ports;
    for (int fd : fds) {
      for (int p : AcceptAll(fd)) ports.push_back(p);
    }
    for (int p : ports) {
      if (write(pair[1], &p, sizeof(p)) != sizeof(p)) _exit(1);
    }
    _exit(0);
  }
  close(pair[1]);
  SendFds(pair[0], {old0, old1});
  std::vector<Client> clients;
  ConnectClients(port, 64, &clients);
  close(old0);
  close(old1);
  char go = 'G';
  if (write(pair[0], &go, 1) != 1) Die("write");
  std::vector<int> accepted;
  int p;
  while (read(pair[0], &p, sizeof(p)) == sizeof(p)) accepted.push_back(p);
  int status = 0;
  waitpid(child, &status, 0);
  Report("scm", clients, accepted, migrated);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> cases(argv + 1, argv + argc);
  if (cases.empty()) cases = {"close", "shutdown", "cbpf", "cbpf-shift", "bind-only", "scm"};
  for (const std::string& c : cases) {
    if (c == "close") {
      CaseClose(false);
    } else if (c == "shutdown") {
      CaseClose(true);
    } else if (c == "cbpf") {
      CaseCbpf(2);
    } else if (c == "cbpf-shift") {
      CaseCbpf(3);
    } else if (c == "bind-only") {
      CaseBindOnly();
    } else if (c == "scm") {
      CaseScm();
    } else {
      std::fprintf(stderr, "reuseport_probe: unknown case \"%s\" (close, shutdown, cbpf, "
                           "cbpf-shift, bind-only, scm)\n", c.c_str());
      return 2;
    }
  }
  return 0;
}
