#pragma once

// Readers of /proc for the promises about resources: open fds, TCP socket
// states (a relay must never leave a socket in CLOSE_WAIT) and CPU time (a
// relay must never spin).

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ferry::testing {

// Entries of /proc/PID/fd (pid 0: this process); -1 when unreadable. With
// `below` > 0, only fds numbered lower than it (the ones that count against
// an RLIMIT_NOFILE of `below`).
int CountOpenFds(pid_t pid = 0, int below = 0);

// Linux TCP states as /proc/net/tcp numbers them.
enum TcpState {
  kTcpEstablished = 1,
  kTcpSynSent = 2,
  kTcpSynRecv = 3,
  kTcpFinWait1 = 4,
  kTcpFinWait2 = 5,
  kTcpTimeWait = 6,
  kTcpClose = 7,
  kTcpCloseWait = 8,
  kTcpLastAck = 9,
  kTcpListen = 10,
  kTcpClosing = 11,
};
const char* TcpStateName(int state);

// One line of /proc/net/tcp or /proc/net/tcp6 (this network namespace).
struct TcpSocket {
  uint16_t local_port = 0;
  uint16_t remote_port = 0;
  int state = 0;
  bool v6 = false;
};
std::vector<TcpSocket> ReadTcpSockets();

// The sockets a relay holds for a connection from a client to `listen_port`
// relayed to `target_port`: its accepted socket (local port = listen_port)
// and its upstream socket (remote port = target_port, local port != it).
std::vector<TcpSocket> RelaySockets(uint16_t listen_port, uint16_t target_port);
// "ESTABLISHED 40312->5555, CLOSE_WAIT ..." for failure messages.
std::string Describe(const std::vector<TcpSocket>& sockets);

// utime + stime of `pid` in clock ticks (sysconf(_SC_CLK_TCK) a second); -1
// when unreadable.
int64_t CpuTicks(pid_t pid);
int64_t TicksPerSecond();

}  // namespace ferry::testing
