// Promise: the rule's limits act as configured and each refusal is counted
// under its outcome: idle_timeout closes idle connections (and only those),
// max_lifetime closes even busy ones, max_connections turns away the
// connection over the limit at once (and gives slots back), and the ACL
// refuses clients outside it without ever reaching the target.

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "tests/testing/data.h"
#include "tests/testing/relay.h"
#include "tests/testing/sockets.h"
#include "tests/testing/target_server.h"

namespace ferry::testing {
namespace {

TEST(IdleTimeoutTest, IdleConnectionIsClosedByRelayAsTimeout) {
  EchoServer echo("127.0.0.1:0");
  ASSERT_TRUE(echo.ok());
  auto relay =
      Relay::Start(OneRuleYaml("127.0.0.1:0", {echo.target()}, "    idle_timeout: \"300ms\"\n"));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected client = (*relay)->Connect();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);
  ASSERT_EQ(EchoRoundTrip(client.fd.get(), "ping"), "");
  int64_t idle_since = NowMs();
  PeerState seen = ProbePeer(client.fd.get(), 3000);
  int64_t elapsed = NowMs() - idle_since;
  EXPECT_EQ(seen, PeerState::kEof) << PeerStateName(seen);
  EXPECT_GE(elapsed, 250);
  EXPECT_LT(elapsed, 1500);
  ASSERT_TRUE((*relay)->WaitOutcome(proxy::Outcome::kTimeout, 1))
      << OutcomesString((*relay)->totals());
  EXPECT_EQ((*relay)->outcome(proxy::Outcome::kOk), 0u);
}

TEST(IdleTimeoutTest, ConnectionWithTrafficEvery100msOutlivesIdleTimeout) {
  EchoServer echo("127.0.0.1:0");
  ASSERT_TRUE(echo.ok());
  auto relay =
      Relay::Start(OneRuleYaml("127.0.0.1:0", {echo.target()}, "    idle_timeout: \"300ms\"\n"));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected client = (*relay)->Connect();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);
  int64_t start = NowMs();
  for (int i = 0; NowMs() - start < 1000; ++i) {
    ASSERT_EQ(EchoRoundTrip(client.fd.get(), absl::StrCat("tick ", i)), "")
        << "after " << NowMs() - start << " ms";
    std::this_thread::sleep_for(Millis(100));
  }
  ASSERT_EQ(EchoRoundTrip(client.fd.get(), "still here"), "");
  server::RuleTotals t = (*relay)->totals();
  EXPECT_EQ(t.outcome(proxy::Outcome::kTimeout), 0u) << OutcomesString(t);
  EXPECT_EQ(t.active, 1);
}

TEST(MaxConnectionsTest, ThirdConcurrentConnectionIsClosedAtOnceFirstTwoKeepRelaying) {
  EchoServer echo("127.0.0.1:0");
  ASSERT_TRUE(echo.ok());
  auto relay =
      Relay::Start(OneRuleYaml("127.0.0.1:0", {echo.target()}, "    max_connections: 2\n"));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected first = (*relay)->Connect();
  Connected second = (*relay)->Connect();
  ASSERT_TRUE(first.fd.valid() && second.fd.valid());
  ASSERT_EQ(EchoRoundTrip(first.fd.get(), "one"), "");
  ASSERT_EQ(EchoRoundTrip(second.fd.get(), "two"), "");

  int64_t start = NowMs();
  Connected third = (*relay)->Connect();
  ASSERT_TRUE(third.fd.valid()) << std::strerror(third.err);
  PeerState seen = ProbePeer(third.fd.get(), 3000);
  EXPECT_TRUE(seen == PeerState::kEof || seen == PeerState::kReset) << PeerStateName(seen);
  EXPECT_LT(NowMs() - start, 1000);
  ASSERT_TRUE((*relay)->WaitOutcome(proxy::Outcome::kLimit, 1))
      << OutcomesString((*relay)->totals());

  EXPECT_EQ(EchoRoundTrip(first.fd.get(), "one again"), "");
  EXPECT_EQ(EchoRoundTrip(second.fd.get(), "two again"), "");
  server::RuleTotals t = (*relay)->totals();
  EXPECT_EQ(t.outcome(proxy::Outcome::kLimit), 1u) << OutcomesString(t);
  EXPECT_EQ(t.active, 2);
  EXPECT_EQ(echo.accepted(), 2);

  // A slot freed by a close is available again.
  first.fd.Reset();
  ASSERT_TRUE((*relay)->WaitOutcome(proxy::Outcome::kOk, 1));
  Connected fourth = (*relay)->Connect();
  ASSERT_TRUE(fourth.fd.valid());
  EXPECT_EQ(EchoRoundTrip(fourth.fd.get(), "four"), "");
  EXPECT_EQ((*relay)->outcome(proxy::Outcome::kLimit), 1u);
}

// A connection that never reached its target gives its slot back.
TEST(MaxConnectionsTest, SlotOfAFailedConnectIsReleased) {
  uint16_t closed_port;
  {
    Listening l = Listen("127.0.0.1:0");
    ASSERT_TRUE(l.fd.valid());
    closed_port = l.address.port();
  }
  auto relay = Relay::Start(OneRuleYaml("127.0.0.1:0", {absl::StrCat("127.0.0.1:", closed_port)},
                                        "    max_connections: 1\n"));
  ASSERT_TRUE(relay.ok()) << relay.status();
  for (int i = 1; i <= 3; ++i) {
    Connected c = (*relay)->Connect();
    ASSERT_TRUE(c.fd.valid()) << std::strerror(c.err);
    PeerState seen = ProbePeer(c.fd.get(), 2000);
    EXPECT_TRUE(seen == PeerState::kEof || seen == PeerState::kReset) << PeerStateName(seen);
    ASSERT_TRUE((*relay)->WaitOutcome(proxy::Outcome::kConnectFailed, i))
        << OutcomesString((*relay)->totals());
  }
  EXPECT_EQ((*relay)->outcome(proxy::Outcome::kLimit), 0u) << OutcomesString((*relay)->totals());
}

