#pragma once

#include <deque>
#include <map>

#include "pkg/net/sys_ops.h"

namespace ferry::testing {

// SysOps that performs the real syscalls except where a test injected a
// failure: FailNext(kSpliceIn, EAGAIN) makes the next splice from a socket
// into a pipe return EAGAIN without calling the kernel.
class FakeSysOps final : public net::SysOps {
 public:
  enum class Op { kRecv, kSend, kSpliceIn, kSpliceOut, kRead, kShutdown, kPipe };

  // `pipe_fds` tells splice-in from splice-out: an fd that is a pipe's read
  // end is a source of splice-out. Tests pass the fds their pipes use, or
  // leave it empty to classify by fd_in being a socket.
  void FailNext(Op op, int err, int times = 1) {
    for (int i = 0; i < times; ++i) failures_[op].push_back(err);
  }
  int calls(Op op) const {
    auto it = calls_.find(op);
    return it == calls_.end() ? 0 : it->second;
  }

  net::IoResult Recv(int fd, void* buf, size_t len) override {
    if (int e = Take(Op::kRecv)) return {0, e};
    return SysOps::Recv(fd, buf, len);
  }
  net::IoResult Send(int fd, const void* buf, size_t len) override {
    if (int e = Take(Op::kSend)) return {0, e};
    return SysOps::Send(fd, buf, len);
  }
  net::IoResult Splice(int fd_in, int fd_out, size_t len) override {
    Op op = IsPipe(fd_in) ? Op::kSpliceOut : Op::kSpliceIn;
    if (int e = Take(op)) return {0, e};
    return SysOps::Splice(fd_in, fd_out, len);
  }
  net::IoResult Read(int fd, void* buf, size_t len) override {
    if (int e = Take(Op::kRead)) return {0, e};
    return SysOps::Read(fd, buf, len);
  }
  int Shutdown(int fd, int how) override {
    if (int e = Take(Op::kShutdown)) return e;
    return SysOps::Shutdown(fd, how);
  }
  int Pipe(int fds[2]) override {
    if (int e = Take(Op::kPipe)) return e;
    return SysOps::Pipe(fds);
  }

 private:
  static bool IsPipe(int fd);
  int Take(Op op) {
    ++calls_[op];
    auto& q = failures_[op];
    if (q.empty()) return 0;
    int e = q.front();
    q.pop_front();
    return e;
  }
  std::map<Op, std::deque<int>> failures_;
  std::map<Op, int> calls_;
};

}  // namespace ferry::testing

#include <sys/stat.h>

inline bool ferry::testing::FakeSysOps::IsPipe(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
}
