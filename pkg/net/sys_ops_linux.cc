#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "pkg/net/sys_ops.h"

namespace ferry::net {
namespace {

IoResult FromSsize(ssize_t r) {
  if (r >= 0) return {r, 0};
  return {0, errno == EWOULDBLOCK ? EAGAIN : errno};
}

}  // namespace

IoResult SysOps::Recv(int fd, void* buf, size_t len) {
  ssize_t r;
  do r = ::recv(fd, buf, len, 0);
  while (r < 0 && errno == EINTR);
  return FromSsize(r);
}

IoResult SysOps::Send(int fd, const void* buf, size_t len) {
  ssize_t r;
  do r = ::send(fd, buf, len, MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  return FromSsize(r);
}

IoResult SysOps::Splice(int fd_in, int fd_out, size_t len) {
  ssize_t r;
  do r = ::splice(fd_in, nullptr, fd_out, nullptr, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  while (r < 0 && errno == EINTR);
  return FromSsize(r);
}

IoResult SysOps::Read(int fd, void* buf, size_t len) {
  ssize_t r;
  do r = ::read(fd, buf, len);
  while (r < 0 && errno == EINTR);
  return FromSsize(r);
}

int SysOps::Shutdown(int fd, int how) { return ::shutdown(fd, how) == 0 ? 0 : errno; }

int SysOps::Pipe(int fds[2]) { return ::pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0 ? 0 : errno; }

SysOps& RealSysOps::Get() {
  static RealSysOps ops;
  return ops;
}

}  // namespace ferry::net
