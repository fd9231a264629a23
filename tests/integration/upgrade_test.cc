// Promise: a new ferry started with --handoff takes the old one's listening
// sockets, so the old one can drain without refusing or resetting any client:
// no listening socket is ever closed.

#include <sys/socket.h>

#include <atomic>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "pkg/server/handoff.h"
#include "tests/testing/relay.h"
#include "tests/testing/sockets.h"
#include "tests/testing/target_server.h"

namespace ferry::testing {
namespace {

server::Server::Options Handoff(const std::string& path) {
  server::Server::Options o;
  o.handoff_path = path;
  return o;
}

TEST(HandoffTest, NoFerryThereIsNoListenersNotAnError) {
  TempDir dir;
  auto taken = server::TakeListeners(dir.File("nobody.sock"));
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_TRUE(taken->empty());
  auto bad = server::TakeListeners(std::string(200, 'x'));
  EXPECT_FALSE(bad.ok());
}

TEST(HandoffTest, UpgradeUnderLoadRefusesAndResetsNobody) {
  TempDir dir;
  EchoServer echo("127.0.0.1:0");
  ASSERT_TRUE(echo.ok());
  const std::string sock = dir.File("handoff.sock");
  const std::string unix_listen = dir.File("relay.sock");
  const std::string yaml = absl::StrCat(
      "admin: { listen: \"\" }\nrules:\n"
      "  - { name: main, listen: \"127.0.0.1:0\", targets: [\"",
      echo.target(),
      "\"] }\n"
      "  - { name: local, listen: \"unix:",
      unix_listen, "\", targets: [\"", echo.target(), "\"] }\n");
  auto old_relay = Relay::Start(yaml, 2, Handoff(sock));
  ASSERT_TRUE(old_relay.ok()) << old_relay.status();
  const net::Address tcp = (*old_relay)->address("main");
  const net::Address local = (*old_relay)->address("local");

  // Short connections as fast as they go, through the whole upgrade.
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::string first_failure;
  std::vector<std::thread> load;
  for (const net::Address& at : {tcp, local}) {
    load.emplace_back([&, at] {
      while (!stop.load()) {
        Connected c = Connect(at, 5000, 5000);
        std::string err = c.fd.valid() ? EchoRoundTrip(c.fd.get(), "upgrade")
                                       : std::string("connect: ") + std::strerror(c.err);
        if (err.empty()) {
          ++ok;
        } else if (failed++ == 0) {
          first_failure = err;
        }
      }
    });
  }
  // A long connection on the old ferry, which its drain lets finish.
  Connected long_lived = Connect(tcp);
  ASSERT_EQ(EchoRoundTrip(long_lived.fd.get(), "before"), "");
  ASSERT_TRUE(WaitUntil([&] { return ok.load() > 200; }, Millis(10000)));

  auto new_relay = Relay::Start(yaml, 2, Handoff(sock));
  ASSERT_TRUE(new_relay.ok()) << new_relay.status();
  // The same sockets: port 0 would have picked another port, and a second
  // unix listener could not have bound the same path.
  EXPECT_EQ((*new_relay)->address("main"), tcp);
  EXPECT_EQ((*new_relay)->address("local"), local);
  int at_takeover = ok.load();
  ASSERT_TRUE(WaitUntil([&] { return ok.load() > at_takeover + 200; }, Millis(10000)));

  // The old ferry drains (its destructor: Drain, then Wait) while the long
  // connection finishes.
  std::thread drain([&] { old_relay->reset(); });
  EXPECT_EQ(EchoRoundTrip(long_lived.fd.get(), "during"), "");
  long_lived.fd.Reset();
  drain.join();
  int at_exit = ok.load();
  ASSERT_TRUE(WaitUntil([&] { return ok.load() > at_exit + 200; }, Millis(10000)));
  stop.store(true);
  for (auto& t : load) t.join();

  EXPECT_EQ(failed.load(), 0) << "first failure: " << first_failure;
  EXPECT_GT((*new_relay)->totals("main").outcome(proxy::Outcome::kOk), 0u);
  EXPECT_GT((*new_relay)->totals("local").outcome(proxy::Outcome::kOk), 0u);
  // The unix socket file is the new ferry's: the old one left it in place.
  Connected still = Connect(local);
  EXPECT_EQ(EchoRoundTrip(still.fd.get(), "after"), "");
}

TEST(HandoffTest, AnotherWorkerCountBindsBesideInstead) {
  TempDir dir;
  EchoServer echo("127.0.0.1:0");
  const std::string sock = dir.File("handoff.sock");
  const std::string yaml = OneRuleYaml("127.0.0.1:0", {echo.target()});
  auto old_relay = Relay::Start(yaml, 2, Handoff(sock));
  ASSERT_TRUE(old_relay.ok()) << old_relay.status();
  auto new_relay = Relay::Start(yaml, 3, Handoff(sock));
  ASSERT_TRUE(new_relay.ok()) << new_relay.status();
  // Port 0 bound anew: another port, and both serve.
  EXPECT_NE((*new_relay)->address(), (*old_relay)->address());
  Connected c = (*new_relay)->Connect();
  EXPECT_EQ(EchoRoundTrip(c.fd.get(), "x"), "");
}

}  // namespace
}  // namespace ferry::testing
