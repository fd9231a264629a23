#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "pkg/metrics/loop_stats.h"
#include "pkg/net/sys_ops.h"
#include "pkg/pump/pools.h"
#include "pkg/pump/token_bucket.h"

namespace ferry::pump {

// What the pumps of one loop share. Owned by the loop's worker.
struct Context {
  net::SysOps& sys;
  BufferPool& buffers;
  PipePool& pipes;
  metrics::LoopStats& stats;
  bool splice = true;  // false: copy mode only
  // A direction moves to splice() after this many consecutive reads of at
  // least splice_min_read bytes: splice costs more than recv+send for small
  // messages and less from about 14 KiB (docs/benchmarks.md, "Copy vs splice").
  int splice_after_big_reads = 2;
  size_t splice_min_read = 16 * 1024;
  // ... and back to copy after this many consecutive spliced chunks smaller
  // than copy_below_bytes (an interactive session after a bulk transfer).
  int copy_after_small_chunks = 4;
  size_t copy_below_bytes = 4 * 1024;
};

// Pump moves the bytes of one direction of a connection, src -> dst, until
// src's EOF, which it turns into shutdown(dst, SHUT_WR). It borrows both fds:
// the Session owns them and must destroy the Pump before closing them.
//
// A direction starts in copy mode (recv/send through a pooled buffer, the
// cheapest path for small messages) and moves to splice mode (socket -> pipe
// -> socket, no copy to user space) once it reads full buffers. It holds a
// buffer or pipe only while bytes wait in it, so an idle direction holds
// neither. At most one buffer or one pipe of bytes waits: when dst does not
// drain, the Pump stops reading src and TCP pushes back on the sender.
//
// The Session tells it when src is readable or dst writable (edge-triggered
// readiness) and calls Run(); only this loop's thread may call it.
class Pump {
 public:
  enum class State { kActive, kDone, kError };

  // `buffered`, when set, is the rule's gauge of bytes held (besides the loop's).
  Pump(Context& context, int src, int dst, metrics::Gauge* buffered = nullptr)
      : ctx_(context), src_(src), dst_(dst), rule_buffered_(buffered) {}
  ~Pump();
  Pump(const Pump&) = delete;
  Pump& operator=(const Pump&) = delete;

  // `peer_closed`: the event also said the peer shut down (EPOLLRDHUP,
  // EPOLLHUP, EPOLLERR), so reads must go on to the EOF even after a short one.
  void SetReadable(bool peer_closed = true) {
    readable_ = true;
    read_to_eagain_ = read_to_eagain_ || peer_closed;
  }
  void SetWritable() { writable_ = true; }

  // Queues `bytes` (at most BufferPool::kSize) to be written to dst before
  // anything read from src. Only before the first Run().
  void Prefix(absl::string_view bytes);
  // Limits reads from src to what `pacer` (borrowed, outliving the Pump)
  // allows, in copy and splice mode alike. Reads stop, never writes: bytes
  // read are always delivered, and the EOF comes after them.
  void SetPacer(Pacer* pacer) { pacer_ = pacer; }
  // Don't pass src's EOF on to dst: the direction ends without a FIN
  // (close: lazy, for peers that take a half-close for a full one).
  void KeepDstOpen() { propagate_eof_ = false; }

  // Moves bytes until src has none, dst has no room, `budget` bytes have been
  // moved (then more_work() is true and the caller must call Run() again
  // later), the pacer says wait (then paced_until() is when to call Run()
  // again), or the direction ends. kDone: EOF reached dst as a FIN.
  // kError: a syscall failed with error() (ECONNRESET, EPIPE, ...).
  // `now_nanos`: the loop's time, for the pacer.
  State Run(size_t budget, int64_t now_nanos = 0);

  State state() const { return state_; }
  bool more_work() const { return more_work_; }
  // After Run(): 0, or the time at which the pacer lets it read again.
  int64_t paced_until() const { return paced_until_; }
  int error() const { return error_; }
  uint64_t bytes() const { return bytes_; }      // bytes written to dst so far
  size_t buffered() const { return buffered_; }  // bytes read from src, not yet written
  bool splicing() const { return mode_ == metrics::PumpMode::kSplice; }
  bool holds_buffer() const { return buffer_ != nullptr; }
  bool holds_pipe() const { return pipe_.valid(); }
  // A direction that received EOF but has not written it yet.
  bool src_eof() const { return eof_; }

 private:
  // What the next read may take: `want`, or less under a pacer (0: paced).
  size_t ReadAllowance(size_t want);
  void ReadDone(size_t allowed, size_t read) {
    if (pacer_ != nullptr) pacer_->Used(allowed, read);
  }
  // Each returns false when the Pump must stop (blocked, ended or failed).
  bool CopyStep(size_t* budget);
  bool SpliceStep(size_t* budget);
  bool FlushBuffer(size_t* budget);
  bool FlushPipe(size_t* budget);
  bool Finish();
  void Fail(int err);
  void Moved(size_t n);
  void SetBuffered(size_t n);
  void ReleaseBuffer();
  void ReleasePipe();
  // Moves bytes stuck in a pipe back to a copy buffer when splice() refuses
  // dst (EINVAL): the kernel can splice some socket types but not others.
  bool DrainPipeToBuffer();

  Context& ctx_;
  const int src_;
  const int dst_;
  metrics::Gauge* const rule_buffered_;
  Pacer* pacer_ = nullptr;
  int64_t now_nanos_ = 0;
  int64_t paced_until_ = 0;
  bool propagate_eof_ = true;
  metrics::PumpMode mode_ = metrics::PumpMode::kCopy;
  State state_ = State::kActive;
  bool readable_ = true;  // unknown until EAGAIN says otherwise
  // Edge-triggered readiness: a short read drained the socket, and data
  // arriving later raises a new edge, so the pump can stop without the
  // recv() that would return EAGAIN. Not before the first EAGAIN (edges may
  // have been consumed before the pump existed) nor once the peer closed
  // (its FIN must be read now: no edge will announce it again).
  bool read_to_eagain_ = true;
  bool writable_ = true;
  bool eof_ = false;
  bool more_work_ = false;
  bool splice_failed_ = false;
  bool back_to_copy_ = false;
  int big_reads_ = 0;     // consecutive reads >= splice_min_read (copy mode)
  int small_chunks_ = 0;  // consecutive spliced chunks < copy_below_bytes
  int error_ = 0;
  uint64_t bytes_ = 0;
  size_t buffered_ = 0;
  // Copy mode: bytes [offset_, offset_ + buffered_) of buffer_ wait for dst.
  char* buffer_ = nullptr;
  size_t offset_ = 0;
  // Splice mode: buffered_ bytes wait in pipe_.
  Pipe pipe_;
};

}  // namespace ferry::pump
