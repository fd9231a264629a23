// Promise: what one side sends before its FIN reaches the other side before
// the FIN, in both directions; a half-closed connection keeps relaying the
// other way; and when both are done the relay closes its sockets (none left
// in CLOSE_WAIT) and counts the connection ok.

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include "gtest/gtest.h"
#include "tests/testing/data.h"
#include "tests/testing/proc.h"
#include "tests/testing/relay.h"
#include "tests/testing/sockets.h"
#include "tests/testing/target_server.h"

namespace ferry::testing {
namespace {

constexpr uint64_t kReplyBytes = 1 << 20;

// No socket of the relay for this client/target pair is left in CLOSE_WAIT
// (a FIN received and never answered by a close).
void ExpectNoRelaySocketInCloseWait(uint16_t listen_port, uint16_t target_port) {
  auto in_close_wait = [&] {
    for (const TcpSocket& s : RelaySockets(listen_port, target_port)) {
      if (s.state == kTcpCloseWait) return true;
    }
    return false;
  };
  EXPECT_TRUE(WaitUntil([&] { return !in_close_wait(); }, Millis(2000)))
      << "relay sockets: " << Describe(RelaySockets(listen_port, target_port));
}

TEST(HalfCloseTest, ClientFinFirstThenTargetsFullReplyThenEof) {
  const std::string request = RandomBytes(10'000, 7);
  std::string target_got;
  ReadResult target_read;
  TargetServer target("127.0.0.1:0", [&](int fd) {
    target_read = ReadToEof(fd, &target_got, 1 << 20);
    if (!target_read.eof) return;
    SendRandom(fd, kReplyBytes, 99);
    // Returning closes the socket: a FIN after the whole reply.
  });
  ASSERT_TRUE(target.ok());
  auto relay = Relay::Start(OneRuleYaml("127.0.0.1:0", {target.target()}));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected client = (*relay)->Connect();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);

  ASSERT_TRUE(SendAll(client.fd.get(), request));
  ASSERT_EQ(::shutdown(client.fd.get(), SHUT_WR), 0);
  Transfer reply = ReceiveAndHash(client.fd.get());
  ASSERT_TRUE(target.WaitFinished(1, Millis(5000)));

  EXPECT_TRUE(target_read.eof) << "target never saw the client's FIN: "
                               << std::strerror(target_read.err);
  EXPECT_EQ(target_got.size(), request.size());
  EXPECT_TRUE(target_got == request) << "request bytes differ";
  EXPECT_EQ(reply.bytes, kReplyBytes);
  EXPECT_TRUE(reply.eof) << "reply ended with " << std::strerror(reply.err);
  EXPECT_EQ(reply.sha256, RandomSha256(kReplyBytes, 99));

  // The client socket stays open: the relay must close on its own.
  ExpectNoRelaySocketInCloseWait((*relay)->address().port(), target.address().port());
  ASSERT_TRUE((*relay)->WaitOutcome(proxy::Outcome::kOk, 1)) << OutcomesString((*relay)->totals());
  server::RuleTotals t = (*relay)->totals();
  EXPECT_EQ(t.outcome(proxy::Outcome::kOk), 1u) << OutcomesString(t);
  EXPECT_EQ(t.bytes_to_target, request.size());
  EXPECT_EQ(t.bytes_to_client, kReplyBytes);
  EXPECT_EQ(t.active, 0);
}

TEST(HalfCloseTest, TargetFinFirstThenClientsDataArrivesInFullThenEof) {
  constexpr uint64_t kClientBytes = 1 << 20;
  Transfer target_got;
  TargetServer target("127.0.0.1:0", [&](int fd) {
    if (SendRandom(fd, kReplyBytes, 5).err != 0) return;
    ::shutdown(fd, SHUT_WR);
    target_got = ReceiveAndHash(fd);
  });
  ASSERT_TRUE(target.ok());
  auto relay = Relay::Start(OneRuleYaml("127.0.0.1:0", {target.target()}));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected client = (*relay)->Connect();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);

  Transfer first = ReceiveAndHash(client.fd.get());
  EXPECT_EQ(first.bytes, kReplyBytes);
  ASSERT_TRUE(first.eof) << "client never saw the target's FIN: " << std::strerror(first.err);
  EXPECT_EQ(first.sha256, RandomSha256(kReplyBytes, 5));