TEST(MaxLifetimeTest, BusyConnectionIsClosedAtMaxLifetimeAsTimeout) {
  EchoServer echo("127.0.0.1:0");
  ASSERT_TRUE(echo.ok());
  auto relay =
      Relay::Start(OneRuleYaml("127.0.0.1:0", {echo.target()}, "    max_lifetime: \"400ms\"\n"));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected client = (*relay)->Connect();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);
  int64_t start = NowMs();
  // Busy all along: only the lifetime can end it.
  std::string problem;
  for (int i = 0; i < 200 && NowMs() - start < 3000; ++i) {
    problem = EchoRoundTrip(client.fd.get(), absl::StrCat("busy ", i));
    if (!problem.empty()) break;
    std::this_thread::sleep_for(Millis(20));
  }
  int64_t elapsed = NowMs() - start;
  EXPECT_NE(problem, "") << "still relaying after " << elapsed << " ms";
  EXPECT_GE(elapsed, 350);
  EXPECT_LT(elapsed, 1500);
  ASSERT_TRUE((*relay)->WaitOutcome(proxy::Outcome::kTimeout, 1))
      << OutcomesString((*relay)->totals());
}

struct AclCase {
  std::string name;
  std::string family;  // of the listener and so of the client: ipv4, ipv6 or unix
  std::vector<std::string> allow;
  std::vector<std::string> deny;
  bool relayed;
};

class AclTest : public ::testing::TestWithParam<AclCase> {};

std::string YamlList(const std::vector<std::string>& items) {
  return absl::StrCat("[",
                      absl::StrJoin(items, ", ",
                                    [](std::string* out, const std::string& s) {
                                      absl::StrAppend(out, "\"", s, "\"");
                                    }),
                      "]");
}

TEST_P(AclTest, ClientIsRelayedOrRefusedAsTheAclSays) {
  const AclCase& c = GetParam();
  if (c.family == "ipv6" && !HaveIpv6Loopback()) GTEST_SKIP() << "no IPv6 loopback here";
  TempDir dir;
  EchoServer echo("127.0.0.1:0");
  ASSERT_TRUE(echo.ok());
  std::string extra =
      absl::StrCat("    allow: ", YamlList(c.allow), "\n    deny: ", YamlList(c.deny), "\n");
  auto relay = Relay::Start(
      OneRuleYaml(ListenLiteral(c.family, dir.path(), "ferry"), {echo.target()}, extra));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected client = (*relay)->Connect();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);

  if (c.relayed) {
    EXPECT_EQ(EchoRoundTrip(client.fd.get(), "let me in"), "");
    client.fd.Reset();
    ASSERT_TRUE((*relay)->WaitOutcome(proxy::Outcome::kOk, 1))
        << OutcomesString((*relay)->totals());
    EXPECT_EQ((*relay)->outcome(proxy::Outcome::kDenied), 0u);
    EXPECT_EQ(echo.accepted(), 1);
  } else {
    SendAll(client.fd.get(), "let me in");  // may fail: the relay may have closed already
    PeerState seen = ProbePeer(client.fd.get(), 3000);
    EXPECT_TRUE(seen == PeerState::kEof || seen == PeerState::kReset) << PeerStateName(seen);
    ASSERT_TRUE((*relay)->WaitOutcome(proxy::Outcome::kDenied, 1))
        << OutcomesString((*relay)->totals());
    server::RuleTotals t = (*relay)->totals();
    EXPECT_EQ(t.outcome(proxy::Outcome::kDenied), 1u) << OutcomesString(t);
    EXPECT_EQ(t.bytes_to_target, 0u);
    EXPECT_EQ(echo.accepted(), 0) << "a denied client reached the target";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, AclTest,
    ::testing::Values(
        AclCase{"DenyLoopbackPrefixRefuses", "ipv4", {}, {"127.0.0.0/8"}, false},
        AclCase{"AllowOnlyOtherPrefixRefuses", "ipv4", {"10.0.0.0/8"}, {}, false},
        AclCase{"AllowExactClientRelays", "ipv4", {"127.0.0.1/32"}, {}, true},
        AclCase{"DenyWinsOverAllow", "ipv4", {"127.0.0.0/8"}, {"127.0.0.1/32"}, false},
        AclCase{"Ipv6DenyLoopbackRefuses", "ipv6", {}, {"::1/128"}, false},
        AclCase{"Ipv6AllowLoopbackRelays", "ipv6", {"::1/128"}, {}, true},
        AclCase{"Ipv6ClientOutsideIpv4AllowListRefused", "ipv6", {"127.0.0.0/8"}, {}, false},
        AclCase{"Ipv6ClientUnaffectedByIpv4DenyRelays", "ipv6", {}, {"127.0.0.0/8"}, true},
        // A unix peer has no IP: only an allow list keeps it out.
        AclCase{"UnixClientRefusedByAnyAllowList", "unix", {"127.0.0.1/32"}, {}, false},
        AclCase{"UnixClientUnaffectedByDenyList", "unix", {}, {"0.0.0.0/0"}, true}),
    [](const ::testing::TestParamInfo<AclCase>& info) { return info.param.name; });

}  // namespace
}  // namespace ferry::testing
