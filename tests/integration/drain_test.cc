// Promise (SIGTERM): keep accepting for drain.delay, then stop accepting,
// let open connections finish for up to drain.timeout, close the rest and
// exit 0. Run against the real binary: `ferry run --config FILE`.

#include <signal.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testing/child_process.h"
#include "tests/testing/relay.h"
#include "tests/testing/sockets.h"
#include "tests/testing/target_server.h"

namespace ferry::testing {
namespace {

std::string DrainConfig(const std::string& listen, const std::string& target,
                        const std::string& delay, const std::string& timeout) {
  return OneRuleYaml(
      listen, {target}, "",
      absl::StrCat("drain: { delay: \"", delay, "\", timeout: \"", timeout, "\" }\n"));
}

class FerryRun {
 public:
  // Starts `ferry run --config <yaml in dir> --workers 2` and waits for it to listen.
  void Start(const TempDir& dir, const std::string& yaml) {
    std::string binary = FerryBinary();
    ASSERT_FALSE(binary.empty()) << "FERRY_BINARY is not set";
    std::string path = dir.Write("ferry.yaml", yaml);
    auto child = ChildProcess::Start(binary, {"run", "--config", path, "--workers", "2"});
    ASSERT_TRUE(child.ok()) << child.status();
    child_ = std::move(*child);
    auto address = WaitListening(*child_, "main");
    ASSERT_TRUE(address.ok()) << address.status();
    address_ = *address;
  }
  ChildProcess& child() { return *child_; }
  const net::Address& address() const { return address_; }

