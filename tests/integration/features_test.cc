// Rule features of the classic relays: insert (tcppipe --insert) and delay
// (tcppipe -w), checked at the target.

#include <sys/socket.h>

#include <atomic>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testing/relay.h"
#include "tests/testing/sockets.h"
#include "tests/testing/target_server.h"

namespace ferry::testing {
namespace {

// A target that records everything a connection sends until EOF.
struct RecordingTarget {
  RecordingTarget()
      : server("127.0.0.1:0", [this](int fd) {
          accepted_ms = NowMs();
          std::string got;
          ReadToEof(fd, &got, 1 << 20);
          received = got;
        }) {}
  std::string received;
  std::atomic<int64_t> accepted_ms{0};
  TargetServer server;
};

std::string RelayOnce(Relay& relay, const std::string& data) {
  Connected c = relay.Connect();
  if (!c.fd.valid()) return "connect failed";
  SendAll(c.fd.get(), data);
  ::shutdown(c.fd.get(), SHUT_WR);
  std::string ignored;
  ReadToEof(c.fd.get(), &ignored);
  return "";
}

TEST(InsertTest, TextReachesTheTargetBeforeTheClientsBytes) {
  RecordingTarget target;
  ASSERT_TRUE(target.server.ok());
  auto relay = Relay::Start(OneRuleYaml("127.0.0.1:0", {target.server.target()},
                                        "    insert: { text: \"HELLO from ferry\\n\" }\n"));
  ASSERT_TRUE(relay.ok()) << relay.status();
  ASSERT_EQ(RelayOnce(**relay, "client data"), "");
  ASSERT_TRUE(target.server.WaitFinished(1, Millis(5000)));
  EXPECT_EQ(target.received, "HELLO from ferry\nclient data");
  // The insert is relayed bytes like any other.
  EXPECT_EQ((*relay)->totals().bytes_to_target, target.received.size());
}

TEST(InsertTest, Base64AndFileSourcesAndAnInsertAlone) {
  TempDir dir;
  std::string binary("\x00\x01\xff PROXY-ish\r\n", 15);
  std::string path = dir.Write("prefix.bin", binary);
  for (const auto& [field, want] : std::vector<std::pair<std::string, std::string>>{
           {"base64: \"AAH/\"", std::string("\x00\x01\xff", 3)},
           {absl::StrCat("file: \"", path, "\""), binary}}) {
    RecordingTarget target;
    ASSERT_TRUE(target.server.ok());
    auto relay = Relay::Start(OneRuleYaml("127.0.0.1:0", {target.server.target()},
                                          absl::StrCat("    insert: { ", field, " }\n")));
    ASSERT_TRUE(relay.ok()) << relay.status();
    // A client that sends nothing: the target still gets the insert, then EOF.
    ASSERT_EQ(RelayOnce(**relay, ""), "");
    ASSERT_TRUE(target.server.WaitFinished(1, Millis(5000)));
    EXPECT_EQ(target.received, want) << field;
  }
}

TEST(InsertTest, MissingInsertFileFailsTheStartNamingIt) {
  auto relay = Relay::Start(OneRuleYaml("127.0.0.1:0", {"127.0.0.1:9"},
                                        "    insert: { file: \"/nonexistent/prefix\" }\n"));
  ASSERT_FALSE(relay.ok());
  EXPECT_NE(relay.status().message().find("/nonexistent/prefix"), std::string::npos)
      << relay.status();
}

TEST(DelayTest, TargetIsReachedOnlyAfterTheDelay) {
  RecordingTarget target;
  ASSERT_TRUE(target.server.ok());
  auto relay = Relay::Start(
      OneRuleYaml("127.0.0.1:0", {target.server.target()}, "    delay: \"400ms\"\n"));
  ASSERT_TRUE(relay.ok()) << relay.status();
  int64_t start = NowMs();
  ASSERT_EQ(RelayOnce(**relay, "late but whole"), "");
  ASSERT_TRUE(target.server.WaitFinished(1, Millis(5000)));
  EXPECT_GE(target.accepted_ms.load() - start, 380);
  EXPECT_EQ(target.received, "late but whole");  // bytes sent during the delay wait in the kernel
}

TEST(DelayTest, ClientThatLeavesDuringTheDelayNeverReachesTheTarget) {
  RecordingTarget target;
  ASSERT_TRUE(target.server.ok());
  auto relay = Relay::Start(
      OneRuleYaml("127.0.0.1:0", {target.server.target()}, "    delay: \"500ms\"\n"));
  ASSERT_TRUE(relay.ok()) << relay.status();
  {
    Connected c = (*relay)->Connect();
    ASSERT_TRUE(c.fd.valid());
    linger l{1, 0};  // a port scanner's RST
    ::setsockopt(c.fd.get(), SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  }
  ASSERT_TRUE((*relay)->WaitIdle(Millis(3000)));
  EXPECT_EQ(target.server.accepted(), 0);
}

}  // namespace
}  // namespace ferry::testing
