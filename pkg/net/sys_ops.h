#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>

namespace ferry::net {

// The result of one data-path syscall: bytes moved, or err (an errno; EAGAIN
// is a state, not a failure). Never both.
struct IoResult {
  int64_t bytes = 0;
  int err = 0;
};

// The syscalls of the data path, behind a seam so tests can inject EAGAIN,
// EINTR, EPIPE or EINVAL. Production code passes RealSysOps::Get(). Stateless;
// safe from any thread.
class SysOps {
 public:
  virtual ~SysOps() = default;
  virtual IoResult Recv(int fd, void* buf, size_t len);
  virtual IoResult Send(int fd, const void* buf, size_t len);
  // splice(2) with SPLICE_F_MOVE | SPLICE_F_NONBLOCK.
  virtual IoResult Splice(int fd_in, int fd_out, size_t len);
  virtual IoResult Read(int fd, void* buf, size_t len);
  virtual int Shutdown(int fd, int how);
  // pipe2(O_NONBLOCK | O_CLOEXEC); returns 0 or an errno.
  virtual int Pipe(int fds[2]);
};

class RealSysOps final : public SysOps {
 public:
  static SysOps& Get();
};

}  // namespace ferry::net
