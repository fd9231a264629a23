// Promise: bytes are never lost or reordered, in both directions at once,
// whether a direction is copied through user space or spliced, over IPv4,
// IPv6 and unix sockets; every byte is counted once; a slow reader costs the
// relay at most one pipe of bytes, an idle connection none; and no bytes
// ever cross from one connection to another through a pooled pipe.

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "tests/testing/data.h"
#include "tests/testing/relay.h"
#include "tests/testing/sockets.h"
#include "tests/testing/target_server.h"

namespace ferry::testing {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kSeedToTarget = 0x7a7a;
constexpr uint64_t kSeedToClient = 0xc1c1;
const int kCopy = static_cast<int>(metrics::PumpMode::kCopy);
const int kSplice = static_cast<int>(metrics::PumpMode::kSplice);

class IntegrityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(IntegrityTest, SixtyFourMiBEachWayAtOnceArriveIntactAndAreCounted) {
  const std::string family = GetParam();
  if (family == "ipv6" && !HaveIpv6Loopback()) GTEST_SKIP() << "no IPv6 loopback here";
  TempDir dir;
  const uint64_t kBytes = Scaled(64 * kMiB);

  Transfer target_got, target_sent;
  TargetServer target(ListenLiteral(family, dir.path(), "target"), [&](int fd) {
    std::thread writer([&] {
      target_sent = SendRandom(fd, kBytes, kSeedToClient);
      ::shutdown(fd, SHUT_WR);
    });
    target_got = ReceiveAndHash(fd);
    writer.join();
  });
  ASSERT_TRUE(target.ok()) << std::strerror(target.error());
  auto relay =
      Relay::Start(OneRuleYaml(ListenLiteral(family, dir.path(), "ferry"), {target.target()}));
  ASSERT_TRUE(relay.ok()) << relay.status();

  Connected client = (*relay)->Connect();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);
  Transfer client_sent, client_got;
  std::thread writer([&] {
    client_sent = SendRandom(client.fd.get(), kBytes, kSeedToTarget);
    ::shutdown(client.fd.get(), SHUT_WR);
  });
  client_got = ReceiveAndHash(client.fd.get());
  writer.join();
  ASSERT_TRUE(target.WaitFinished(1, Millis(10000)));

  // Client -> target.
  EXPECT_EQ(client_sent.err, 0) << std::strerror(client_sent.err);
  EXPECT_EQ(client_sent.bytes, kBytes);
  EXPECT_EQ(target_got.bytes, kBytes);
  EXPECT_TRUE(target_got.eof) << "target read ended with " << std::strerror(target_got.err);
  EXPECT_EQ(target_got.sha256, client_sent.sha256);
  // Target -> client.
  EXPECT_EQ(target_sent.err, 0) << std::strerror(target_sent.err);
  EXPECT_EQ(target_sent.bytes, kBytes);
  EXPECT_EQ(client_got.bytes, kBytes);
  EXPECT_TRUE(client_got.eof) << "client read ended with " << std::strerror(client_got.err);
  EXPECT_EQ(client_got.sha256, target_sent.sha256);

  ASSERT_TRUE((*relay)->WaitOutcome(proxy::Outcome::kOk, 1)) << OutcomesString((*relay)->totals());
  server::RuleTotals totals = (*relay)->totals();
  EXPECT_EQ(totals.bytes_to_target, kBytes);
  EXPECT_EQ(totals.bytes_to_client, kBytes);
  EXPECT_EQ(totals.outcome(proxy::Outcome::kOk), 1u) << OutcomesString(totals);
  EXPECT_EQ(totals.outcome(proxy::Outcome::kError), 0u) << OutcomesString(totals);
  server::LoopTotals loops = (*relay)->loop_totals();
  // Each byte went through exactly one pump, once.
  EXPECT_EQ(loops.pump_bytes[kCopy] + loops.pump_bytes[kSplice], 2 * kBytes);
  if (family != "unix") {
    EXPECT_GT(loops.pump_bytes[kSplice], 0u) << "the bulk stream never moved to splice()";
  }
  EXPECT_EQ(loops.buffered_bytes, 0);
  EXPECT_EQ(loops.buffers_in_use, 0);
  EXPECT_EQ(loops.pipes_in_use, 0);
}

