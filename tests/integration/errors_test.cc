// Promise: a dead or misbehaving peer ends the connection visibly and is
// counted: a reset on one side becomes a reset on the other (never a clean
// EOF that would pass a truncated stream off as complete), and a target that
// refuses or never answers closes the client promptly as connect_failed.

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/substitute.h"
#include "gtest/gtest.h"
#include "tests/testing/data.h"
#include "tests/testing/netns.h"
#include "tests/testing/relay.h"
#include "tests/testing/sockets.h"
#include "tests/testing/target_server.h"

namespace ferry::testing {
namespace {

TEST(ResetTest, TargetResetMidStreamReachesClientAsResetNotEof) {
  constexpr size_t kRequest = 256 * 1024;
  constexpr uint64_t kPartial = 128 * 1024;
  std::atomic<bool> target_read_all{false};
  TargetServer target("127.0.0.1:0", [&](int fd) {
    std::string got;
    if (ReadExactly(fd, kRequest, &got).bytes != kRequest) return;
    target_read_all = true;
    SendRandom(fd, kPartial, 3);
    TargetServer::ResetOnReturn(fd);  // mid-stream: no FIN, an RST
  });
  ASSERT_TRUE(target.ok());
  auto relay = Relay::Start(OneRuleYaml("127.0.0.1:0", {target.target()}));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected client = (*relay)->Connect();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);

  ASSERT_TRUE(SendAll(client.fd.get(), RandomBytes(kRequest, 2)));
  // One reader, no writer racing it for the socket error.
  Transfer got = ReceiveAndHash(client.fd.get());
  EXPECT_TRUE(target_read_all.load());
  EXPECT_FALSE(got.eof) << "the target's reset reached the client as a clean EOF after "
                        << got.bytes << " bytes";
  EXPECT_EQ(got.err, ECONNRESET) << std::strerror(got.err);
  EXPECT_LE(got.bytes, kPartial);
  ASSERT_TRUE((*relay)->WaitOutcome(proxy::Outcome::kError, 1))
      << OutcomesString((*relay)->totals());
  EXPECT_EQ((*relay)->outcome(proxy::Outcome::kOk), 0u);
}

TEST(ResetTest, ClientResetMidStreamReachesTargetAsReset) {
  constexpr size_t kFirst = 128 * 1024;
  std::atomic<bool> target_read_first{false};
  Transfer rest;
  TargetServer target("127.0.0.1:0", [&](int fd) {
    std::string got;
    if (ReadExactly(fd, kFirst, &got).bytes != kFirst) return;
    target_read_first = true;
    rest = ReceiveAndHash(fd);
  });
  ASSERT_TRUE(target.ok());
  auto relay = Relay::Start(OneRuleYaml("127.0.0.1:0", {target.target()}));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected client = (*relay)->Connect();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);

  ASSERT_TRUE(SendAll(client.fd.get(), RandomBytes(kFirst, 4)));
  ASSERT_TRUE(WaitUntil([&] { return target_read_first.load(); }, Millis(5000)));
  ResetAndClose(client.fd);
  ASSERT_TRUE(target.WaitFinished(1, Millis(5000)));
  EXPECT_FALSE(rest.eof) << "the client's reset reached the target as a clean EOF";
  EXPECT_EQ(rest.err, ECONNRESET) << std::strerror(rest.err);
  ASSERT_TRUE((*relay)->WaitOutcome(proxy::Outcome::kError, 1))
      << OutcomesString((*relay)->totals());
  EXPECT_EQ((*relay)->outcome(proxy::Outcome::kOk), 0u);
}

