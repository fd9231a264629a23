#include "pkg/pump/pump.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <random>
#include <string>

#include "gtest/gtest.h"
#include "pkg/base/fd.h"
#include "tests/testing/fake_sys_ops.h"

namespace ferry::pump {
namespace {

using testing::FakeSysOps;
using Op = FakeSysOps::Op;

// Two connected non-blocking TCP sockets on loopback.
std::pair<base::Fd, base::Fd> TcpPair() {
  base::Fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  EXPECT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), len), 0);
  EXPECT_EQ(::listen(listener.get(), 1), 0);
  EXPECT_EQ(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  base::Fd a(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_EQ(::connect(a.get(), reinterpret_cast<sockaddr*>(&addr), len), 0);
  base::Fd b(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  for (int fd : {a.get(), b.get()}) {
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  return {std::move(a), std::move(b)};
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// A Pump from `src` (the far end of the client pair) to `dst`, with its own
// pools and counters, as one loop would own them.
struct Fixture {
  explicit Fixture(net::SysOps& sys)
      : pipes(sys, 4, stats), buffers(4, stats), context{sys, buffers, pipes, stats} {}
  metrics::LoopStats stats;
  PipePool pipes;
  BufferPool buffers;
  Context context;
};

class PumpTest : public ::testing::Test {
 protected:
  PumpTest() : fixture_(sys_) {
    auto [w, s] = TcpPair();
    writer_ = std::move(w);
    src_ = std::move(s);
    auto [d, r] = TcpPair();
    dst_ = std::move(d);
    reader_ = std::move(r);
  }

  // Writes what the socket takes now; returns the bytes written.
  size_t WriteSome(const std::string& data, size_t offset) {
    ssize_t n = ::send(writer_.get(), data.data() + offset, data.size() - offset, MSG_NOSIGNAL);
    return n > 0 ? static_cast<size_t>(n) : 0;
  }
  void ReadAvailable(std::string* out) {
    char buf[65536];
    for (;;) {
      ssize_t n = ::recv(reader_.get(), buf, sizeof(buf), 0);
      if (n <= 0) return;
      out->append(buf, static_cast<size_t>(n));
    }
  }
  // Feeds `data` through the pump, as readiness events would, and returns
  // what reached the reader. Bounded in iterations.
  std::string Relay(Pump& pump, const std::string& data, bool close_after = true) {
    std::string got;
    size_t sent = 0;
    bool closed = false;
    for (int i = 0; i < 200000 && got.size() < data.size(); ++i) {
      sent += WriteSome(data, sent);
      if (sent == data.size() && close_after && !closed) {
        ::shutdown(writer_.get(), SHUT_WR);
        closed = true;
      }
      pump.SetReadable();
      pump.SetWritable();
      if (pump.Run(1 << 20) == Pump::State::kError) break;
      ReadAvailable(&got);
    }
    return got;
  }

  FakeSysOps sys_;
  Fixture fixture_;
  base::Fd writer_, src_, dst_, reader_;
};

TEST_F(PumpTest, SmallMessageUsesCopyMode) {
  Pump pump(fixture_.context, src_.get(), dst_.get());
  std::string got = Relay(pump, "hello", /*close_after=*/false);
  EXPECT_EQ(got, "hello");
  EXPECT_FALSE(pump.splicing());
  EXPECT_EQ(fixture_.stats.pump_bytes[0].value(), 5u);
  EXPECT_EQ(fixture_.stats.pump_bytes[1].value(), 0u);
}

TEST_F(PumpTest, IdleDirectionHoldsNoBufferOrPipe) {
  Pump pump(fixture_.context, src_.get(), dst_.get());
  std::string data = RandomBytes(4 << 20, 1);
  std::string got = Relay(pump, data, /*close_after=*/false);
  ASSERT_EQ(got.size(), data.size());
  pump.SetReadable();
  pump.Run(1 << 20);  // finds the socket drained
  EXPECT_FALSE(pump.holds_buffer());
  EXPECT_FALSE(pump.holds_pipe());
  EXPECT_EQ(pump.buffered(), 0u);
  EXPECT_EQ(fixture_.stats.buffers_in_use.value(), 0);
  EXPECT_EQ(fixture_.stats.pipes_in_use.value(), 0);
  EXPECT_EQ(fixture_.stats.buffered_bytes.value(), 0);
}

TEST_F(PumpTest, BulkStreamSwitchesToSpliceWithEveryByteIntact) {
  Pump pump(fixture_.context, src_.get(), dst_.get());
  std::string small = Relay(pump, "ping", /*close_after=*/false);
  ASSERT_EQ(small, "ping");
  std::string data = RandomBytes(16 << 20, 2);
  std::string got = Relay(pump, data);
  EXPECT_TRUE(got == data) << "got " << got.size() << " of " << data.size() << " bytes";
  EXPECT_TRUE(pump.splicing());
  EXPECT_GT(fixture_.stats.pump_bytes[1].value(), 0u);
  EXPECT_EQ(fixture_.stats.pump_bytes[0].value() + fixture_.stats.pump_bytes[1].value(),
            data.size() + 4);
}

TEST_F(PumpTest, EofBecomesShutdownOfDestination) {
  Pump pump(fixture_.context, src_.get(), dst_.get());
  std::string got = Relay(pump, "last words");
  EXPECT_EQ(got, "last words");
  pump.SetReadable();
  EXPECT_EQ(pump.Run(1 << 20), Pump::State::kDone);
  char c;
  EXPECT_EQ(::recv(reader_.get(), &c, 1, 0), 0);  // FIN, not EAGAIN
}

TEST_F(PumpTest, SpliceEagainWithEmptyPipeWaitsForReadable) {
  fixture_.context.splice_after_big_reads = 0;  // splice from the first byte
  Pump pump(fixture_.context, src_.get(), dst_.get());
  ASSERT_EQ(WriteSome("abc", 0), 3u);
  sys_.FailNext(Op::kSpliceIn, EAGAIN);
  EXPECT_EQ(pump.Run(1 << 20), Pump::State::kActive);
  EXPECT_FALSE(pump.src_eof());
  EXPECT_FALSE(pump.holds_pipe());  // an idle direction gives its pipe back
  std::string got;
  pump.SetReadable();
  pump.Run(1 << 20);
  ReadAvailable(&got);
  EXPECT_EQ(got, "abc");
}

TEST_F(PumpTest, SpliceEinvalFallsBackToCopy) {
  fixture_.context.splice_after_big_reads = 0;
  Pump pump(fixture_.context, src_.get(), dst_.get());
  sys_.FailNext(Op::kSpliceIn, EINVAL);
  std::string data = RandomBytes(1 << 20, 3);
  std::string got = Relay(pump, data);
  EXPECT_TRUE(got == data);
  EXPECT_FALSE(pump.splicing());
  EXPECT_EQ(fixture_.stats.pump_bytes[1].value(), 0u);
}

TEST_F(PumpTest, SpliceOutEinvalMovesPipeBytesToCopyBuffer) {
  fixture_.context.splice_after_big_reads = 0;
  Pump pump(fixture_.context, src_.get(), dst_.get());
  sys_.FailNext(Op::kSpliceOut, EINVAL);
  std::string data = RandomBytes(1 << 20, 4);
  std::string got = Relay(pump, data);
  EXPECT_TRUE(got == data) << got.size();
  EXPECT_FALSE(pump.splicing());
}

TEST_F(PumpTest, PipeCreationFailureFallsBackToCopy) {
  fixture_.context.splice_after_big_reads = 0;
  Pump pump(fixture_.context, src_.get(), dst_.get());
  sys_.FailNext(Op::kPipe, EMFILE, /*times=*/1'000'000);  // out of fds for good
  std::string data = RandomBytes(1 << 20, 8);
  std::string got = Relay(pump, data);
  EXPECT_TRUE(got == data);
  EXPECT_GE(sys_.calls(Op::kPipe), 1);
  EXPECT_EQ(fixture_.stats.pump_bytes[0].value(), data.size());  // all copied
}

TEST_F(PumpTest, SlowReaderBoundsBufferedBytes) {
  Pump pump(fixture_.context, src_.get(), dst_.get());
  std::string data = RandomBytes(32 << 20, 5);
  size_t sent = 0;
  // Nobody reads dst: the writer must eventually be pushed back.
  for (int i = 0; i < 10000; ++i) {
    size_t n = WriteSome(data, sent);
    sent += n;
    pump.SetReadable();
    pump.SetWritable();
    pump.Run(1 << 20);
    EXPECT_LE(pump.buffered(), BufferPool::kSize);
    if (n == 0 && pump.buffered() > 0) break;
  }
  EXPECT_LT(sent, data.size());
  EXPECT_GT(pump.buffered(), 0u);
  // Now drain: every byte accepted so far arrives, in order.
  std::string got;
  for (int i = 0; i < 200000 && got.size() < sent; ++i) {
    pump.SetReadable();
    pump.SetWritable();
    pump.Run(1 << 20);
    ReadAvailable(&got);
  }
  EXPECT_TRUE(got == data.substr(0, sent));
}

TEST_F(PumpTest, ResetDestinationIsAnError) {
  Pump pump(fixture_.context, src_.get(), dst_.get());
  linger l{1, 0};
  ::setsockopt(reader_.get(), SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  reader_.Reset();
  ::usleep(10000);
  std::string data = RandomBytes(1 << 20, 6);
  size_t sent = 0;
  Pump::State state = Pump::State::kActive;
  for (int i = 0; i < 1000 && state == Pump::State::kActive; ++i) {
    sent += WriteSome(data, sent);
    pump.SetReadable();
    pump.SetWritable();
    state = pump.Run(1 << 20);
  }
  EXPECT_EQ(state, Pump::State::kError);
  EXPECT_TRUE(pump.error() == ECONNRESET || pump.error() == EPIPE) << pump.error();
}

TEST_F(PumpTest, RecvErrorIsAnError) {
  Pump pump(fixture_.context, src_.get(), dst_.get());
  sys_.FailNext(Op::kRecv, ECONNRESET);
  EXPECT_EQ(pump.Run(1 << 20), Pump::State::kError);
  EXPECT_EQ(pump.error(), ECONNRESET);
}

TEST_F(PumpTest, BudgetLeavesMoreWork) {
  Pump pump(fixture_.context, src_.get(), dst_.get());
  std::string data = RandomBytes(1 << 20, 7);
  size_t sent = WriteSome(data, 0);
  ASSERT_GT(sent, 3u * BufferPool::kSize);
  pump.Run(BufferPool::kSize);
  EXPECT_TRUE(pump.more_work());
  EXPECT_LT(pump.bytes(), sent);
}


TEST_F(PumpTest, SixteenKiBMessagesSwitchToSplice) {
  Pump pump(fixture_.context, src_.get(), dst_.get());
  std::string all;
  for (int i = 0; i < 4; ++i) {
    std::string message = RandomBytes(20 * 1024, 20 + i);
    all += message;
    std::string got = Relay(pump, message, /*close_after=*/false);
    ASSERT_TRUE(got == message) << i;
  }
  EXPECT_TRUE(pump.splicing());
  EXPECT_GT(fixture_.stats.pump_bytes[1].value(), 0u);
  EXPECT_EQ(pump.bytes(), all.size());
}

TEST_F(PumpTest, SmallMessagesAfterBulkGoBackToCopy) {
  Pump pump(fixture_.context, src_.get(), dst_.get());
  std::string bulk = RandomBytes(4 << 20, 30);
  ASSERT_TRUE(Relay(pump, bulk, /*close_after=*/false) == bulk);
  ASSERT_TRUE(pump.splicing());
  for (int i = 0; i < 8; ++i) {
    std::string message = "message " + std::to_string(i);
    ASSERT_EQ(Relay(pump, message, /*close_after=*/false), message) << i;
  }
  EXPECT_FALSE(pump.splicing());
  EXPECT_FALSE(pump.holds_pipe());
  uint64_t copied = fixture_.stats.pump_bytes[0].value();
  ASSERT_EQ(Relay(pump, "one more", /*close_after=*/false), "one more");
  EXPECT_EQ(fixture_.stats.pump_bytes[0].value(), copied + 8);  // copied, not spliced
}

TEST_F(PumpTest, ShortReadAfterAnEdgeSkipsTheEagainRecv) {
  Pump pump(fixture_.context, src_.get(), dst_.get());
  std::string got;
  ASSERT_EQ(WriteSome("first", 0), 5u);
  pump.Run(1 << 20);  // reads to EAGAIN once: the socket's state is known
  ReadAvailable(&got);
  ASSERT_EQ(got, "first");
  ASSERT_EQ(WriteSome("second", 0), 6u);
  int before = sys_.calls(Op::kRecv);
  pump.SetReadable(/*peer_closed=*/false);
  pump.Run(1 << 20);
  EXPECT_EQ(sys_.calls(Op::kRecv), before + 1);  // no recv() just to see EAGAIN
  ReadAvailable(&got);
  EXPECT_EQ(got, "firstsecond");
}

TEST_F(PumpTest, PeerCloseIsReadToEofAfterAShortRead) {
  Pump pump(fixture_.context, src_.get(), dst_.get());
  ASSERT_EQ(WriteSome("x", 0), 1u);
  pump.Run(1 << 20);
  ASSERT_EQ(WriteSome("bye", 0), 3u);
  ::shutdown(writer_.get(), SHUT_WR);
  ::usleep(10000);
  // The event carries EPOLLRDHUP: data and FIN came together, and no later
  // edge will announce the FIN, so the pump must read on to it now.
  pump.SetReadable(/*peer_closed=*/true);
  EXPECT_EQ(pump.Run(1 << 20), Pump::State::kDone);
  std::string got;
  ReadAvailable(&got);
  EXPECT_EQ(got, "xbye");
}

}  // namespace
}  // namespace ferry::pump
