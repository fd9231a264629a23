#include "pkg/pump/pump.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace ferry::pump {
namespace {

// Largest single splice(): a pipe holds 16 pages by default.
constexpr size_t kPipeBytes = 64 * 1024;
constexpr int kPipeRetryReads = 16;

}  // namespace

Pump::~Pump() {
  // ReleasePipe() must still see the bytes left in the pipe, or a dirty
  // pipe would go back to the pool and leak them into another connection.
  ReleasePipe();
  ReleaseBuffer();
  SetBuffered(0);
}

void Pump::Moved(size_t n) {
  bytes_ += n;
  ctx_.stats.pump_bytes[static_cast<int>(mode_)].Add(n);
}

void Pump::SetBuffered(size_t n) {
  if (n != buffered_) {
    int64_t delta = static_cast<int64_t>(n) - static_cast<int64_t>(buffered_);
    ctx_.stats.buffered_bytes.Add(delta);
    if (rule_buffered_ != nullptr) rule_buffered_->Add(delta);
    buffered_ = n;
  }
}

void Pump::ReleaseBuffer() {
  if (buffer_ != nullptr) {
    ctx_.buffers.Put(buffer_);
    buffer_ = nullptr;
  }
  offset_ = 0;
}

void Pump::ReleasePipe() {
  if (!pipe_.valid()) return;
  if (buffered_ > 0) {
    // Bytes left in a pipe we abandon (error path): never pool a dirty pipe.
    pipe_ = Pipe{};
    ctx_.stats.pipes_in_use.Add(-1);
    return;
  }
  ctx_.pipes.Put(std::move(pipe_));
  pipe_ = Pipe{};
}

void Pump::Fail(int err) {
  error_ = err;
  state_ = State::kError;
  more_work_ = false;
}

bool Pump::Finish() {
  // Every byte read before EOF has been written: pass the FIN on.
  ReleaseBuffer();
  ReleasePipe();
  int err = propagate_eof_ ? ctx_.sys.Shutdown(dst_, SHUT_WR) : 0;
  if (err != 0 && err != ENOTCONN) {
    Fail(err);
    return false;
  }
  state_ = State::kDone;
  more_work_ = false;
  return false;
}

void Pump::Prefix(absl::string_view bytes) {
  if (bytes.empty()) return;
  buffer_ = ctx_.buffers.Get();
  offset_ = 0;
  size_t n = std::min(bytes.size(), BufferPool::kSize);
  std::memcpy(buffer_, bytes.data(), n);
  SetBuffered(n);
}

size_t Pump::ReadAllowance(size_t want) {
  if (pacer_ == nullptr) return want;
  size_t allowed = static_cast<size_t>(pacer_->Allow(want, now_nanos_));
  if (allowed == 0) paced_until_ = now_nanos_ + pacer_->WaitNanos(now_nanos_);
  return allowed;
}

Pump::State Pump::Run(size_t budget, int64_t now_nanos) {
  if (state_ != State::kActive) return state_;
  more_work_ = false;
  now_nanos_ = now_nanos;
  paced_until_ = 0;
  for (;;) {
    bool go_on = mode_ == metrics::PumpMode::kCopy ? CopyStep(&budget) : SpliceStep(&budget);
    if (!go_on) break;
    if (budget == 0) {
      more_work_ = true;
      break;
    }
  }
  return state_;
}

bool Pump::FlushBuffer(size_t* budget) {
  while (buffered_ > 0) {
    if (!writable_) return false;
    net::IoResult r = ctx_.sys.Send(dst_, buffer_ + offset_, buffered_);
    if (r.err == EAGAIN) {
      writable_ = false;
      return false;
    }
    if (r.err != 0) {
      Fail(r.err);
      return false;
    }
    offset_ += static_cast<size_t>(r.bytes);
    SetBuffered(buffered_ - static_cast<size_t>(r.bytes));
    Moved(static_cast<size_t>(r.bytes));
    *budget -= std::min(*budget, static_cast<size_t>(r.bytes));
  }
  ReleaseBuffer();
  return true;
}

bool Pump::CopyStep(size_t* budget) {
  if (!FlushBuffer(budget)) return false;
  if (eof_) return Finish();
  if (!readable_) return false;
  if (big_reads_ >= ctx_.splice_after_big_reads && ctx_.splice && !splice_failed_) {
    mode_ = metrics::PumpMode::kSplice;
    small_chunks_ = 0;
    return true;
  }
  size_t want = ReadAllowance(BufferPool::kSize);
  if (want == 0) return false;  // paced: Run() again at paced_until()
  buffer_ = ctx_.buffers.Get();
  offset_ = 0;
  net::IoResult r = ctx_.sys.Recv(src_, buffer_, want);
  ReadDone(want, r.bytes > 0 ? static_cast<size_t>(r.bytes) : 0);
  if (r.err == EAGAIN) {
    readable_ = false;
    read_to_eagain_ = false;
    ReleaseBuffer();
    return false;
  }
  if (r.err != 0) {
    ReleaseBuffer();
    Fail(r.err);
    return false;
  }
  if (r.bytes > 0 && static_cast<size_t>(r.bytes) < want && !read_to_eagain_) {
    readable_ = false;  // drained: the next edge will say when there is more
  }
  if (r.bytes == 0) {
    eof_ = true;
    ReleaseBuffer();
    return true;
  }
  big_reads_ = static_cast<size_t>(r.bytes) >= ctx_.splice_min_read ? big_reads_ + 1 : 0;
  SetBuffered(static_cast<size_t>(r.bytes));
  return true;
}

