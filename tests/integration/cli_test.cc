// The command line's contract: usage errors exit 2 with one line on stderr
// that names the flag or the problem; `validate` exits 0 or 1 with each
// error's field path; `version` exits 0; `forward` relays; `run` exits 1 when
// it cannot bind, and 0 after SIGTERM.

#include <signal.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/testing/child_process.h"
#include "tests/testing/relay.h"
#include "tests/testing/sockets.h"
#include "tests/testing/target_server.h"

namespace ferry::testing {
namespace {

struct Result {
  int code = -1;
  std::string out;
  std::string err;
};

Result RunFerry(const std::vector<std::string>& args) {
  Result r;
  std::string binary = FerryBinary();
  if (binary.empty()) {
    ADD_FAILURE() << "FERRY_BINARY is not set";
    return r;
  }
  auto child = ChildProcess::Start(binary, args);
  if (!child.ok()) {
    ADD_FAILURE() << child.status();
    return r;
  }
  if (!(*child)->WaitExit(Millis(10000)).has_value()) {
    ADD_FAILURE() << "ferry did not exit";
    return r;  // the destructor kills it
  }
  (*child)->WaitOutputClosed(Millis(2000));
  r.code = (*child)->exit_code();
  r.out = (*child)->Stdout();
  r.err = (*child)->Stderr();
  return r;
}

int Lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

TEST(CliTest, UnknownTopLevelFlagIsUsageErrorNamingIt) {
  Result r = RunFerry({"--bogus"});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(Lines(r.err), 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "--bogus")) << r.err;
}

TEST(CliTest, UnknownForwardFlagIsUsageErrorNamingIt) {
  Result r = RunFerry({"forward", "--bogus", "a", "b"});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(Lines(r.err), 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "--bogus")) << r.err;
}

TEST(CliTest, ForwardPortOutOfRangeIsUsageErrorSayingSo) {
  Result r = RunFerry({"forward", "127.0.0.1:70000", "127.0.0.1:1"});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(Lines(r.err), 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "port 70000 out of range")) << r.err;
}

TEST(CliTest, VersionExitsZeroAndPrintsIt) {
  Result r = RunFerry({"version"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(absl::StartsWith(r.out, "ferry ")) << r.out;
}

TEST(CliTest, ValidateGoodConfigExitsZero) {
  TempDir dir;
  std::string path = dir.Write("good.yaml", R"(
rules:
  - name: main
    listen: "127.0.0.1:8080"
    targets: ["127.0.0.1:8081"]
    idle_timeout: "5m"
)");
  Result r = RunFerry({"validate", "--config", path});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "ok")) << r.out;
  EXPECT_EQ(r.err, "");
}

TEST(CliTest, ValidateCheckFilesReportsAnUnreadableInsertFile) {
  TempDir dir;
  std::string path = dir.Write("insert.yaml", R"(rules:
  - name: web
    listen: "127.0.0.1:8080"
    targets: ["127.0.0.1:8081"]
    insert: { file: "/nonexistent/prefix.bin" }
)");
  EXPECT_EQ(RunFerry({"validate", "--config", path}).code, 0);  // syntax and meaning only
  Result r = RunFerry({"validate", "--config", path, "--check-files"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(absl::StrContains(
      r.err, "rules[0].insert.file: cannot read \"/nonexistent/prefix.bin\": No such file"))
      << r.err;
}

TEST(CliTest, ValidateBadConfigExitsOneNamingTheFieldPath) {
  TempDir dir;
  std::string path = dir.Write("bad.yaml", R"(
rules:
  - name: main
    listen: "127.0.0.1:70000"
    targets: ["127.0.0.1:8081"]
)");
  Result r = RunFerry({"validate", "--config", path});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(absl::StrContains(r.err, "rules[0].listen: ")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "70000")) << r.err;
}

TEST(CliTest, RunWithListenPortTakenExitsOneNamingTheBind) {
  Listening taken = Listen("127.0.0.1:0");  // no SO_REUSEPORT: ferry cannot share it
  ASSERT_TRUE(taken.fd.valid());
  TempDir dir;
  std::string path =
      dir.Write("taken.yaml", OneRuleYaml(taken.address.ToString(), {"127.0.0.1:9"}));
  Result r = RunFerry({"run", "--config", path});
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "bind")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, taken.address.ToString())) << r.err;
}

TEST(CliTest, ForwardRelaysAndExitsZeroOnSigterm) {
  EchoServer echo("127.0.0.1:0");
  ASSERT_TRUE(echo.ok());
  auto child = ChildProcess::Start(
      FerryBinary(), {"forward", "--workers", "2", "--name", "main", "127.0.0.1:0", echo.target()});
  ASSERT_TRUE(child.ok()) << child.status();
  auto address = WaitListening(**child, "main");
  ASSERT_TRUE(address.ok()) << address.status();
  {
    Connected c = Connect(*address);
    ASSERT_TRUE(c.fd.valid()) << std::strerror(c.err);
    EXPECT_EQ(EchoRoundTrip(c.fd.get(), "through forward"), "");
  }
  ASSERT_TRUE((*child)->Signal(SIGTERM));
  ASSERT_TRUE((*child)->WaitExit(Millis(3000)).has_value());
  EXPECT_EQ((*child)->exit_code(), 0) << (*child)->Stderr();
}

}  // namespace
}  // namespace ferry::testing