TEST(ConnectFailureTest, RefusedTargetClosesClientPromptlyAsConnectFailed) {
  uint16_t closed_port;
  {
    Listening l = Listen("127.0.0.1:0");
    ASSERT_TRUE(l.fd.valid());
    closed_port = l.address.port();
  }  // closed: connecting to it is refused
  auto relay = Relay::Start(OneRuleYaml("127.0.0.1:0", {absl::StrCat("127.0.0.1:", closed_port)}));
  ASSERT_TRUE(relay.ok()) << relay.status();
  int64_t start = NowMs();
  Connected client = (*relay)->Connect();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);
  PeerState seen = ProbePeer(client.fd.get(), 3000);
  int64_t elapsed = NowMs() - start;
  EXPECT_TRUE(seen == PeerState::kEof || seen == PeerState::kReset) << PeerStateName(seen);
  EXPECT_LT(elapsed, 2000);
  ASSERT_TRUE((*relay)->WaitOutcome(proxy::Outcome::kConnectFailed, 1))
      << OutcomesString((*relay)->totals());
  server::RuleTotals t = (*relay)->totals();
  EXPECT_EQ(t.outcome(proxy::Outcome::kOk), 0u) << OutcomesString(t);
  EXPECT_EQ(t.outcome(proxy::Outcome::kError), 0u) << OutcomesString(t);
}

TEST(ConnectFailureTest, MissingUnixTargetClosesClientPromptlyAsConnectFailed) {
  TempDir dir;
  auto relay = Relay::Start(OneRuleYaml("127.0.0.1:0", {"unix:" + dir.File("nobody.sock")}));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected client = (*relay)->Connect();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);
  PeerState seen = ProbePeer(client.fd.get(), 3000);
  EXPECT_TRUE(seen == PeerState::kEof || seen == PeerState::kReset) << PeerStateName(seen);
  ASSERT_TRUE((*relay)->WaitOutcome(proxy::Outcome::kConnectFailed, 1))
      << OutcomesString((*relay)->totals());
}

TEST(ConnectFailureTest, RefusedFirstEndpointFailsOverToTheNextTarget) {
  uint16_t closed_port;
  {
    Listening l = Listen("127.0.0.1:0");
    ASSERT_TRUE(l.fd.valid());
    closed_port = l.address.port();
  }
  EchoServer echo("127.0.0.1:0");
  ASSERT_TRUE(echo.ok());
  auto relay = Relay::Start(OneRuleYaml("127.0.0.1:0",
                                        {absl::StrCat("127.0.0.1:", closed_port), echo.target()},
                                        "    connect_attempts: 2\n"));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected client = (*relay)->Connect();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);
  EXPECT_EQ(EchoRoundTrip(client.fd.get(), "via the second target"), "");
  client.fd.Reset();
  ASSERT_TRUE((*relay)->WaitOutcome(proxy::Outcome::kOk, 1)) << OutcomesString((*relay)->totals());
  EXPECT_EQ((*relay)->outcome(proxy::Outcome::kConnectFailed), 0u);
}

// Connects to a black hole: 10.213.77.2 in a network namespace of the test's
// own, whose firewall drops every SYN (see BlackholeNetns). The relay, its
// echo target and the clients all live in the peer namespace; skipped when
// not root or without ip/iptables/nft.
class BlackholeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = BlackholeNetns::Unsupported(); !why.empty()) GTEST_SKIP() << why;
    auto ns = BlackholeNetns::Create();
    ASSERT_TRUE(ns.ok()) << ns.status();
    ns_ = std::move(*ns);
  }
  void TearDown() override {
    relay_.reset();  // before the namespaces go
    echo_.reset();
    ns_.reset();
  }
  // Starts an echo target and a relay with `rule_yaml` ($0 = the black hole,
  // $1 = the echo target) inside the client namespace.
  void Start(const std::string& rule_yaml) {
    ASSERT_TRUE(ns_->RunInClientNs([&] {
                     echo_ = std::make_unique<EchoServer>("127.0.0.1:0");
                     auto relay = Relay::Start(absl::Substitute(
                         rule_yaml, absl::StrCat(ns_->target_ip(), ":8080"), echo_->target()));
                     ASSERT_TRUE(relay.ok()) << relay.status();
                     relay_ = std::move(*relay);
                   })
                    .ok());
    ASSERT_TRUE(relay_ != nullptr);
  }
  Connected ConnectInNs() {
    Connected c;
    EXPECT_TRUE(ns_->RunInClientNs([&] { c = relay_->Connect(); }).ok());
    return c;
  }

  std::unique_ptr<BlackholeNetns> ns_;
  std::unique_ptr<EchoServer> echo_;
  std::unique_ptr<Relay> relay_;
};

