// Rule features seen from both ends: PROXY protocol accepted strictly from
// trusted peers and sent to the target, close: lazy, max_connections_per_source
// and the access log.

#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "pkg/proxy/proxy_protocol.h"
#include "tests/testing/relay.h"
#include "tests/testing/sockets.h"
#include "tests/testing/target_server.h"

namespace ferry::testing {
namespace {

using proxy::Outcome;

// A target that records everything a connection sends until EOF.
struct RecordingTarget {
  RecordingTarget()
      : server("127.0.0.1:0", [this](int fd) {
          std::string got;
          ReadToEof(fd, &got, 1 << 20);
          std::lock_guard<std::mutex> lock(mu);
          received.push_back(got);
        }) {}
  std::string Received(size_t i) {
    std::lock_guard<std::mutex> lock(mu);
    return i < received.size() ? received[i] : "";
  }
  std::mutex mu;
  std::vector<std::string> received;
  TargetServer server;
};

// Connects from `source` (an address of the loopback net) to `to`.
Connected ConnectFrom(const std::string& source, const net::Address& to) {
  Connected c;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  c.fd = base::Fd(fd);
  auto from = net::Address::ParseLiteral(absl::StrCat(source, ":0"));
  if (::bind(fd, from->sa(), from->len()) != 0 || ::connect(fd, to.sa(), to.len()) != 0) {
    c.err = errno;
    c.fd.Reset();
    return c;
  }
  SetIoTimeouts(fd, kIoTimeoutMs);
  return c;
}

// Sends `data`, half-closes, and reads the reply to EOF.
std::string Exchange(int fd, const std::string& data) {
  SendAll(fd, data);
  ::shutdown(fd, SHUT_WR);
  std::string reply;
  ReadToEof(fd, &reply);
  return reply;
}

std::string AcceptYaml(const std::string& target, const std::string& more = "") {
  return OneRuleYaml("127.0.0.1:0", {target},
                     absl::StrCat("    proxy_protocol: { accept: true, trusted: [\"127.0.0.0/8\"], "
                                  "timeout: \"300ms\"",
                                  more, " }\n"));
}

TEST(ProxyProtocolTest, AcceptedClientAddressIsSentOnwardAndPayloadFollowsIntact) {
  RecordingTarget target;
  ASSERT_TRUE(target.server.ok());
  auto relay = Relay::Start(AcceptYaml(target.server.target(), ", send: v2"));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected c = (*relay)->Connect();
  ASSERT_TRUE(c.fd.valid());
  Exchange(c.fd.get(), "PROXY TCP4 10.1.2.3 10.0.0.1 5555 443\r\nhello after the header");
  ASSERT_TRUE(target.server.WaitFinished(1, Millis(5000)));

  std::string got = target.Received(0);
  proxy::ProxyParse p = proxy::ParseProxyHeader(got);
  ASSERT_EQ(p.state, proxy::ProxyParse::State::kDone) << p.error;
  EXPECT_EQ(p.header.version, proxy::ProxyVersion::kV2);
  EXPECT_EQ(p.header.source.ToString(), "10.1.2.3:5555");
  EXPECT_EQ(p.header.destination.ToString(), "10.0.0.1:443");
  EXPECT_EQ(got.substr(p.consumed), "hello after the header");
  ASSERT_TRUE((*relay)->WaitOutcome(Outcome::kOk, 1));
}

TEST(ProxyProtocolTest, HeaderSplitAcrossWritesIsAwaited) {
  RecordingTarget target;
  auto relay = Relay::Start(AcceptYaml(target.server.target()));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected c = (*relay)->Connect();
  ASSERT_TRUE(c.fd.valid());
  std::string v2;
  proxy::AppendProxyHeader(proxy::ProxyVersion::kV2,
                           *net::Address::ParseLiteral("[2001:db8::1]:40000"),
                           *net::Address::ParseLiteral("[2001:db8::2]:443"), &v2);
  for (char ch : v2) {  // one byte at a time
    ASSERT_TRUE(SendAll(c.fd.get(), std::string(1, ch)));
    std::this_thread::sleep_for(Millis(1));
  }
  Exchange(c.fd.get(), "payload");
  ASSERT_TRUE(target.server.WaitFinished(1, Millis(5000)));
  EXPECT_EQ(target.Received(0), "payload");
  ASSERT_TRUE((*relay)->WaitOutcome(Outcome::kOk, 1));
}

TEST(ProxyProtocolTest, DeclaredClientIsWhatTheAclJudges) {
  RecordingTarget target;
  auto relay = Relay::Start(AcceptYaml(target.server.target()) + "    allow: [\"10.0.0.0/8\"]\n");
  ASSERT_TRUE(relay.ok()) << relay.status();
  // The real peer (127.0.0.1) is not in the allow list; the declared one is.
  Connected ok = (*relay)->Connect();
  Exchange(ok.fd.get(), "PROXY TCP4 10.1.2.3 10.0.0.1 5555 443\r\nin");
  Connected denied = (*relay)->Connect();
  std::string reply = Exchange(denied.fd.get(), "PROXY TCP4 192.168.1.1 10.0.0.1 5555 443\r\nout");
  EXPECT_EQ(reply, "");
  ASSERT_TRUE((*relay)->WaitOutcome(Outcome::kDenied, 1)) << OutcomesString((*relay)->totals());
  ASSERT_TRUE((*relay)->WaitOutcome(Outcome::kOk, 1)) << OutcomesString((*relay)->totals());
  EXPECT_EQ(target.server.accepted(), 1);
}

TEST(ProxyProtocolTest, UntrustedPeerMissingBadOrLateHeadersAreRejected) {
  RecordingTarget target;
  // Only 10.9.9.9 may send a header: 127.0.0.1 is refused whatever it sends.
  auto untrusted = Relay::Start(
      OneRuleYaml("127.0.0.1:0", {target.server.target()},
                  "    proxy_protocol: { accept: true, trusted: [\"10.9.9.9/32\"] }\n"));
  ASSERT_TRUE(untrusted.ok()) << untrusted.status();
  Connected u = (*untrusted)->Connect();
  EXPECT_EQ(Exchange(u.fd.get(), "PROXY TCP4 10.1.2.3 10.0.0.1 5555 443\r\nx"), "");
  ASSERT_TRUE((*untrusted)->WaitOutcome(Outcome::kProxyProtocol, 1));

  auto relay = Relay::Start(AcceptYaml(target.server.target()));
  ASSERT_TRUE(relay.ok()) << relay.status();
  // No header: a plain request is not sniffed and passed on.
  Connected plain = (*relay)->Connect();
  EXPECT_EQ(Exchange(plain.fd.get(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "");
  // A malformed one.
  Connected bad = (*relay)->Connect();
  EXPECT_EQ(Exchange(bad.fd.get(), "PROXY TCP4 10.1.2.3  10.0.0.1 5555 443\r\n"), "");
  // A client that waits for the server to speak first: closed at the timeout,
  // never left hanging.
  Connected silent = (*relay)->Connect();
  int64_t start = NowMs();
  PeerState s = ProbePeer(silent.fd.get(), 5000);
  EXPECT_TRUE(s == PeerState::kEof || s == PeerState::kReset) << PeerStateName(s);
  EXPECT_LT(NowMs() - start, 3000);
  // The header started and the client went away in the middle of it.
  Connected partial = (*relay)->Connect();
  EXPECT_EQ(Exchange(partial.fd.get(), "PROXY TCP4 10.1."), "");
  ASSERT_TRUE((*relay)->WaitOutcome(Outcome::kProxyProtocol, 4))
      << OutcomesString((*relay)->totals());
  EXPECT_EQ(target.server.accepted(), 0);
}

TEST(ProxyProtocolTest, WithoutAcceptAHeaderIsJustData) {
  RecordingTarget target;
  auto relay = Relay::Start(OneRuleYaml("127.0.0.1:0", {target.server.target()}));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected c = (*relay)->Connect();
  const std::string header = "PROXY TCP4 10.1.2.3 10.0.0.1 5555 443\r\nrest";
  Exchange(c.fd.get(), header);
  ASSERT_TRUE(target.server.WaitFinished(1, Millis(5000)));
  EXPECT_EQ(target.Received(0), header);
}

TEST(ProxyProtocolTest, SendV1CarriesTheRealClientAndListener) {
  RecordingTarget target;
  auto relay = Relay::Start(OneRuleYaml("127.0.0.1:0", {target.server.target()},
                                        "    proxy_protocol: { send: v1 }\n"
                                        "    insert: { text: \"INSERT\" }\n"));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected c = ConnectFrom("127.0.0.3", (*relay)->address());
  ASSERT_TRUE(c.fd.valid()) << std::strerror(c.err);
  auto local = net::LocalAddress(c.fd.get());
  ASSERT_TRUE(local.ok());
  Exchange(c.fd.get(), "data");
  ASSERT_TRUE(target.server.WaitFinished(1, Millis(5000)));
  // The header first, then the insert, then the client's bytes.
  EXPECT_EQ(target.Received(0), absl::StrCat("PROXY TCP4 127.0.0.3 127.0.0.1 ", local->port(), " ",
                                             (*relay)->address().port(), "\r\nINSERTdata"));
}

TEST(MaxConnectionsPerSourceTest, EachClientIpHasItsOwnLimit) {
  EchoServer echo("127.0.0.1:0");
  auto relay = Relay::Start(
      OneRuleYaml("127.0.0.1:0", {echo.target()}, "    max_connections_per_source: 2\n"));
  ASSERT_TRUE(relay.ok()) << relay.status();
  net::Address at = (*relay)->address();
  Connected a1 = ConnectFrom("127.0.0.5", at), a2 = ConnectFrom("127.0.0.5", at);
  ASSERT_EQ(EchoRoundTrip(a1.fd.get(), "1"), "");
  ASSERT_EQ(EchoRoundTrip(a2.fd.get(), "2"), "");
  Connected a3 = ConnectFrom("127.0.0.5", at);
  PeerState s = ProbePeer(a3.fd.get(), 5000);
  EXPECT_TRUE(s == PeerState::kEof || s == PeerState::kReset) << PeerStateName(s);
  ASSERT_TRUE((*relay)->WaitOutcome(Outcome::kLimit, 1));
  // Another address is not affected.
  Connected b1 = ConnectFrom("127.0.0.6", at);
  EXPECT_EQ(EchoRoundTrip(b1.fd.get(), "b"), "");
  // A freed slot can be used again.
  a1.fd.Reset();
  ASSERT_TRUE(WaitUntil([&] { return (*relay)->totals().active == 2; }, Millis(5000)));
  Connected a4 = ConnectFrom("127.0.0.5", at);
  EXPECT_EQ(EchoRoundTrip(a4.fd.get(), "4"), "");
}

// A target that replies only after checking whether the client's FIN came
// through; `saw_eof` says which.
struct FinObservingTarget {
  FinObservingTarget()
      : server("127.0.0.1:0", [this](int fd) {
          std::string request;
          ReadExactly(fd, 3, &request);
          saw_eof = ProbePeer(fd, 300) == PeerState::kEof;
          SendAll(fd, "reply");
          ::shutdown(fd, SHUT_WR);
          std::string rest;
          ReadToEof(fd, &rest);
        }) {}
  std::atomic<bool> saw_eof{false};
  TargetServer server;
};

TEST(CloseTest, HalfPassesTheFinLazyKeepsItAndBothDeliverTheReply) {
  for (const std::string mode : {"half", "lazy"}) {
    SCOPED_TRACE(mode);
    FinObservingTarget target;
    auto relay = Relay::Start(
        OneRuleYaml("127.0.0.1:0", {target.server.target()}, "    close: " + mode + "\n"));
    ASSERT_TRUE(relay.ok()) << relay.status();
    Connected c = (*relay)->Connect();
    EXPECT_EQ(Exchange(c.fd.get(), "req"), "reply");
    ASSERT_TRUE(target.server.WaitFinished(1, Millis(5000)));
    EXPECT_EQ(target.saw_eof.load(), mode == "half");
    ASSERT_TRUE((*relay)->WaitOutcome(Outcome::kOk, 1)) << OutcomesString((*relay)->totals());
  }
}

std::vector<std::string> Lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(AccessLogTest, OneLinePerConnectionWithBytesAndOutcomeAndReopen) {
  TempDir dir;
  const std::string log = dir.File("access.log");
  RecordingTarget target;
  auto relay = Relay::Start(OneRuleYaml(
      "127.0.0.1:0", {target.server.target()},
      absl::StrCat("    deny: [\"127.0.0.9/32\"]\n    access_log: { format: json, path: \"", log,
                   "\" }\n")));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected c = ConnectFrom("127.0.0.8", (*relay)->address());
  Exchange(c.fd.get(), "twelve bytes");
  ASSERT_TRUE((*relay)->WaitOutcome(Outcome::kOk, 1));
  Connected denied = ConnectFrom("127.0.0.9", (*relay)->address());
  Exchange(denied.fd.get(), "x");
  ASSERT_TRUE((*relay)->WaitOutcome(Outcome::kDenied, 1));

  std::vector<std::string> lines = Lines(log);
  ASSERT_EQ(lines.size(), 2u) << absl::StrJoin(lines, "\n");
  EXPECT_TRUE(absl::StrContains(lines[0], "\"rule\":\"main\"")) << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[0], "\"client\":\"127.0.0.8:")) << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[0], "\"bytes_from_client\":12")) << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[0], "\"outcome\":\"ok\"")) << lines[0];
  EXPECT_TRUE(
      absl::StrContains(lines[0], absl::StrCat("\"endpoint\":\"", target.server.target(), "\"")))
      << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[1], "\"outcome\":\"denied\"")) << lines[1];

  // logrotate: move the file, then SIGUSR1 (here: the call it makes).
  ASSERT_EQ(std::rename(log.c_str(), (log + ".1").c_str()), 0);
  ASSERT_TRUE((*relay)->server().ReopenLogs().ok());
  Connected again = (*relay)->Connect();
  Exchange(again.fd.get(), "y");
  ASSERT_TRUE((*relay)->WaitOutcome(Outcome::kOk, 2));
  EXPECT_EQ(Lines(log + ".1").size(), 2u);
  ASSERT_EQ(Lines(log).size(), 1u);
  EXPECT_TRUE(absl::StrContains(Lines(log)[0], "\"bytes_from_client\":1,")) << Lines(log)[0];
}

TEST(AccessLogTest, UnwritablePathFailsTheStartNamingTheRule) {
  auto relay = Relay::Start(
      OneRuleYaml("127.0.0.1:0", {"127.0.0.1:9"},
                  "    access_log: { format: text, path: \"/nonexistent-dir/access.log\" }\n"));
  ASSERT_FALSE(relay.ok());
  EXPECT_TRUE(absl::StrContains(relay.status().message(), "rule \"main\": access_log"))
      << relay.status();
  EXPECT_TRUE(absl::StrContains(relay.status().message(), "/nonexistent-dir/access.log"))
      << relay.status();
}

}  // namespace
}  // namespace ferry::testing
