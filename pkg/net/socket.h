#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "pkg/base/fd.h"
#include "pkg/net/address.h"

namespace ferry::net {

struct KeepAlive {
  int idle_seconds = 0;  // 0: leave the kernel's setting
  int interval_seconds = 0;
  int count = 0;
};

// A non-blocking listening socket. IP sockets get SO_REUSEADDR, and
// SO_REUSEPORT when `reuse_port` (one per worker); "[::]" is dual stack. A unix
// path left by a dead process is removed; one with a live listener is EADDRINUSE.
// With `listen` false it is only bound: StartListening() later. A bound
// socket takes no connection, so closing it resets nobody, and an SO_REUSEPORT
// socket joins its port's group only at listen().
absl::StatusOr<base::Fd> ListenSocket(const Address& address, bool reuse_port, int backlog,
                                      bool listen = true);
absl::Status StartListening(int fd, const Address& address, int backlog);

// Starts a non-blocking connect, bound to `source` when not null. Returns 0
// (connected), EINPROGRESS (wait for writable, then SocketError()) or an errno.
int StartConnect(const Address& target, const Address* source, base::Fd* out);

int SocketError(int fd);  // SO_ERROR, cleared
void SetNoDelay(int fd);
void SetKeepAlive(int fd, const KeepAlive& keepalive);
// Makes the next close() send RST instead of FIN.
void SetLingerZero(int fd);
absl::StatusOr<Address> LocalAddress(int fd);
// The destination a connection had before an iptables/nftables REDIRECT or
// DNAT changed it (SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST). NotFound when the
// connection was not redirected (no conntrack NAT entry). `local`: the
// socket's own address (LocalAddress), which the caller has anyway.
absl::StatusOr<Address> OriginalDestination(int fd, const Address& local);

}  // namespace ferry::net