 private:
  std::unique_ptr<ChildProcess> child_;  // killed by pid if still running
  net::Address address_;
};

TEST(DrainTest, SigtermAcceptsDuringDelayThenRefusesWhileOpenConnectionFinishes) {
  EchoServer echo("127.0.0.1:0");
  ASSERT_TRUE(echo.ok());
  TempDir dir;
  FerryRun ferry;
  ASSERT_NO_FATAL_FAILURE(
      ferry.Start(dir, DrainConfig("127.0.0.1:0", echo.target(), "200ms", "2s")));
  Connected open = Connect(ferry.address());
  ASSERT_TRUE(open.fd.valid()) << std::strerror(open.err);
  ASSERT_EQ(EchoRoundTrip(open.fd.get(), "before"), "");

  ASSERT_TRUE(ferry.child().Signal(SIGTERM));
  const int64_t signalled = NowMs();
  {
    // Within drain.delay: still accepted, and relayed.
    Connected during = Connect(ferry.address());
    ASSERT_TRUE(during.fd.valid()) << "refused during drain.delay: " << std::strerror(during.err);
    EXPECT_EQ(EchoRoundTrip(during.fd.get(), "during delay"), "");
    ASSERT_LT(NowMs() - signalled, 200) << "too slow to observe drain.delay";
  }
  // After drain.delay: the port refuses.
  bool refused = WaitUntil([&] { return Connect(ferry.address(), 500).err == ECONNREFUSED; },
                           Millis(2000), Millis(10));
  const int64_t refused_after = NowMs() - signalled;
  EXPECT_TRUE(refused) << "the listen port still accepts " << refused_after << " ms after SIGTERM";
  EXPECT_GE(refused_after, 190) << "stopped accepting before drain.delay";

  // The open connection keeps relaying until its client closes it.
  EXPECT_EQ(EchoRoundTrip(open.fd.get(), "after the listener closed"), "");
  EXPECT_TRUE(ferry.child().Running()) << ferry.child().Stderr();
  open.fd.Reset();
  const int64_t closed = NowMs();
  ASSERT_TRUE(ferry.child().WaitExit(Millis(3000)).has_value()) << "still running after drain";
  EXPECT_EQ(ferry.child().exit_code(), 0) << ferry.child().Stderr();
  EXPECT_LT(NowMs() - closed, 1000) << "waited for drain.timeout though nothing was open";
}

TEST(DrainTest, ConnectionThatNeverClosesIsCutAtDrainTimeoutAndExitIsZero) {
  EchoServer echo("127.0.0.1:0");
  ASSERT_TRUE(echo.ok());
  TempDir dir;
  FerryRun ferry;
  ASSERT_NO_FATAL_FAILURE(
      ferry.Start(dir, DrainConfig("127.0.0.1:0", echo.target(), "200ms", "2s")));
  Connected stuck = Connect(ferry.address());
  ASSERT_TRUE(stuck.fd.valid()) << std::strerror(stuck.err);
  ASSERT_EQ(EchoRoundTrip(stuck.fd.get(), "I will never close"), "");

  ASSERT_TRUE(ferry.child().Signal(SIGTERM));
  const int64_t signalled = NowMs();
  ASSERT_TRUE(ferry.child().WaitExit(Millis(6000)).has_value()) << "not cut at drain.timeout";
  const int64_t elapsed = NowMs() - signalled;
  EXPECT_EQ(ferry.child().exit_code(), 0) << ferry.child().Stderr();
  // drain.delay, then drain.timeout.
  EXPECT_GE(elapsed, 2000);
  EXPECT_LT(elapsed, 4000);
  PeerState seen = ProbePeer(stuck.fd.get(), 1000);
  EXPECT_TRUE(seen == PeerState::kEof || seen == PeerState::kReset) << PeerStateName(seen);
}

TEST(DrainTest, SecondSigtermCutsOpenConnectionsAndExitsZeroAtOnce) {
  EchoServer echo("127.0.0.1:0");
  ASSERT_TRUE(echo.ok());
  TempDir dir;
  FerryRun ferry;
  ASSERT_NO_FATAL_FAILURE(ferry.Start(dir, DrainConfig("127.0.0.1:0", echo.target(), "0s", "30s")));
  Connected open = Connect(ferry.address());
  ASSERT_TRUE(open.fd.valid()) << std::strerror(open.err);
  ASSERT_EQ(EchoRoundTrip(open.fd.get(), "hello"), "");
  ASSERT_TRUE(ferry.child().Signal(SIGTERM));
  ASSERT_TRUE(ferry.child().WaitForStderr("msg=\"draining\"", Millis(2000)));
  // Still draining: the open connection holds it up.
  EXPECT_FALSE(ferry.child().WaitExit(Millis(300)).has_value());
  EXPECT_EQ(EchoRoundTrip(open.fd.get(), "still relayed while draining"), "");
  ASSERT_TRUE(ferry.child().Signal(SIGTERM));
  const int64_t second = NowMs();
  ASSERT_TRUE(ferry.child().WaitExit(Millis(3000)).has_value()) << "second SIGTERM ignored";
  EXPECT_LT(NowMs() - second, 1000);
  EXPECT_EQ(ferry.child().exit_code(), 0) << ferry.child().Stderr();
  PeerState seen = ProbePeer(open.fd.get(), 1000);
  EXPECT_TRUE(seen == PeerState::kEof || seen == PeerState::kReset) << PeerStateName(seen);
}

// A unix listener is one socket all workers share; when the drain stops
// accepting, a new client must be refused, not parked in a backlog nobody
// accepts from until the drain ends.
TEST(DrainTest, UnixListenerRefusesNewClientsOnceDrainStopsAccepting) {
  EchoServer echo("127.0.0.1:0");
  ASSERT_TRUE(echo.ok());
  TempDir dir;
  auto relay = Relay::Start(
      DrainConfig(ListenLiteral("unix", dir.path(), "ferry"), echo.target(), "0s", "3s"));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected open = (*relay)->Connect();
  ASSERT_TRUE(open.fd.valid()) << std::strerror(open.err);
  ASSERT_EQ(EchoRoundTrip(open.fd.get(), "before"), "");

  (*relay)->server().Drain();
  int last_err = 0;
  bool refused = WaitUntil(
      [&] {
        Connected probe = Connect((*relay)->address(), 200);
        last_err = probe.err;
        return probe.err != 0;
      },
      Millis(1000), Millis(10));
  EXPECT_TRUE(refused) << "new unix clients still connect after the drain stopped accepting";
  if (!refused) {
    // Show where such a client ends up: connected, but never relayed.
    Connected parked = Connect((*relay)->address(), 200, 300);
    if (parked.fd.valid()) {
      std::string problem = EchoRoundTrip(parked.fd.get(), "anyone?");
      ADD_FAILURE() << "a client connected during the drain gets: "
                    << (problem.empty() ? "relayed" : problem);
    }
  } else {
    EXPECT_TRUE(last_err == ECONNREFUSED || last_err == ENOENT) << std::strerror(last_err);
  }
  EXPECT_EQ(EchoRoundTrip(open.fd.get(), "still relaying"), "");
  open.fd.Reset();
  EXPECT_TRUE((*relay)->WaitIdle(Millis(2000)));
}

}  // namespace
}  // namespace ferry::testing
