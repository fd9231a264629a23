#include "pkg/pump/pools.h"

#include <sys/ioctl.h>

namespace ferry::pump {

Pipe PipePool::Get() {
  if (!free_.empty()) {
    Pipe p = std::move(free_.back());
    free_.pop_back();
    stats_.pipes_in_use.Add(1);
    return p;
  }
  int fds[2];
  if (sys_.Pipe(fds) != 0) return Pipe{};
  stats_.pipes_in_use.Add(1);
  return Pipe{base::Fd(fds[0]), base::Fd(fds[1])};
}

void PipePool::Put(Pipe&& pipe) {
  if (!pipe.valid()) return;
  stats_.pipes_in_use.Add(-1);
  if (free_.size() >= cap_) return;
  // Belt and braces: a pipe with bytes in it would hand one connection's
  // data to the next. One ioctl per release (not per byte) buys certainty.
  int queued = 0;
  if (::ioctl(pipe.read.get(), FIONREAD, &queued) != 0 || queued != 0) return;
  free_.push_back(std::move(pipe));
}

BufferPool::~BufferPool() {
  for (char* b : free_) delete[] b;
}

char* BufferPool::Get() {
  stats_.buffers_in_use.Add(1);
  if (!free_.empty()) {
    char* b = free_.back();
    free_.pop_back();
    return b;
  }
  return new char[kSize];
}

void BufferPool::Put(char* buffer) {
  if (buffer == nullptr) return;
  stats_.buffers_in_use.Add(-1);
  if (free_.size() < cap_) {
    free_.push_back(buffer);
  } else {
    delete[] buffer;
  }
}

}  // namespace ferry::pump
