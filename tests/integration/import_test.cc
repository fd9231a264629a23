// `ferry import rinetd FILE`, run as the real binary: the YAML on stdout
// maps onto the config schema with the expected rules, problems go to stderr
// as FILE:LINE: message, and the exit status is 0 (all translated), 1 (some
// line not translated, or an unreadable file) or 2 (usage).

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pkg/config/loader.h"
#include "proto/ferry/config/v1/config.pb.h"
#include "tests/testing/child_process.h"
#include "tests/testing/sockets.h"

namespace ferry::testing {
namespace {

using ::ferry::config::v1::Config;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

using Result = FerryRun;

std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> out = absl::StrSplit(s, '\n');
  if (!out.empty() && out.back().empty()) out.pop_back();
  return out;
}

// The YAML as a config; fails the test if it does not map.
Config Parse(const std::string& yaml) {
  Config config;
  std::vector<config::Diagnostic> errors = config::ParseTextOnto(yaml, config);
  EXPECT_THAT(errors, IsEmpty()) << config::Join(errors) << "\n" << yaml;
  return config;
}

std::string TestData(const std::string& name) {
  std::string dir(__FILE__);
  dir = dir.substr(0, dir.rfind('/'));
  std::ifstream in(dir + "/../config/testdata/rinetd/" + name, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read testdata " << name;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(ImportTest, RinetdConfigWithUntranslatableLines) {
  TempDir dir;
  const std::string path = dir.Write("rinetd.conf", TestData("v073.conf"));
  Result r = RunFerry({"import", "rinetd", path});
  EXPECT_EQ(r.code, 1) << r.err;

  Config config = Parse(r.out);
  std::vector<std::string> names, listens;
  for (const auto& rule : config.rules()) {
    names.push_back(rule.name());
    listens.push_back(rule.listen());
  }
  EXPECT_THAT(names, ElementsAre("port-80", "port-8080", "port-443", "port-2222", "port-5432",
                                 "port-3389"));
  EXPECT_THAT(listens, ElementsAre("0.0.0.0:80", "[::1]:8080", "0.0.0.0:443", "127.0.0.1:2222",
                                   "0.0.0.0:5432", "[::]:3389"));
  ASSERT_EQ(config.rules_size(), 6);
  EXPECT_EQ(config.rules(3).targets(0).address(), "git.example.com:22");
  EXPECT_THAT(config.rules(4).allow(), ElementsAre("10.0.5.0/24"));
  EXPECT_THAT(config.rules(4).deny(), ElementsAre("10.0.0.13/32"));

  std::vector<std::string> want = {
      path +
          ":9: UDP forwarding (5353/udp) is not supported by ferry, which relays TCP; rule "
          "left out",
  };
  if (!config::IsImplemented("rules[].source_addresses")) {
    want.push_back(path +
                   ":11: option src=192.168.1.10 not translated: this build has no "
                   "rules[].source_addresses; connections leave from the kernel's choice "
                   "of address");
  }
  EXPECT_THAT(Lines(r.err), ElementsAreArray(want));
  EXPECT_THAT(r.out, HasSubstr("# ferry config imported by `ferry import rinetd` from " + path));
  EXPECT_THAT(r.out, HasSubstr("  # line 6: 0.0.0.0  80 192.168.1.2 80\n"));
}

TEST(ImportTest, CleanConfigExitsZeroAndValidates) {
  TempDir dir;
  const std::string path = dir.Write("rinetd.conf",
                                     "# forwarding\n"
                                     "deny 192.168.1.1?\n"
                                     "127.0.0.1 8080 127.0.0.1 http\n"
                                     "allow 192.168.1.*\n"
                                     "0.0.0.0 ssh localhost 2222\n");
  Result r = RunFerry({"import", "rinetd", path});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  Config config = Parse(r.out);
  ASSERT_EQ(config.rules_size(), 2);
  EXPECT_EQ(config.rules(0).listen(), "127.0.0.1:8080");
  EXPECT_EQ(config.rules(0).targets(0).address(), "127.0.0.1:80");
  EXPECT_THAT(config.rules(0).allow(), ElementsAre("192.168.1.0/24"));
  EXPECT_THAT(config.rules(0).deny(),
              ElementsAre("192.168.1.10/31", "192.168.1.12/30", "192.168.1.16/30"));
  EXPECT_EQ(config.rules(1).listen(), "0.0.0.0:22");
  EXPECT_THAT(config.rules(1).allow(), IsEmpty());

  const std::string yaml = dir.Write("ferry.yaml", r.out);
  Result v = RunFerry({"validate", "--config", yaml});
  EXPECT_EQ(v.code, 0) << v.err;
  EXPECT_EQ(v.out, yaml + ": ok\n");
}

TEST(ImportTest, LogfileBecomesAccessLog) {
  TempDir dir;
  const std::string path = dir.Write("rinetd.conf",
                                     "127.0.0.1 8080 127.0.0.1 80\n"
                                     "logfile /var/log/rinetd.log\n"
                                     "logcommon\n");
  Result r = RunFerry({"import", "rinetd", path});
  EXPECT_EQ(r.code, 0) << r.err;
  Config config = Parse(r.out);
  ASSERT_EQ(config.rules_size(), 1);
  EXPECT_EQ(config.rules(0).access_log().format(), config::v1::AccessLog::FORMAT_CLF);
  EXPECT_EQ(config.rules(0).access_log().path(), "/var/log/rinetd.log");

  // The output is what `ferry validate` takes, as far as this build goes.
  const std::string yaml = dir.Write("ferry.yaml", r.out);
  Result v = RunFerry({"validate", "--config", yaml});
  if (config::IsImplemented("rules[].access_log")) {
    EXPECT_EQ(v.code, 0) << v.err;
  } else {
    EXPECT_EQ(v.code, 1);
    EXPECT_EQ(v.err, yaml + ": rules[0].access_log: not implemented in this build\n");
  }
}

TEST(ImportTest, DenyWithoutCidrFormLeavesItsRuleOut) {
  TempDir dir;
  const std::string path = dir.Write("rinetd.conf",
                                     "127.0.0.1 8080 127.0.0.1 80\n"
                                     "deny 10.*.3.*\n"
                                     "127.0.0.1 8081 127.0.0.1 81\n");
  Result r = RunFerry({"import", "rinetd", path});
  EXPECT_EQ(r.code, 1);
  Config config = Parse(r.out);
  ASSERT_EQ(config.rules_size(), 1);
  EXPECT_EQ(config.rules(0).listen(), "127.0.0.1:8081");
  EXPECT_THAT(Lines(r.err),
              ElementsAre(path + ":1: rule left out: its deny pattern on line 2 (10.*.3.*) has "
                                 "no exact CIDR form, and without it ferry would admit clients "
                                 "rinetd refuses",
                          path + ":2: deny \"10.*.3.*\": needs more than 16 CIDRs"));
}

TEST(ImportTest, FileWithoutRules) {
  TempDir dir;
  const std::string path = dir.Write("rinetd.conf", TestData("debian.conf"));
  Result r = RunFerry({"import", "rinetd", path});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, path + ": no forwarding rules to translate\n");
  EXPECT_EQ(Parse(r.out).rules_size(), 0);
}

TEST(ImportTest, StdinIsDash) {
  // The child's stdin is /dev/null: an empty file.
  Result r = RunFerry({"import", "rinetd", "-"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "stdin: no forwarding rules to translate\n");
}

TEST(ImportTest, UnreadableFile) {
  TempDir dir;
  const std::string missing = dir.File("missing.conf");
  Result r = RunFerry({"import", "rinetd", missing});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "ferry import: cannot read \"" + missing + "\": No such file or directory\n");

  Result d = RunFerry({"import", "rinetd", dir.path()});
  EXPECT_EQ(d.code, 1);
  EXPECT_EQ(d.out, "");
  EXPECT_EQ(d.err, "ferry import: cannot read \"" + dir.path() + "\": Is a directory\n");
}

TEST(ImportTest, UsageErrors) {
  struct Case {
    std::vector<std::string> args;
    std::string err;
  };
  const Case cases[] = {
      {{"import"}, "ferry import: needs FORMAT FILE, e.g. 'ferry import rinetd FILE'\n"},
      {{"import", "haproxy", "x.cfg"},
       "ferry import: unknown format \"haproxy\" (formats: rinetd)\n"},
      {{"import", "rinetd"}, "ferry import: needs the rinetd.conf FILE\n"},
      {{"import", "rinetd", "a.conf", "b.conf"}, "ferry import: unexpected argument \"b.conf\"\n"},
      {{"import", "--bogus=1", "rinetd", "a.conf"}, "ferry import: unknown flag --bogus\n"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.err);
    Result r = RunFerry(c.args);
    EXPECT_EQ(r.code, 2);
    EXPECT_EQ(r.err, c.err);
    EXPECT_EQ(r.out, "");
  }
}

TEST(ImportTest, Help) {
  for (const char* flag : {"--help", "-h"}) {
    Result r = RunFerry({"import", flag});
    EXPECT_EQ(r.code, 0);
    EXPECT_TRUE(absl::StartsWith(r.out, "Usage: ferry import rinetd FILE\n")) << r.out;
    EXPECT_EQ(r.err, "");
  }
}

}  // namespace
}  // namespace ferry::testing
