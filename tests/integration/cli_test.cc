// The command line's contract: usage errors exit 2 with one line on stderr
// that names the flag or the problem; `validate` exits 0 or 1 with each
// error's field path; `version` exits 0; `forward` relays; `run` exits 1 when
// it cannot bind, and 0 after SIGTERM.

#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testing/admin.h"
#include "tests/testing/child_process.h"
#include "tests/testing/data.h"
#include "tests/testing/relay.h"
#include "tests/testing/sockets.h"
#include "tests/testing/target_server.h"

namespace ferry::testing {
namespace {

using Result = FerryRun;

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

TEST(CliTest, ForwardFlagValuesAreCheckedAndNamed) {
  for (const auto& [flag, value, want] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"--rate", "0", "bad --rate \"0\""},
           {"--rate", "fast", "bad --rate \"fast\""},
           {"--proxy-protocol", "v3", "bad --proxy-protocol \"v3\" (v1, v2)"},
       }) {
    Result r = RunFerry({"forward", flag, value, "127.0.0.1:0", "127.0.0.1:9"});
    EXPECT_EQ(r.code, 2) << flag << " " << value;
    EXPECT_TRUE(absl::StrContains(r.err, want)) << r.err;
    EXPECT_EQ(Lines(r.err), 1) << r.err;
  }
}

TEST(CliTest, ForwardProgressTotalEqualsTheMetricsBytes) {
  EchoServer echo("127.0.0.1:0");
  ASSERT_TRUE(echo.ok());
  auto child = ChildProcess::Start(
      FerryBinary(), {"forward", "--progress", "--name", "main", "--admin", "127.0.0.1:0", "--rate",
                      "2M", "127.0.0.1:0", echo.target()});
  ASSERT_TRUE(child.ok()) << child.status();
  auto address = WaitListening(**child, "main");
  ASSERT_TRUE(address.ok()) << address.status();
  // 3 MiB each way at 2 MiB/s: the meter ticks at least once meanwhile.
  const std::string data = RandomBytes(3 << 20, 7);
  {
    Connected c = Connect(*address, 5000, 20000);
    ASSERT_TRUE(c.fd.valid());
    std::thread writer([&] {
      SendAll(c.fd.get(), data);
      ::shutdown(c.fd.get(), SHUT_WR);
    });
    std::string back;
    ReadToEof(c.fd.get(), &back);
    writer.join();
    EXPECT_EQ(back == data, true);
  }
  std::string err = (*child)->Stderr();
  size_t at = err.find("admin listening\" address=");
  ASSERT_NE(at, std::string::npos) << err;
  auto admin = net::Address::ParseLiteral(
      err.substr(at + 25, err.find_first_of(" \n", at + 25) - (at + 25)));
  ASSERT_TRUE(admin.ok());
  auto m = Samples(HttpGet(*admin, "/metrics").body);
  double metric_bytes = 0;
  for (const auto& [key, value] : m) {
    if (absl::StartsWith(key, "ferry_bytes_total{rule=\"main\"")) metric_bytes += value;
  }
  EXPECT_EQ(metric_bytes, 2.0 * data.size());

  ASSERT_TRUE((*child)->Signal(SIGTERM));
  ASSERT_TRUE((*child)->WaitExit(Millis(5000)).has_value());
  (*child)->WaitOutputClosed(Millis(2000));
  err = (*child)->Stderr();
  EXPECT_TRUE(absl::StrContains(err, "progress: ")) << err;
  EXPECT_TRUE(absl::StrContains(err, absl::StrCat("total: ", 2 * data.size(), " bytes"))) << err;
}

TEST(CliTest, ForwardUserDropsRootKeepingOnlyTheRightToBindLowPorts) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  if (::getpwnam("nobody") == nullptr) GTEST_SKIP() << "no user nobody";
  EchoServer echo("127.0.0.1:0");
  auto child = ChildProcess::Start(FerryBinary(), {"forward", "--user", "nobody", "--name", "main",
                                                   "127.0.0.1:0", echo.target()});
  ASSERT_TRUE(child.ok()) << child.status();
  auto address = WaitListening(**child, "main");
  ASSERT_TRUE(address.ok()) << address.status();
  Connected c = Connect(*address);
  EXPECT_EQ(EchoRoundTrip(c.fd.get(), "as nobody"), "");
  std::ifstream status(absl::StrCat("/proc/", (*child)->pid(), "/status"));
  std::string line, uid, cap_eff;
  while (std::getline(status, line)) {
    if (absl::StartsWith(line, "Uid:")) uid = line;
    if (absl::StartsWith(line, "CapEff:")) cap_eff = line;
  }
  std::string nobody = std::to_string(::getpwnam("nobody")->pw_uid);
  EXPECT_EQ(uid, absl::StrCat("Uid:\t", nobody, "\t", nobody, "\t", nobody, "\t", nobody)) << uid;
  EXPECT_EQ(cap_eff, "CapEff:\t0000000000000400") << "only CAP_NET_BIND_SERVICE";
  ASSERT_TRUE((*child)->Signal(SIGTERM));
  c.fd.Reset();
  ASSERT_TRUE((*child)->WaitExit(Millis(5000)).has_value());
  EXPECT_EQ((*child)->exit_code(), 0) << (*child)->Stderr();
}