  // The other direction still relays after the FIN came through.
  Transfer sent = SendRandom(client.fd.get(), kClientBytes, 6);
  ASSERT_EQ(sent.err, 0) << std::strerror(sent.err);
  ASSERT_EQ(::shutdown(client.fd.get(), SHUT_WR), 0);
  ASSERT_TRUE(target.WaitFinished(1, Millis(5000)));
  EXPECT_EQ(target_got.bytes, kClientBytes);
  EXPECT_TRUE(target_got.eof) << "target read ended with " << std::strerror(target_got.err);
  EXPECT_EQ(target_got.sha256, sent.sha256);

  ExpectNoRelaySocketInCloseWait((*relay)->address().port(), target.address().port());
  ASSERT_TRUE((*relay)->WaitOutcome(proxy::Outcome::kOk, 1)) << OutcomesString((*relay)->totals());
  server::RuleTotals t = (*relay)->totals();
  EXPECT_EQ(t.outcome(proxy::Outcome::kOk), 1u) << OutcomesString(t);
  EXPECT_EQ(t.bytes_to_client, kReplyBytes);
  EXPECT_EQ(t.bytes_to_target, kClientBytes);
}

// half_close_timeout: a connection left half-closed (the target never answers
// the client's FIN) is closed after the timeout and counted as a timeout.
TEST(HalfCloseTest, StalledHalfClosedConnectionIsClosedAtHalfCloseTimeout) {
  std::atomic<bool> release{false};
  TargetServer target("127.0.0.1:0", [&](int fd) {
    std::string ignored;
    ReadToEof(fd, &ignored, 1 << 20);
    // Never reply, never close (until the test is over, or 5 s).
    WaitUntil([&] { return release.load(); }, Millis(5000), Millis(10));
  });
  ASSERT_TRUE(target.ok());
  auto relay =
      Relay::Start(OneRuleYaml("127.0.0.1:0", {target.target()}, R"(    half_close_timeout: "300ms"
    idle_timeout: "0s"
)"));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected client = (*relay)->Connect();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);
  ASSERT_TRUE(SendAll(client.fd.get(), "bye"));
  ASSERT_EQ(::shutdown(client.fd.get(), SHUT_WR), 0);
  int64_t start = NowMs();
  PeerState seen = ProbePeer(client.fd.get(), 3000);
  int64_t elapsed = NowMs() - start;
  EXPECT_TRUE(seen == PeerState::kEof || seen == PeerState::kReset) << PeerStateName(seen);
  EXPECT_GE(elapsed, 200);
  EXPECT_LT(elapsed, 2000);
  ASSERT_TRUE((*relay)->WaitOutcome(proxy::Outcome::kTimeout, 1))
      << OutcomesString((*relay)->totals());
  EXPECT_EQ((*relay)->outcome(proxy::Outcome::kOk), 0u);
  release = true;
}


// The half-close timeout counts time without bytes, not time since the FIN:
// a client that sent its request and a FIN may download for longer than it.
TEST(HalfCloseTest, HalfClosedConnectionStillStreamingOutlivesHalfCloseTimeout) {
  TargetServer target("127.0.0.1:0", [&](int fd) {
    std::string ignored;
    ReadToEof(fd, &ignored, 1 << 20);
    // 12 chunks, 100 ms apart: 1.2 s of streaming after the client's FIN.
    for (int i = 0; i < 12; ++i) {
      if (!SendAll(fd, std::string(1000, static_cast<char>('a' + i)))) return;
      ::usleep(100'000);
    }
  });
  ASSERT_TRUE(target.ok());
  auto relay =
      Relay::Start(OneRuleYaml("127.0.0.1:0", {target.target()}, R"(    half_close_timeout: "400ms"
)"));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected client = (*relay)->Connect();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);
  ASSERT_TRUE(SendAll(client.fd.get(), "GET"));
  ASSERT_EQ(::shutdown(client.fd.get(), SHUT_WR), 0);
  std::string reply;
  ReadResult r = ReadToEof(client.fd.get(), &reply, 1 << 20);
  EXPECT_TRUE(r.eof) << std::strerror(r.err);
  EXPECT_EQ(reply.size(), 12'000u);
  ASSERT_TRUE((*relay)->WaitOutcome(proxy::Outcome::kOk, 1))
      << OutcomesString((*relay)->totals());
  EXPECT_EQ((*relay)->outcome(proxy::Outcome::kTimeout), 0u);
}

}  // namespace
}  // namespace ferry::testing