bool Pump::FlushPipe(size_t* budget) {
  while (buffered_ > 0) {
    if (!writable_) return false;
    net::IoResult r = ctx_.sys.Splice(pipe_.read.get(), dst_, buffered_);
    if (r.err == EAGAIN) {
      writable_ = false;
      return false;
    }
    if (r.err == EINVAL) return DrainPipeToBuffer();
    if (r.err != 0) {
      Fail(r.err);
      return false;
    }
    SetBuffered(buffered_ - static_cast<size_t>(r.bytes));
    Moved(static_cast<size_t>(r.bytes));
    *budget -= std::min(*budget, static_cast<size_t>(r.bytes));
  }
  return true;
}

bool Pump::DrainPipeToBuffer() {
  splice_failed_ = true;
  buffer_ = ctx_.buffers.Get();
  offset_ = 0;
  net::IoResult r = ctx_.sys.Read(pipe_.read.get(), buffer_, BufferPool::kSize);
  if (r.err != 0 || static_cast<size_t>(r.bytes) != buffered_) {
    // A pipe never holds more than one buffer's worth, so this is a bug or
    // a kernel we do not understand: end the connection rather than lose bytes.
    ReleaseBuffer();
    Fail(r.err != 0 ? r.err : EIO);
    return false;
  }
  mode_ = metrics::PumpMode::kCopy;
  size_t held = buffered_;
  buffered_ = 0;  // the bytes move from the pipe to the buffer
  ReleasePipe();
  buffered_ = held;
  return true;
}

bool Pump::SpliceStep(size_t* budget) {
  if (!FlushPipe(budget)) return false;
  if (mode_ != metrics::PumpMode::kSplice) return true;  // fell back to copy
  if (back_to_copy_) {
    back_to_copy_ = false;
    ReleasePipe();  // empty: FlushPipe wrote it all
    mode_ = metrics::PumpMode::kCopy;
    big_reads_ = 0;
    return true;
  }
  if (eof_) return Finish();
  if (!readable_) {
    if (buffered_ == 0) ReleasePipe();
    return false;
  }
  if (!pipe_.valid()) {
    pipe_ = ctx_.pipes.Get();
    if (!pipe_.valid()) {
      // Out of fds or pipe memory: copying still works. Try a pipe again
      // only after another kPipeRetryReads full buffers.
      mode_ = metrics::PumpMode::kCopy;
      big_reads_ = -kPipeRetryReads;
      return true;
    }
  }
  size_t want = ReadAllowance(kPipeBytes - buffered_);
  if (want == 0) {
    if (buffered_ == 0) ReleasePipe();
    return false;  // paced: Run() again at paced_until()
  }
  net::IoResult r = ctx_.sys.Splice(src_, pipe_.write.get(), want);
  ReadDone(want, r.bytes > 0 ? static_cast<size_t>(r.bytes) : 0);
  if (r.err == EAGAIN) {
    if (buffered_ == 0) {
      // An empty pipe and EAGAIN: the socket is drained.
      readable_ = false;
      ReleasePipe();
      return false;
    }
    // The pipe may be full while the socket still has data: wait for room in
    // dst, never treat this as drained (or the edge-triggered read is lost).
    return writable_;
  }
  if (r.err == EINVAL && buffered_ == 0) {
    // This socket type cannot be spliced: copy from now on.
    splice_failed_ = true;
    ReleasePipe();
    mode_ = metrics::PumpMode::kCopy;
    big_reads_ = 0;
    return true;
  }
  if (r.err != 0) {
    Fail(r.err);
    return false;
  }
  if (r.bytes == 0) {
    eof_ = true;
    return true;
  }
  SetBuffered(buffered_ + static_cast<size_t>(r.bytes));
  // Small chunks again and again: the stream turned interactive, where
  // recv+send is cheaper. Go back once this chunk is written.
  small_chunks_ = static_cast<size_t>(r.bytes) < ctx_.copy_below_bytes ? small_chunks_ + 1 : 0;
  if (small_chunks_ >= ctx_.copy_after_small_chunks) back_to_copy_ = true;
  return true;
}

}  // namespace ferry::pump
