// Addresses (DESIGN.md "Addresses"): a relay between different families
// (IPv4, IPv6, unix) keeps every byte; with INADDR_DEFAULT set, ":PORT"
// listens on that address and connections to targets leave from it.

#include <arpa/inet.h>
#include <stdlib.h>
#include <sys/socket.h>

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

struct Families {
  std::string listen;
  std::string target;
};

class CrossFamilyTest : public ::testing::TestWithParam<Families> {};

TEST_P(CrossFamilyTest, BytesArriveIntactBothWaysBetweenFamilies) {
  const Families& f = GetParam();
  if ((f.listen == "ipv6" || f.target == "ipv6") && !HaveIpv6Loopback()) {
    GTEST_SKIP() << "no IPv6 loopback here";
  }
  TempDir dir;
  const uint64_t kBytes = 8 << 20;
  Transfer target_got, target_sent;
  TargetServer target(ListenLiteral(f.target, dir.path(), "target"), [&](int fd) {
    std::thread writer([&] {
      target_sent = SendRandom(fd, kBytes, 11);
      ::shutdown(fd, SHUT_WR);
    });
    target_got = ReceiveAndHash(fd);
    writer.join();
  });
  ASSERT_TRUE(target.ok()) << std::strerror(target.error());
  auto relay =
      Relay::Start(OneRuleYaml(ListenLiteral(f.listen, dir.path(), "ferry"), {target.target()}));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Connected client = (*relay)->Connect();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);
  Transfer sent, got;
  std::thread writer([&] {
    sent = SendRandom(client.fd.get(), kBytes, 12);
    ::shutdown(client.fd.get(), SHUT_WR);
  });
  got = ReceiveAndHash(client.fd.get());
  writer.join();
  ASSERT_TRUE(target.WaitFinished(1, Millis(10000)));
  EXPECT_EQ(target_got.bytes, kBytes);
  EXPECT_EQ(target_got.sha256, sent.sha256);
  EXPECT_EQ(got.bytes, kBytes);
  EXPECT_EQ(got.sha256, target_sent.sha256);
  EXPECT_TRUE(got.eof && target_got.eof);
  ASSERT_TRUE((*relay)->WaitOutcome(proxy::Outcome::kOk, 1)) << OutcomesString((*relay)->totals());
}

INSTANTIATE_TEST_SUITE_P(Pairs, CrossFamilyTest,
                         ::testing::Values(Families{"ipv4", "ipv6"}, Families{"ipv6", "ipv4"},
                                           Families{"unix", "ipv4"}, Families{"ipv4", "unix"}),
                         [](const ::testing::TestParamInfo<Families>& info) {
                           return info.param.listen + "_to_" + info.param.target;
                         });

// Sets an environment variable for one test's scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = ::getenv(name)) old_ = old, had_ = true;
    ::setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_) {
      ::setenv(name_, old_.c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(InaddrDefaultTest, AnyPortListensOnItAndTargetConnectionsLeaveFromIt) {
  ScopedEnv env("INADDR_DEFAULT", "127.0.0.2");
  std::string peer;
  TargetServer target("127.0.0.1:0", [&](int fd) {
    sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
      peer = net::Address::FromSockaddr(reinterpret_cast<sockaddr*>(&ss), len).HostString();
    }
    std::string hello;
    ReadExactly(fd, 5, &hello);
    SendAll(fd, hello);
  });
  ASSERT_TRUE(target.ok());
  auto relay = Relay::Start(OneRuleYaml(":0", {target.target()}));
  ASSERT_TRUE(relay.ok()) << relay.status();
  EXPECT_EQ((*relay)->address().HostString(), "127.0.0.2");
  Connected client = (*relay)->Connect();
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);
  EXPECT_EQ(EchoRoundTrip(client.fd.get(), "hello"), "");
  ASSERT_TRUE(target.WaitFinished(1, Millis(5000)));
  EXPECT_EQ(peer, "127.0.0.2") << "the connection to the target left from another address";
}

}  // namespace
}  // namespace ferry::testing