// A target whose SYNs vanish: the attempt ends at connect_timeout.
TEST_F(BlackholeTest, SilentTargetClosesClientAtConnectTimeoutAsConnectFailed) {
  ASSERT_NO_FATAL_FAILURE(Start(R"(
rules:
  - name: main
    listen: "127.0.0.1:0"
    targets: ["$0"]
    connect_timeout: "300ms"
    connect_attempts: 1
)"));
  int64_t start = NowMs();
  Connected client = ConnectInNs();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);
  PeerState seen = ProbePeer(client.fd.get(), 3000);
  int64_t elapsed = NowMs() - start;
  EXPECT_TRUE(seen == PeerState::kEof || seen == PeerState::kReset) << PeerStateName(seen);
  EXPECT_GE(elapsed, 250) << "closed before connect_timeout: was the SYN really dropped?";
  EXPECT_LT(elapsed, 2000);
  ASSERT_TRUE(relay_->WaitOutcome(proxy::Outcome::kConnectFailed, 1))
      << OutcomesString(relay_->totals());
  EXPECT_EQ(relay_->outcome(proxy::Outcome::kTimeout), 0u);
  EXPECT_EQ(relay_->outcome(proxy::Outcome::kError), 0u);
}

TEST_F(BlackholeTest, SilentFirstEndpointTimesOutThenNextTargetRelaysEarlyBytes) {
  ASSERT_NO_FATAL_FAILURE(Start(R"(
rules:
  - name: main
    listen: "127.0.0.1:0"
    targets: ["$0", "$1"]
    connect_timeout: "300ms"
    connect_attempts: 2
)"));
  int64_t start = NowMs();
  Connected client = ConnectInNs();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);
  // Sent while the relay still waits for the black hole: must not be lost.
  ASSERT_TRUE(SendAll(client.fd.get(), "early bytes"));
  std::string got;
  ReadResult r = ReadExactly(client.fd.get(), 11, &got);
  int64_t elapsed = NowMs() - start;
  EXPECT_EQ(got, "early bytes") << (r.eof ? "EOF" : std::strerror(r.err));
  EXPECT_GE(elapsed, 250) << "the first endpoint answered: was its SYN really dropped?";
  EXPECT_LT(elapsed, 2000);
  EXPECT_EQ(EchoRoundTrip(client.fd.get(), "and later ones"), "");
  client.fd.Reset();
  ASSERT_TRUE(relay_->WaitOutcome(proxy::Outcome::kOk, 1)) << OutcomesString(relay_->totals());
}

TEST_F(BlackholeTest, ClientResetWhileConnectingEndsTheSessionAtOnce) {
  ASSERT_NO_FATAL_FAILURE(Start(R"(
rules:
  - name: main
    listen: "127.0.0.1:0"
    targets: ["$0"]
    connect_timeout: "3s"
    connect_attempts: 1
)"));
  Connected client = ConnectInNs();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);
  ASSERT_TRUE(WaitUntil([&] { return relay_->totals().active == 1; }, Millis(2000)));
  int64_t reset_at = NowMs();
  ResetAndClose(client.fd);
  ASSERT_TRUE(relay_->WaitOutcome(proxy::Outcome::kError, 1, Millis(2500)))
      << "the session waited for the connect: " << OutcomesString(relay_->totals());
  EXPECT_LT(NowMs() - reset_at, 1000);
  EXPECT_EQ(relay_->totals().active, 0);
  EXPECT_EQ(relay_->outcome(proxy::Outcome::kConnectFailed), 0u);
}

}  // namespace
}  // namespace ferry::testing
