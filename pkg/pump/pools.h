#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "pkg/base/fd.h"
#include "pkg/metrics/loop_stats.h"
#include "pkg/net/sys_ops.h"

namespace ferry::pump {

// A kernel pipe used as the zero-copy buffer between two sockets.
struct Pipe {
  base::Fd read;
  base::Fd write;
  bool valid() const { return read.valid(); }
};

// Per-loop cache of empty pipes (HAProxy's pipe pool). Get() reuses one or
// makes one; Put() keeps up to `cap` and closes the rest, so idle connections
// never pin pipes and a burst of bulk connections costs pipe2() only once.
// Single-threaded: one per loop.
class PipePool {
 public:
  PipePool(net::SysOps& sys, size_t cap, metrics::LoopStats& stats)
      : sys_(sys), cap_(cap), stats_(stats) {}
  // An empty pipe, or an invalid one when pipe2() fails (the caller copies instead).
  Pipe Get();
  // `pipe` must be empty.
  void Put(Pipe&& pipe);
  size_t cached() const { return free_.size(); }

 private:
  net::SysOps& sys_;
  size_t cap_;
  metrics::LoopStats& stats_;
  std::vector<Pipe> free_;
};

// Per-loop cache of copy buffers of kSize bytes. A buffer is held only while
// bytes wait in it. Single-threaded: one per loop.
class BufferPool {
 public:
  static constexpr size_t kSize = 64 * 1024;
  BufferPool(size_t cap, metrics::LoopStats& stats) : cap_(cap), stats_(stats) {}
  ~BufferPool();
  char* Get();
  void Put(char* buffer);
  size_t cached() const { return free_.size(); }

 private:
  size_t cap_;
  metrics::LoopStats& stats_;
  std::vector<char*> free_;
};

}  // namespace ferry::pump