TEST(CliTest, LowPortWithoutTheRightFailsNamingTheRuleAndWhy) {
  std::string setpriv = FindTool("setpriv");
  if (::geteuid() != 0 || setpriv.empty() || ::getpwnam("nobody") == nullptr) {
    GTEST_SKIP() << "needs root, setpriv and user nobody";
  }
  std::ifstream start_file("/proc/sys/net/ipv4/ip_unprivileged_port_start");
  int start = 1024;
  start_file >> start;
  if (start <= 1) GTEST_SKIP() << "every port is unprivileged here";
  // As nobody, without CAP_NET_BIND_SERVICE.
  std::string out;
  int code =
      RunCommand(setpriv,
                 {"--reuid=nobody", "--regid=nogroup", "--clear-groups", FerryBinary(), "forward",
                  "--name", "low", absl::StrCat("127.0.0.1:", start - 1), "127.0.0.1:9"},
                 &out);
  EXPECT_EQ(code, 1) << out;
  EXPECT_TRUE(absl::StrContains(out, "rule \\\"low\\\": bind 127.0.0.1:")) << out;
  EXPECT_TRUE(absl::StrContains(out, "need root or CAP_NET_BIND_SERVICE")) << out;
}

TEST(CliTest, Sigusr1ReopensTheAccessLogAfterARotation) {
  EchoServer echo("127.0.0.1:0");
  TempDir dir;
  const std::string log = dir.File("access.log");
  std::string config =
      dir.Write("ferry.yaml",
                OneRuleYaml("127.0.0.1:0", {echo.target()},
                            absl::StrCat("    access_log: { format: text, path: \"", log, "\" }\n"),
                            "admin: { listen: \"\" }\n"));
  auto child = ChildProcess::Start(FerryBinary(), {"run", "--config", config, "--workers", "1"});
  ASSERT_TRUE(child.ok()) << child.status();
  auto address = WaitListening(**child, "main");
  ASSERT_TRUE(address.ok()) << address.status();
  auto lines = [](const std::string& path) {
    std::ifstream in(path);
    int n = 0;
    for (std::string line; std::getline(in, line);) n += absl::StrContains(line, "outcome=ok");
    return n;
  };
  {
    Connected c = Connect(*address);
    EXPECT_EQ(EchoRoundTrip(c.fd.get(), "one"), "");
  }
  ASSERT_TRUE(WaitUntil([&] { return lines(log) == 1; }, Millis(5000)));
  ASSERT_EQ(std::rename(log.c_str(), (log + ".1").c_str()), 0);
  ASSERT_TRUE((*child)->Signal(SIGUSR1));
  ASSERT_TRUE((*child)->WaitForStderr("reopen logs", Millis(5000))) << (*child)->Stderr();
  {
    Connected c = Connect(*address);
    EXPECT_EQ(EchoRoundTrip(c.fd.get(), "two"), "");
  }
  ASSERT_TRUE(WaitUntil([&] { return lines(log) == 1; }, Millis(5000)))
      << "no line in the reopened file";
  EXPECT_EQ(lines(log + ".1"), 1);
  ASSERT_TRUE((*child)->Signal(SIGTERM));
  ASSERT_TRUE((*child)->WaitExit(Millis(5000)).has_value());
  EXPECT_EQ((*child)->exit_code(), 0) << (*child)->Stderr();
}

TEST(CliTest, ASecondFerryThatFailsToStartResetsNoClientOfTheFirst) {
  EchoServer echo("127.0.0.1:0");
  // Fixed ports, so the second ferry binds beside the first (SO_REUSEPORT)
  // and then fails on the admin address the first holds.
  Listening port = Listen("127.0.0.1:0");
  Listening admin_port = Listen("127.0.0.1:0");
  const net::Address rule = port.address, admin = admin_port.address;
  port.fd.Reset();
  admin_port.fd.Reset();
  TempDir dir;
  std::string config = dir.Write(
      "ferry.yaml", OneRuleYaml(rule.ToString(), {echo.target()}, "",
                                absl::StrCat("admin: { listen: \"", admin.ToString(), "\" }\n")));
  auto first = ChildProcess::Start(FerryBinary(), {"run", "--config", config, "--workers", "2"});
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(WaitListening(**first, "main").ok());

  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::thread load([&] {
    while (!stop.load()) {
      Connected c = Connect(rule, 2000, 2000);
      if (c.fd.valid() && EchoRoundTrip(c.fd.get(), "x").empty()) {
        ++ok;
      } else {
        ++failed;
      }
    }
  });
  for (int i = 0; i < 5; ++i) {
    Result r = RunFerry({"run", "--config", config, "--workers", "2"});
    EXPECT_EQ(r.code, 1);
    EXPECT_TRUE(absl::StrContains(r.err, admin.ToString())) << r.err;
  }
  stop.store(true);
  load.join();
  EXPECT_GT(ok.load(), 0);
  EXPECT_EQ(failed.load(), 0) << "clients of the running ferry were refused or reset";
  ASSERT_TRUE((*first)->Signal(SIGTERM));
  ASSERT_TRUE((*first)->WaitExit(Millis(5000)).has_value());
}

TEST(CliTest, UnknownUserFailsTheStartNamingIt) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  Result r = RunFerry({"forward", "--user", "no-such-user-here", "127.0.0.1:0", "127.0.0.1:9"});
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "no-such-user-here")) << r.err;
}

}  // namespace
}  // namespace ferry::testing