INSTANTIATE_TEST_SUITE_P(Families, IntegrityTest, ::testing::Values("ipv4", "ipv6", "unix"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// A direction that starts with request/response-sized writes (copy mode)
// and then streams bulk data moves to splice() mid-stream, losing nothing at
// the switch.
TEST(SwitchToSpliceTest, SmallMessagesThenBulkSwitchMidStreamWithEveryByteIntact) {
  EchoServer echo("127.0.0.1:0");
  ASSERT_TRUE(echo.ok());
  auto relay = Relay::Start(OneRuleYaml("127.0.0.1:0", {echo.target()}));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected client = (*relay)->Connect();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);

  constexpr int kMessages = 300;
  for (int i = 0; i < kMessages; ++i) {
    std::string message = RandomBytes(100, 1000 + i);
    std::string problem = EchoRoundTrip(client.fd.get(), message);
    ASSERT_EQ(problem, "") << "message " << i;
  }
  // The counter is stored just after the send that the client may already have read.
  WaitUntil([&] { return (*relay)->loop_totals().pump_bytes[kCopy] >= 2u * kMessages * 100; },
            Millis(1000));
  server::LoopTotals before = (*relay)->loop_totals();
  EXPECT_EQ(before.pump_bytes[kCopy], 2u * kMessages * 100) << "small messages are copied";
  EXPECT_EQ(before.pump_bytes[kSplice], 0u);

  const uint64_t kBulk = Scaled(32 * kMiB);
  Transfer sent, got;
  std::thread writer([&] {
    sent = SendRandom(client.fd.get(), kBulk, 42, 1 << 20);
    ::shutdown(client.fd.get(), SHUT_WR);
  });
  got = ReceiveAndHash(client.fd.get());
  writer.join();
  EXPECT_EQ(sent.bytes, kBulk);
  EXPECT_EQ(got.bytes, kBulk);
  EXPECT_TRUE(got.eof) << std::strerror(got.err);
  EXPECT_EQ(got.sha256, sent.sha256);

  ASSERT_TRUE((*relay)->WaitOutcome(proxy::Outcome::kOk, 1)) << OutcomesString((*relay)->totals());
  server::LoopTotals after = (*relay)->loop_totals();
  const uint64_t total = 2 * (kMessages * 100 + kBulk);
  EXPECT_EQ(after.pump_bytes[kCopy] + after.pump_bytes[kSplice], total);
  // Most of the bulk of both directions went through pipes.
  EXPECT_GT(after.pump_bytes[kSplice], kBulk)
      << "copy=" << after.pump_bytes[kCopy] << " splice=" << after.pump_bytes[kSplice];
  server::RuleTotals totals = (*relay)->totals();
  EXPECT_EQ(totals.bytes_to_target, kMessages * 100 + kBulk);
  EXPECT_EQ(totals.bytes_to_client, kMessages * 100 + kBulk);
}

// Promise: a slow reader never makes the relay buffer without bound. While
// the client reads nothing, the relay holds at most one pipe (or buffer) of
// the target's bytes and TCP pushes back on the target; once the client
// reads, every byte arrives.
TEST(FlowControlTest, SlowReaderHoldsAtMostOnePipeOfBytesAndLosesNothing) {
  const uint64_t kBytes = Scaled(32 * kMiB);
  std::atomic<uint64_t> target_sent{0};
  TargetServer target("127.0.0.1:0", [&](int fd) {
    RandomStream rng(77);
    std::string chunk(64 * 1024, '\0');
    while (target_sent.load() < kBytes) {
      rng.Fill(chunk.data(), chunk.size());
      if (!SendAll(fd, chunk)) return;
      target_sent += chunk.size();
    }
  });
  ASSERT_TRUE(target.ok());
  auto relay = Relay::Start(OneRuleYaml("127.0.0.1:0", {target.target()}));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected client = (*relay)->Connect();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);

  // Wait until the target is blocked: no progress for 200 ms.
  uint64_t last = 0;
  int64_t last_change = NowMs();
  bool stalled = WaitUntil(
      [&] {
        uint64_t now = target_sent.load();
        if (now != last) {
          last = now;
          last_change = NowMs();
        }
        return NowMs() - last_change >= 200;
      },
      Millis(5000), Millis(10));
  ASSERT_TRUE(stalled);
  EXPECT_LT(target_sent.load(), kBytes) << "the target was never pushed back on";
  server::LoopTotals held = (*relay)->loop_totals();
  EXPECT_LE(held.buffered_bytes, 64 * 1024) << "bytes held in the relay for a slow reader";
  EXPECT_LE(held.pipes_in_use + held.buffers_in_use, 1);

  Transfer got = ReceiveAndHash(client.fd.get(), kBytes);
  EXPECT_EQ(got.bytes, kBytes);
  EXPECT_EQ(got.sha256, RandomSha256(kBytes, 77));
}

// Promise: an idle connection holds no buffer and no pipe, even right after
// it streamed bulk data both ways.
TEST(FlowControlTest, IdleConnectionHoldsNoBufferOrPipeAfterBulkTransfer) {
  EchoServer echo("127.0.0.1:0");
  ASSERT_TRUE(echo.ok());
  auto relay = Relay::Start(OneRuleYaml("127.0.0.1:0", {echo.target()}));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected client = (*relay)->Connect();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);
  const uint64_t kBytes = 8 * kMiB;
  Transfer sent, got;
  std::thread writer([&] { sent = SendRandom(client.fd.get(), kBytes, 8); });
  got = ReceiveAndHash(client.fd.get(), kBytes);
  writer.join();
  ASSERT_EQ(got.bytes, kBytes);
  ASSERT_EQ(got.sha256, sent.sha256);
  ASSERT_GT((*relay)->loop_totals().pump_bytes[kSplice], 0u);

  // The connection stays open and idle.
  bool released = WaitUntil(
      [&] {
        server::LoopTotals l = (*relay)->loop_totals();
        return l.pipes_in_use == 0 && l.buffers_in_use == 0 && l.buffered_bytes == 0;
      },
      Millis(2000));
  server::LoopTotals l = (*relay)->loop_totals();
  EXPECT_TRUE(released) << "pipes=" << l.pipes_in_use << " buffers=" << l.buffers_in_use
                        << " buffered=" << l.buffered_bytes;
  EXPECT_EQ((*relay)->totals().active, 1);
  // And it still works.
  EXPECT_EQ(EchoRoundTrip(client.fd.get(), "still there"), "");
}

// A connection that ends with bytes still in its pipe (here: a client that
// stopped reading, then reset) must not hand that pipe, bytes and all, to the
// next connection: its peer would receive another client's bytes first.
// One worker, so both connections share one PipePool.
TEST(PipePoolTest, PipeAbandonedWithBytesInItIsNeverReusedByAnotherConnection) {
  std::atomic<int> connection{0};
  Transfer second_got;
  TargetServer target("127.0.0.1:0", [&](int fd) {
    if (connection.fetch_add(1) == 0) {
      // First connection: stream at a client that never reads, until blocked.
      SetIoTimeouts(fd, 300);
      SendRandom(fd, 64 * kMiB, 0xdead);
      std::string ignored;
      ReadToEof(fd, &ignored, 1 << 20);
    } else {
      second_got = ReceiveAndHash(fd);
    }
  });
  ASSERT_TRUE(target.ok());
  auto relay = Relay::Start(OneRuleYaml("127.0.0.1:0", {target.target()}), /*workers=*/1);
  ASSERT_TRUE(relay.ok()) << relay.status();

  {
    Connected stalled = (*relay)->Connect();
    ASSERT_TRUE(stalled.fd.valid()) << std::strerror(stalled.err);
    // Wait until the to_client direction splices and its pipe holds bytes.
    bool parked = WaitUntil(
        [&] {
          server::LoopTotals l = (*relay)->loop_totals();
          return l.pipes_in_use > 0 && l.buffered_bytes > 0 && l.pump_bytes[kSplice] > 0;
        },
        Millis(5000));
    ASSERT_TRUE(parked) << "no bytes ever waited in a pipe; buffered="
                        << (*relay)->loop_totals().buffered_bytes;
    ResetAndClose(stalled.fd);
    ASSERT_TRUE((*relay)->WaitOutcome(proxy::Outcome::kError, 1))
        << OutcomesString((*relay)->totals());
  }
  server::LoopTotals after_first = (*relay)->loop_totals();
  EXPECT_EQ(after_first.buffered_bytes, 0);
  EXPECT_EQ(after_first.pipes_in_use, 0);

  // Second connection: bulk client -> target, which moves to splice and takes
  // a pipe from the pool.
  const uint64_t kBytes = 8 * kMiB;
  Connected client = (*relay)->Connect();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);
  Transfer sent = SendRandom(client.fd.get(), kBytes, 0xbeef);
  ASSERT_EQ(sent.err, 0) << std::strerror(sent.err);
  ::shutdown(client.fd.get(), SHUT_WR);
  ASSERT_TRUE(target.WaitFinished(2, Millis(10000)));
  EXPECT_EQ(second_got.bytes, kBytes);
  EXPECT_EQ(second_got.sha256, sent.sha256)
      << "the target of the second connection received other bytes than its client sent";
}

}  // namespace
}  // namespace ferry::testing
