#include "pkg/config/rinetd.h"

#include <arpa/inet.h>
#include <fnmatch.h>

#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pkg/config/loader.h"
#include "pkg/net/address.h"
#include "pkg/net/cidr.h"
#include "proto/ferry/config/v1/config.pb.h"

namespace ferry::config {
namespace {

using ::ferry::config::v1::AccessLog;
using ::ferry::config::v1::Config;
using ::ferry::config::v1::Rule;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

// An import and the config its YAML maps to. Every import must map cleanly.
struct Imported {
  RinetdImport result;
  Config config;

  std::vector<std::string> Problems() const {
    std::vector<std::string> out;
    for (const Diagnostic& d : result.problems) out.push_back(d.ToString());
    return out;
  }
  const Rule& rule(int i) const { return config.rules(i); }
};

Imported Import(const std::string& text) {
  Imported out;
  out.result = ImportRinetd(text, "test.conf");
  std::vector<Diagnostic> errors = ParseTextOnto(out.result.yaml, out.config);
  EXPECT_THAT(errors, IsEmpty()) << Join(errors) << "\n" << out.result.yaml;
  return out;
}

std::vector<std::string> Allow(const Rule& r) { return {r.allow().begin(), r.allow().end()}; }
std::vector<std::string> Deny(const Rule& r) { return {r.deny().begin(), r.deny().end()}; }
std::vector<std::string> Targets(const Rule& r) {
  std::vector<std::string> out;
  for (const auto& t : r.targets()) out.push_back(t.address());
  return out;
}

const std::vector<std::string> kDenyAll = {"0.0.0.0/0", "::/0"};

std::string TestData(const std::string& name) {
  std::string dir(__FILE__);
  dir = dir.substr(0, dir.rfind('/'));
  std::ifstream in(dir + "/testdata/rinetd/" + name, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read testdata " << name;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One rule on port 80, with `acl` (allow/deny lines) after it.
std::string RuleWith(const std::string& acl) { return "0.0.0.0 80 10.0.0.1 8080\n" + acl; }

// ---------------------------------------------------------------------------
// Real configuration files.

TEST(RinetdImportTest, DebianDefaultHasNoRules) {
  // The file the Debian package installs: every rule is commented out.
  Imported im = Import(TestData("debian.conf"));
  EXPECT_EQ(im.config.rules_size(), 0);
  EXPECT_THAT(im.Problems(), ElementsAre("no forwarding rules to translate"));
  EXPECT_THAT(im.result.yaml, HasSubstr("# line 29: logfile /var/log/rinetd.log"));
  EXPECT_EQ(im.result.rules_written, 0);
  EXPECT_FALSE(im.result.unsafe);
}

TEST(RinetdImportTest, ManPageExamples) {
  Imported im = Import(TestData("manpage.conf"));
  EXPECT_THAT(im.Problems(), IsEmpty());
  ASSERT_EQ(im.config.rules_size(), 3);

  // Global allow 192.168.2.* and the rule's allow 206.125.69.* share no
  // client: rinetd needs both to match, so nobody gets in.
  EXPECT_EQ(im.rule(0).name(), "port-80");
  EXPECT_EQ(im.rule(0).listen(), "206.125.69.81:80");
  EXPECT_THAT(Targets(im.rule(0)), ElementsAre("10.1.1.2:80"));
  EXPECT_THAT(Allow(im.rule(0)), IsEmpty());
  EXPECT_THAT(Deny(im.rule(0)), ElementsAreArray(kDenyAll));

  EXPECT_EQ(im.rule(1).name(), "port-23");
  EXPECT_EQ(im.rule(1).listen(), "0.0.0.0:23");
  EXPECT_THAT(Targets(im.rule(1)), ElementsAre("10.1.1.2:23"));
  EXPECT_THAT(Allow(im.rule(1)), ElementsAre("192.168.2.0/24"));
  // 192.168.2.1? is .10 to .19.
  EXPECT_THAT(Deny(im.rule(1)),
              ElementsAre("192.168.2.10/31", "192.168.2.12/30", "192.168.2.16/30"));

  // Service names; a second rule on port 80 gets its own name.
  EXPECT_EQ(im.rule(2).name(), "port-80-2");
  EXPECT_EQ(im.rule(2).listen(), "0.0.0.0:80");
  EXPECT_THAT(Targets(im.rule(2)), ElementsAre("10.1.1.3:80"));

  for (const Rule& r : im.config.rules()) {
    EXPECT_EQ(r.access_log().format(), AccessLog::FORMAT_CLF);
    EXPECT_EQ(r.access_log().path(), "/var/log/rinetd.log");
  }
  EXPECT_THAT(im.result.yaml, HasSubstr("# line 15: pidlogfile /var/run/rinetd.pid -- not needed"));
  EXPECT_THAT(im.result.yaml, HasSubstr("  # line 7: 206.125.69.81 80  10.1.1.2 80\n"));
}

TEST(RinetdImportTest, Rinetd073Config) {
  Imported im = Import(TestData("v073.conf"));
  std::vector<std::string> expected_problems = {
      "line 9: UDP forwarding (5353/udp) is not supported by ferry, which relays TCP; rule left "
      "out",
  };
  if (!IsImplemented("rules[].source_addresses")) {
    expected_problems.push_back(
        "line 11: option src=192.168.1.10 not translated: this build has no "
        "rules[].source_addresses; connections leave from the kernel's choice of address");
  }
  EXPECT_THAT(im.Problems(), ElementsAreArray(expected_problems));
  EXPECT_EQ(im.result.rules_written, 6);
  EXPECT_EQ(im.result.rules_left_out, 1);
  ASSERT_EQ(im.config.rules_size(), 6);

  struct Want {
    const char* name;
    const char* listen;
    const char* target;
  };
  const Want want[] = {
      {"port-80", "0.0.0.0:80", "192.168.1.2:80"},           // tabs between fields
      {"port-8080", "[::1]:8080", "backend.internal:8080"},  // bare IPv6, host name
      {"port-443", "0.0.0.0:443", "[fe80::1]:443"},          // 443/tcp, https
      {"port-2222", "127.0.0.1:2222", "git.example.com:22"},
      {"port-5432", "0.0.0.0:5432", "db.example.com:5432"},  // postgresql
      {"port-3389", "[::]:3389", "win.example.com:3389"},    // rdp
  };
  for (int i = 0; i < 6; ++i) {
    SCOPED_TRACE(want[i].name);
    EXPECT_EQ(im.rule(i).name(), want[i].name);
    EXPECT_EQ(im.rule(i).listen(), want[i].listen);
    EXPECT_THAT(Targets(im.rule(i)), ElementsAre(want[i].target));
    EXPECT_EQ(im.rule(i).access_log().format(), AccessLog::FORMAT_TEXT);
    EXPECT_EQ(im.rule(i).access_log().path(), "/var/log/rinetd.log");
  }
  for (int i : {0, 1, 2, 3}) {
    EXPECT_THAT(Allow(im.rule(i)), ElementsAre("10.0.0.0/16"));
    EXPECT_THAT(Deny(im.rule(i)), ElementsAre("10.0.0.13/32"));
  }
  // "deny 10.0.0.99" follows the UDP rule: it is that rule's, not 2222's.
  EXPECT_THAT(Allow(im.rule(4)), ElementsAre("10.0.5.0/24"));
  EXPECT_THAT(Deny(im.rule(4)), ElementsAre("10.0.0.13/32"));
  // Global allow 10.0.* and the rule's fe80:* share no client.
  EXPECT_THAT(Allow(im.rule(5)), IsEmpty());
  EXPECT_THAT(Deny(im.rule(5)), ElementsAreArray(kDenyAll));
  if (IsImplemented("rules[].source_addresses")) {
    EXPECT_THAT(im.rule(3).source_addresses(), ElementsAre("192.168.1.10"));
  }
  EXPECT_THAT(im.result.yaml,
              HasSubstr("# line 9: 127.0.0.1 5353/udp 10.0.0.53 domain/udp [timeout=1200]\n"
                        "  #   left out: UDP forwarding (5353/udp)"));
  EXPECT_THAT(im.result.yaml, HasSubstr("#   option timeout=60 -- not needed"));
}

TEST(RinetdImportTest, ExactYaml) {
  RinetdImport im = ImportRinetd(
      "deny 10.9.*\n"
      "0.0.0.0 80 10.0.0.5 8080\n"
      "allow 10.*\n"
      "logfile /var/log/r.log\n",
      "/etc/rinetd.conf");
  EXPECT_TRUE(im.ok());
  EXPECT_EQ(im.yaml,
            "# ferry config imported by `ferry import rinetd` from /etc/rinetd.conf.\n"
            "# rinetd admits a client that matches its global allow patterns and the rule's own\n"
            "# (each when present) and no deny pattern: each rule's allow list holds the clients "
            "in\n"
            "# both allow lists, its deny list both deny lists; patterns became the CIDRs they "
            "match.\n"
            "# line 4: logfile /var/log/r.log -- every rule logs there (format text: key=value "
            "lines, not rinetd's tab-separated columns)\n"
            "rules:\n"
            "  # line 2: 0.0.0.0 80 10.0.0.5 8080\n"
            "  - name: port-80\n"
            "    listen: \"0.0.0.0:80\"\n"
            "    targets: [\"10.0.0.5:8080\"]\n"
            "    allow:\n"
            "      - \"10.0.0.0/8\"  # line 3: allow 10.*\n"
            "    deny:\n"
            "      - \"10.9.0.0/16\"  # line 1: deny 10.9.*\n"
            "    access_log: {format: text, path: \"/var/log/r.log\"}\n");
}

// ---------------------------------------------------------------------------
// Patterns.

struct PatternCase {
  const char* pattern;
  std::vector<std::string> cidrs;
};

TEST(RinetdImportTest, AllowPatternsBecomeExactCidrs) {
  const PatternCase cases[] = {
      {"192.168.1.*", {"192.168.1.0/24"}},
      {"10.*.*.*", {"10.0.0.0/8"}},
      {"10.*", {"10.0.0.0/8"}},
      {"*.*.*.*", {"0.0.0.0/0"}},
      {"*", {"0.0.0.0/0", "::/0"}},
      {"**", {"0.0.0.0/0", "::/0"}},
      {"10.1.2.3", {"10.1.2.3/32"}},
      {"192.168.1.1?", {"192.168.1.10/31", "192.168.1.12/30", "192.168.1.16/30"}},
      {"1?.0.0.1",
       {"10.0.0.1/32", "11.0.0.1/32", "12.0.0.1/32", "13.0.0.1/32", "14.0.0.1/32", "15.0.0.1/32",
        "16.0.0.1/32", "17.0.0.1/32", "18.0.0.1/32", "19.0.0.1/32"}},
      {"25?.*", {"250.0.0.0/7", "252.0.0.0/6"}},
      {"10.0.0.2??", {"10.0.0.200/29", "10.0.0.208/28", "10.0.0.224/27"}},
      // '*' crosses dots: 192.168.1.x, 192.168.1?.x and 192.168.1??.x.
      {"192.168.1*",
       {"192.168.1.0/24", "192.168.10.0/23", "192.168.12.0/22", "192.168.16.0/22",
        "192.168.100.0/22", "192.168.104.0/21", "192.168.112.0/20", "192.168.128.0/18",
        "192.168.192.0/21"}},
      {"fe80:*", {"fe80::/16"}},
      {"2001:db8:*", {"2001:db8::/32"}},
      {"2001:db8::1", {"2001:db8::1/128"}},
      {"::ffff:10.1.2.3", {"10.1.2.3/32"}},
  };
  for (const PatternCase& c : cases) {
    SCOPED_TRACE(c.pattern);
    Imported im = Import(RuleWith(absl::StrCat("allow ", c.pattern, "\n")));
    EXPECT_THAT(im.Problems(), IsEmpty());
    ASSERT_EQ(im.config.rules_size(), 1);
    EXPECT_THAT(Allow(im.rule(0)), ElementsAreArray(c.cidrs));
    EXPECT_THAT(Deny(im.rule(0)), IsEmpty());
  }
}

TEST(RinetdImportTest, DenyPatternsBecomeExactCidrs) {
  Imported im = Import(RuleWith("deny 192.168.1.1?\ndeny 10.1.2.3\n"));
  EXPECT_THAT(im.Problems(), IsEmpty());
  EXPECT_THAT(Allow(im.rule(0)), IsEmpty());
  EXPECT_THAT(Deny(im.rule(0)),
              ElementsAre("192.168.1.10/31", "192.168.1.12/30", "192.168.1.16/30", "10.1.2.3/32"));
  EXPECT_THAT(im.result.yaml, HasSubstr("- \"192.168.1.12/30\"  # line 2: deny 192.168.1.1?\n"));
}

// A reference for rinetd's matching: fnmatch without flags, where '*' also
// matches '.', as rinetd's does.
bool RinetdMatches(const std::string& pattern, const std::string& address_text) {
  return fnmatch(pattern.c_str(), address_text.c_str(), 0) == 0;
}

TEST(RinetdImportTest, ExpandedPatternsMatchWhatRinetdMatches) {
  const char* patterns[] = {"192.168.1.1?", "1?.0.0.1", "25?.*",   "10.0.0.2??", "192.168.1*",
                            "1*",           "1.2.3.?",  "1.2.3.4", "19*.*",      "*.*.*.*",
                            "10.*",         "*",        "1*.*",    "?.*"};
  std::mt19937 rng(20240611);
  auto digits = [&](int n) {
    std::string out;
    for (int i = 0; i < n; ++i) out += static_cast<char>('0' + rng() % 10);
    return out;
  };
  // Random addresses, half of them the pattern with its wildcards filled in
  // at random (so that matches are tried, not only misses).
  auto candidate = [&](const std::string& pattern) {
    if (rng() % 2 == 0) {
      std::string text;
      for (char c : pattern) {
        if (c == '?') {
          text += digits(1);
        } else if (c == '*') {
          const char* fill[] = {"", ".", "..", "...", "1", "25", "199"};
          text += (rng() % 2 == 0) ? digits(static_cast<int>(rng() % 4))
                                   : std::string(fill[rng() % 7]) + digits(1);
        } else {
          text += c;
        }
      }
      in_addr a;
      if (inet_pton(AF_INET, text.c_str(), &a) == 1) return text;
    }
    return absl::StrCat(rng() % 256, ".", rng() % 256, ".", rng() % 256, ".", rng() % 256);
  };
  for (const char* pattern : patterns) {
    SCOPED_TRACE(pattern);
    Imported im = Import(RuleWith(absl::StrCat("allow ", pattern, "\n")));
    ASSERT_EQ(im.config.rules_size(), 1);
    for (const Diagnostic& d : im.result.problems) {
      EXPECT_THAT(d.message, Not(HasSubstr("needs more than"))) << "pick a smaller pattern";
    }
    std::vector<net::Cidr> cidrs;
    for (const std::string& text : Allow(im.rule(0))) {
      if (absl::StrContains(text, ':')) continue;  // IPv4 clients only here
      auto c = net::Cidr::Parse(text);
      ASSERT_TRUE(c.ok()) << text;
      cidrs.push_back(*c);
    }
    int matched = 0;
    for (int i = 0; i < 20000; ++i) {
      const std::string text = candidate(pattern);
      auto addr = net::Address::ParseLiteral(text + ":1");
      ASSERT_TRUE(addr.ok()) << text;
      bool in_cidrs = false;
      for (const net::Cidr& c : cidrs) in_cidrs = in_cidrs || c.Contains(*addr);
      const bool want = RinetdMatches(pattern, text);
      matched += want;
      ASSERT_EQ(in_cidrs, want) << text;
    }
    EXPECT_GT(matched, 0);
  }
}

TEST(RinetdImportTest, AllowWithoutCidrFormIsLeftOutOfTheList) {
  // 10.*.3.* is 256 separate /24s: too many to write. Leaving it out of a
  // list that keeps another pattern only refuses clients rinetd admits.
  Imported im = Import(RuleWith("allow 10.*.3.*\nallow 192.168.0.*\n"));
  EXPECT_THAT(im.Problems(),
              ElementsAre("line 2: allow \"10.*.3.*\": needs more than 16 CIDRs; left out of the "
                          "allow list, so clients only it admits are refused"));
  EXPECT_THAT(Allow(im.rule(0)), ElementsAre("192.168.0.0/24"));
  EXPECT_FALSE(im.result.unsafe);
}

TEST(RinetdImportTest, AllowListOfOnlyUntranslatablePatternsDeniesAll) {
  // An empty ferry allow list would admit everyone: deny all instead.
  Imported im = Import(RuleWith("allow 10.*.3.*\n"));
  EXPECT_THAT(im.Problems(), SizeIs(1));
  EXPECT_THAT(Allow(im.rule(0)), IsEmpty());
  EXPECT_THAT(Deny(im.rule(0)), ElementsAreArray(kDenyAll));
}

TEST(RinetdImportTest, DenyWithoutCidrFormLeavesTheRuleOut) {
  Imported im = Import(
      "0.0.0.0 80 10.0.0.1 8080\n"
      "deny 10.*.3.*\n"
      "0.0.0.0 81 10.0.0.1 8081\n");
  EXPECT_THAT(im.Problems(),
              ElementsAre("line 1: rule left out: its deny pattern on line 2 (10.*.3.*) has no "
                          "exact CIDR form, and without it ferry would admit clients rinetd "
                          "refuses",
                          "line 2: deny \"10.*.3.*\": needs more than 16 CIDRs"));
  EXPECT_TRUE(im.result.unsafe);
  ASSERT_EQ(im.config.rules_size(), 1);
  EXPECT_EQ(im.rule(0).listen(), "0.0.0.0:81");
  EXPECT_THAT(im.result.yaml, HasSubstr("  # line 1: 0.0.0.0 80 10.0.0.1 8080\n"
                                        "  #   left out: its deny pattern on line 2"));
}

TEST(RinetdImportTest, GlobalDenyWithoutCidrFormLeavesEveryRuleOut) {
  Imported im = Import(
      "deny 1?.*.3.*\n"
      "0.0.0.0 80 10.0.0.1 8080\n"
      "127.0.0.1 81 10.0.0.1 8081\n");
  EXPECT_TRUE(im.result.unsafe);
  EXPECT_EQ(im.config.rules_size(), 0);
  EXPECT_EQ(im.result.rules_left_out, 2);
  EXPECT_THAT(im.result.yaml, HasSubstr("rules: []\n"));
  EXPECT_THAT(im.Problems(), SizeIs(3));
}

TEST(RinetdImportTest, DotlessWildcardMattersOnlyForIpv6Listeners) {
  // "1*" also matches IPv6 text such as 1::5, which has no CIDR form. An IPv4
  // listener never sees such a client; an IPv6 one may.
  Imported v4 = Import("0.0.0.0 80 10.0.0.1 8080\ndeny 1*\n");
  EXPECT_THAT(v4.Problems(), IsEmpty());
  ASSERT_EQ(v4.config.rules_size(), 1);
  EXPECT_THAT(Deny(v4.rule(0)), SizeIs(9));

  Imported v6 = Import("::1 80 10.0.0.1 8080\ndeny 1*\n");
  EXPECT_THAT(v6.Problems(), ElementsAre(HasSubstr("line 1: rule left out"),
                                         "line 2: deny \"1*\": may match IPv6 client addresses "
                                         "too, which have no CIDR form"));
  EXPECT_EQ(v6.config.rules_size(), 0);

  Imported allow = Import("::1 80 10.0.0.1 8080\nallow 1*\n");
  EXPECT_THAT(allow.Problems(),
              ElementsAre("line 2: allow \"1*\": may match IPv6 client addresses too, which "
                          "have no CIDR form; ferry refuses the IPv6 clients only it admits"));
  ASSERT_EQ(allow.config.rules_size(), 1);
  EXPECT_THAT(Allow(allow.rule(0)), SizeIs(9));
}

TEST(RinetdImportTest, Ipv6PatternsWithoutCidrForm) {
  Imported im = Import("[::] 80 10.0.0.1 8080\nallow 2001:618:*:e43f\nallow fe80:*\n");
  EXPECT_THAT(im.Problems(),
              ElementsAre("line 2: allow \"2001:618:*:e43f\": has no CIDR form; ferry refuses "
                          "the IPv6 clients only it admits"));
  EXPECT_THAT(Allow(im.rule(0)), ElementsAre("fe80::/16"));

  Imported deny = Import("[::] 80 10.0.0.1 8080\ndeny 2001:618:*:e43f\n");
  EXPECT_EQ(deny.config.rules_size(), 0);
  EXPECT_TRUE(deny.result.unsafe);
}

TEST(RinetdImportTest, PatternsThatMatchNoClient) {
  // Translated exactly (to nothing), but worth a word: likely mistakes.
  for (const char* pattern : {"300.*", "10", "FE80:*", "2001:0db8::1"}) {
    SCOPED_TRACE(pattern);
    Imported im = Import(RuleWith(absl::StrCat("allow ", pattern, "\n")));
    ASSERT_THAT(im.Problems(), SizeIs(1));
    EXPECT_THAT(im.Problems()[0], HasSubstr("matches no client address"));
    EXPECT_THAT(Deny(im.rule(0)), ElementsAreArray(kDenyAll));
  }
  Imported canon = Import(RuleWith("deny 2001:0db8::1\n"));
  EXPECT_THAT(canon.Problems(),
              ElementsAre("line 2: deny \"2001:0db8::1\": matches no client address (rinetd "
                          "compares with the address text, written 2001:db8::1)"));
  EXPECT_THAT(Deny(canon.rule(0)), IsEmpty());
}

TEST(RinetdImportTest, BadPatterns) {
  // Not patterns rinetd takes: an allow that matches nobody narrows; a deny
  // cannot be guessed, so its rule is left out.
  Imported allow = Import(RuleWith("allow 10.0.0.0/8\n"));
  EXPECT_THAT(allow.Problems(),
              ElementsAre("line 2: allow \"10.0.0.0/8\": a pattern holds only digits, '.', '*' "
                          "and '?' (and hex digits and ':' for IPv6); read as matching no "
                          "client"));
  EXPECT_THAT(Deny(allow.rule(0)), ElementsAreArray(kDenyAll));

  Imported deny = Import(RuleWith("deny host.example.com\n"));
  EXPECT_EQ(deny.config.rules_size(), 0);
  EXPECT_TRUE(deny.result.unsafe);
  EXPECT_THAT(deny.Problems(), SizeIs(2));

  Imported two = Import(RuleWith("deny 10.1.* 10.2.*\n"));
  EXPECT_THAT(two.Problems(),
              ElementsAre(HasSubstr("line 1: rule left out"),
                          "line 2: deny \"10.1.* 10.2.*\": needs exactly one pattern"));
  Imported none = Import(RuleWith("deny\n"));
  EXPECT_EQ(none.config.rules_size(), 0);

  Imported too_long = Import(RuleWith("allow " + std::string(64, '1') + "\n"));
  EXPECT_THAT(too_long.Problems(), ElementsAre(HasSubstr("pattern longer than 63")));
}

TEST(RinetdImportTest, GlobsWithManyStates) {
  // The walk shares work between equal glob states and stops at 16 CIDRs.
  for (const char* pattern :
       {"*1*2*3*4*5*6*7*", "?*.?*.?*.?*1", "*0*0*0*0*", "*.*.*.1?", "1??.*?.?*.*?*?*"}) {
    SCOPED_TRACE(pattern);
    Imported im = Import(RuleWith(absl::StrCat("allow ", pattern, "\n")));
    EXPECT_THAT(im.Problems(), ElementsAre(HasSubstr("needs more than 16 CIDRs")));
  }
  // Six or more characters: every IPv4 address text ("0.0.0.0" has seven).
  Imported im = Import(RuleWith("allow *?*?*?*?*?*?*\n"));
  EXPECT_THAT(im.Problems(), IsEmpty());
  EXPECT_THAT(Allow(im.rule(0)), ElementsAre("0.0.0.0/0"));
}

// ---------------------------------------------------------------------------
// Where allow and deny lines apply.

TEST(RinetdImportTest, GlobalAndRuleAllowListsIntersect) {
  Imported im = Import(
      "allow 10.*\n"
      "allow 192.168.*\n"
      "0.0.0.0 80 10.0.0.1 8080\n"
      "allow 10.1.*\n"
      "allow 172.16.*\n"
      "0.0.0.0 81 10.0.0.1 8081\n"
      "allow *\n"
      "0.0.0.0 82 10.0.0.1 8082\n");
  EXPECT_THAT(im.Problems(), IsEmpty());
  ASSERT_EQ(im.config.rules_size(), 3);
  EXPECT_THAT(Allow(im.rule(0)), ElementsAre("10.1.0.0/16"));
  EXPECT_THAT(im.result.yaml,
              HasSubstr("- \"10.1.0.0/16\"  # line 4: allow 10.1.* & line 1: allow 10.*\n"));
  EXPECT_THAT(Allow(im.rule(1)), ElementsAre("10.0.0.0/8", "192.168.0.0/16"));
  EXPECT_THAT(Allow(im.rule(2)), ElementsAre("10.0.0.0/8", "192.168.0.0/16"));
}

TEST(RinetdImportTest, GlobalAndRuleDenyListsMerge) {
  Imported im = Import(
      "deny 10.9.*\n"
      "0.0.0.0 80 10.0.0.1 8080\n"
      "deny 10.8.*\n"
      "deny 10.9.1.*\n"
      "0.0.0.0 81 10.0.0.1 8081\n");
  ASSERT_EQ(im.config.rules_size(), 2);
  // 10.9.1.* is inside 10.9.* already.
  EXPECT_THAT(Deny(im.rule(0)), ElementsAre("10.9.0.0/16", "10.8.0.0/16"));
  EXPECT_THAT(Deny(im.rule(1)), ElementsAre("10.9.0.0/16"));
  EXPECT_THAT(Allow(im.rule(1)), IsEmpty());
}

TEST(RinetdImportTest, AclLinesAfterAnUntranslatedRuleStayWithIt) {
  Imported im = Import(
      "0.0.0.0 80 10.0.0.1 8080\n"
      "0.0.0.0 53/udp 10.0.0.53 53\n"
      "allow 10.1.*\n"
      "deny 10.*.3.*\n");
  ASSERT_EQ(im.config.rules_size(), 1);
  EXPECT_THAT(Allow(im.rule(0)), IsEmpty());
  EXPECT_THAT(Deny(im.rule(0)), IsEmpty());
  EXPECT_FALSE(im.result.unsafe);
  EXPECT_THAT(im.Problems(), ElementsAre("line 2: UDP forwarding (53/udp) is not supported by "
                                         "ferry, which relays TCP; rule left out"));
}

TEST(RinetdImportTest, UnreadableLineDoesNotCaptureGlobalPatterns) {
  // "logfle" is no keyword and no rule: the deny after it stays global.
  Imported im = Import(
      "logfle /var/log/x\n"
      "deny 10.9.*\n"
      "0.0.0.0 80 10.0.0.1 8080\n");
  EXPECT_THAT(im.Problems(),
              ElementsAre("line 1: cannot read \"logfle /var/log/x\": expected BINDADDRESS "
                          "BINDPORT CONNECTADDRESS CONNECTPORT [OPTIONS] or a keyword (allow, "
                          "deny, logfile, logcommon, pidlogfile)"));
  ASSERT_EQ(im.config.rules_size(), 1);
  EXPECT_THAT(Deny(im.rule(0)), ElementsAre("10.9.0.0/16"));
}

// ---------------------------------------------------------------------------
// Forwarding rules.

TEST(RinetdImportTest, Addresses) {
  Imported im = Import(
      "0 1 127.0.0.1 2\n"
      "::1 3 ::1 4\n"
      "[::] 5 [fe80::1] 6\n"
      "host-a.example.com 7 db_1.internal. 8\n");
  EXPECT_THAT(im.Problems(), IsEmpty());
  ASSERT_EQ(im.config.rules_size(), 4);
  EXPECT_EQ(im.rule(0).listen(), "0.0.0.0:1");
  EXPECT_THAT(Targets(im.rule(0)), ElementsAre("127.0.0.1:2"));
  EXPECT_EQ(im.rule(1).listen(), "[::1]:3");
  EXPECT_THAT(Targets(im.rule(1)), ElementsAre("[::1]:4"));
  EXPECT_EQ(im.rule(2).listen(), "[::]:5");
  EXPECT_THAT(Targets(im.rule(2)), ElementsAre("[fe80::1]:6"));
  EXPECT_EQ(im.rule(3).listen(), "host-a.example.com:7");
  EXPECT_THAT(Targets(im.rule(3)), ElementsAre("db_1.internal.:8"));
}

TEST(RinetdImportTest, BadAddressesAndPorts) {
  Imported im = Import(
      "10.0.0.999 80 10.0.0.1 80\n"
      "0.0.0.0 80 fe80::zz 80\n"
      "0.0.0.0 0 10.0.0.1 80\n"
      "0.0.0.0 80 10.0.0.1 65536\n"
      "0.0.0.0 nosuchservice 10.0.0.1 80\n"
      "0.0.0.0 80/sctp 10.0.0.1 80\n"
      "0.0.0.0 80 ho$t 80\n");
  EXPECT_EQ(im.config.rules_size(), 0);
  EXPECT_EQ(im.result.rules_left_out, 7);
  EXPECT_THAT(
      im.Problems(),
      ElementsAre(
          "line 1: bind address: bad IPv4 address \"10.0.0.999\"; rule left out",
          "line 2: connect address: bad IPv6 address \"fe80::zz\"; rule left out",
          "line 3: bind port 0 out of range (1-65535); rule left out",
          "line 4: connect port 65536 out of range (1-65535); rule left out",
          "line 5: bind port \"nosuchservice\": unknown service name; write the port number; "
          "rule left out",
          "line 6: bind port \"80/sctp\": protocol is tcp or udp; rule left out",
          "line 7: connect address: bad address \"ho$t\" (an IPv4 or IPv6 address, or a host "
          "name); rule left out"));
}

TEST(RinetdImportTest, ServiceNames) {
  EXPECT_EQ(ResolveServicePort("http"), 80);
  EXPECT_EQ(ResolveServicePort("https"), 443);
  EXPECT_EQ(ResolveServicePort("ssh"), 22);
  EXPECT_EQ(ResolveServicePort("domain"), 53);
  EXPECT_EQ(ResolveServicePort("imaps"), 993);
  EXPECT_EQ(ResolveServicePort("postgresql"), 5432);
  EXPECT_EQ(ResolveServicePort("redis"), 6379);
  EXPECT_EQ(ResolveServicePort("rdp"), 3389);
  EXPECT_EQ(ResolveServicePort("8080"), 8080);
  EXPECT_EQ(ResolveServicePort("00080"), 80);
  EXPECT_EQ(ResolveServicePort("65535"), 65535);
  EXPECT_EQ(ResolveServicePort("0"), std::nullopt);
  EXPECT_EQ(ResolveServicePort("65536"), std::nullopt);
  EXPECT_EQ(ResolveServicePort("99999999999999999999"), std::nullopt);
  EXPECT_EQ(ResolveServicePort("no-such-service-here"), std::nullopt);
  EXPECT_EQ(ResolveServicePort("HTTP"), std::nullopt);
  EXPECT_EQ(ResolveServicePort(""), std::nullopt);
  EXPECT_EQ(ResolveServicePort("80x"), std::nullopt);
}

TEST(RinetdImportTest, UdpRulesAreLeftOut) {
  Imported im = Import(
      "0.0.0.0 53/udp 10.0.0.53 53/udp\n"
      "0.0.0.0 54 10.0.0.53 54/udp\n"
      "0.0.0.0 55/tcp 10.0.0.53 55/tcp\n");
  ASSERT_EQ(im.config.rules_size(), 1);
  EXPECT_EQ(im.rule(0).listen(), "0.0.0.0:55");
  EXPECT_THAT(im.Problems(),
              ElementsAre("line 1: UDP forwarding (53/udp) is not supported by ferry, which "
                          "relays TCP; rule left out",
                          "line 2: UDP forwarding (54/udp) is not supported by ferry, which "
                          "relays TCP; rule left out"));
}

TEST(RinetdImportTest, Options) {
  Imported im = Import(
      "0.0.0.0 80 10.0.0.1 80 [timeout=30]\n"
      "0.0.0.0 81 10.0.0.1 81[timeout = 5 ,keepalive=off]\n"
      "0.0.0.0 82 10.0.0.1 82 [src=10.1.1.2]\n"
      "0.0.0.0 83 10.0.0.1 83 [timeout=1\n"
      "0.0.0.0 84 10.0.0.1 84 extra\n");
  std::vector<std::string> expected = {
      "line 2: option \"keepalive=off\" not translated (rinetd knows timeout=N and src=ADDR)",
      "line 4: options must be one [key=value, ...] list at the end of the line; rule left out",
      "line 5: cannot read \"0.0.0.0 84 10.0.0.1 84 extra\": expected BINDADDRESS BINDPORT "
      "CONNECTADDRESS CONNECTPORT [OPTIONS] or a keyword (allow, deny, logfile, logcommon, "
      "pidlogfile)",
  };
  if (!IsImplemented("rules[].source_addresses")) {
    expected.insert(expected.begin() + 1,
                    "line 3: option src=10.1.1.2 not translated: this build has no "
                    "rules[].source_addresses; connections leave from the kernel's choice of "
                    "address");
  }
  EXPECT_THAT(im.Problems(), ElementsAreArray(expected));
  ASSERT_EQ(im.config.rules_size(), 3);
  EXPECT_THAT(im.result.yaml, HasSubstr("  # line 1: 0.0.0.0 80 10.0.0.1 80 [timeout=30]\n"
                                        "  #   option timeout=30 -- not needed: rinetd uses it "
                                        "for UDP only\n"
                                        "  - name: port-80\n"));
}

TEST(RinetdImportTest, SameListenAddressTwice) {
  Imported im = Import("0.0.0.0 80 10.0.0.1 80\n0.0.0.0 http 10.0.0.2 80\n10.0.0.9 80 a 80\n");
  ASSERT_EQ(im.config.rules_size(), 2);
  EXPECT_EQ(im.rule(1).name(), "port-80-2");
  EXPECT_EQ(im.rule(1).listen(), "10.0.0.9:80");
  EXPECT_THAT(im.Problems(), ElementsAre("line 2: listens on 0.0.0.0:80 like the rule on line 1, "
                                         "which rinetd binds first; rule left out"));
}

// ---------------------------------------------------------------------------
// Other lines.

TEST(RinetdImportTest, LogfileAndLogcommonApplyToEveryRule) {
  Imported im = Import(
      "0.0.0.0 80 10.0.0.1 80\n"
      "logfile \"/var/log/rinetd #1.log\"\n"
      "127.0.0.1 81 10.0.0.1 81\n"
      "logcommon  # web style\n");
  EXPECT_THAT(im.Problems(), IsEmpty());
  ASSERT_EQ(im.config.rules_size(), 2);
  for (const Rule& r : im.config.rules()) {
    EXPECT_EQ(r.access_log().format(), AccessLog::FORMAT_CLF);
    EXPECT_EQ(r.access_log().path(), "/var/log/rinetd #1.log");
  }
  // Unquoted, a '#' belongs to the name.
  Imported hash = Import(RuleWith("logfile /var/log/a#b.log # a comment\n"));
  EXPECT_THAT(hash.Problems(), IsEmpty());
  EXPECT_EQ(hash.rule(0).access_log().format(), AccessLog::FORMAT_TEXT);
  EXPECT_EQ(hash.rule(0).access_log().path(), "/var/log/a#b.log");

  Imported last = Import(RuleWith("logfile /a.log\nlogfile /b.log\n"));
  EXPECT_EQ(last.rule(0).access_log().path(), "/b.log");

  Imported common_only = Import(RuleWith("logcommon\n"));
  EXPECT_THAT(common_only.Problems(), IsEmpty());
  EXPECT_FALSE(common_only.rule(0).has_access_log());
  EXPECT_THAT(common_only.result.yaml,
              HasSubstr("# line 2: logcommon without logfile: rinetd logs nothing"));
}

TEST(RinetdImportTest, BadFileDirectives) {
  Imported im =
      Import(RuleWith("logfile\n"
                      "logfile \"/var/log/x.log\n"
                      "logfile /a.log /b.log\n"
                      "logcommon now\n"));
  EXPECT_THAT(im.Problems(),
              ElementsAre("line 2: logfile: needs a file name",
                          "line 3: logfile: missing closing '\"' in the file name",
                          "line 4: logfile: unexpected \"/b.log\" after the file name",
                          "line 5: logcommon takes no argument"));
  EXPECT_FALSE(im.rule(0).has_access_log());

  Imported utf8 = Import(RuleWith("logfile /var/log/\xff\xfe.log\n"));
  EXPECT_THAT(utf8.Problems(), ElementsAre("line 2: logfile: the file name has control "
                                           "characters or is not UTF-8"));
  EXPECT_FALSE(utf8.rule(0).has_access_log());
}

TEST(RinetdImportTest, LinesThatNeedNoTranslation) {
  Imported im =
      Import(RuleWith("pidlogfile /var/run/rinetd.pid\n"
                      "pidfile /run/rinetd.pid\n"
                      "buffersize 65536\n"
                      "dns-refresh 600\n"));
  EXPECT_THAT(im.Problems(), IsEmpty());
  EXPECT_THAT(im.result.yaml, HasSubstr("# line 2: pidlogfile /var/run/rinetd.pid -- not needed"));
  EXPECT_THAT(im.result.yaml, HasSubstr("# line 3: pidfile /run/rinetd.pid -- not needed"));
  EXPECT_THAT(im.result.yaml,
              HasSubstr("# line 4: buffersize 65536 -- not needed: ferry sizes its buffers"));
  EXPECT_THAT(im.result.yaml, HasSubstr("# line 5: dns-refresh 600 -- not needed"));
}

TEST(RinetdImportTest, IncludeIsReported) {
  Imported im = Import(RuleWith("include /etc/rinetd.d/*.conf\n"));
  EXPECT_THAT(im.Problems(),
              ElementsAre("line 2: include \"/etc/rinetd.d/*.conf\" is not followed: import the "
                          "included files too and merge their rules (their allow/deny lines may "
                          "apply to rules here)"));
  EXPECT_EQ(im.config.rules_size(), 1);
}

TEST(RinetdImportTest, KeywordsInTheWrongCase) {
  Imported im = Import(RuleWith("Deny 10.9.*\nALLOW 10.*\n"));
  EXPECT_THAT(im.Problems(),
              ElementsAre("line 2: \"Deny\": rinetd keywords are lowercase; read as \"deny\"",
                          "line 3: \"ALLOW\": rinetd keywords are lowercase; read as \"allow\""));
  EXPECT_THAT(Deny(im.rule(0)), ElementsAre("10.9.0.0/16"));
  EXPECT_THAT(Allow(im.rule(0)), ElementsAre("10.0.0.0/8"));
}

TEST(RinetdImportTest, CommentsBlanksAndLineEnds) {
  Imported im = Import(
      "# comment\r\n"
      "\r\n"
      "   \t  \n"
      "\t# indented comment\n"
      "  0.0.0.0\t80 \t 10.0.0.1   8080   # trailing comment\r\n"
      "allow 10.*# glued comment\n"
      "0.0.0.0 81 10.0.0.1 8081");  // no newline at the end
  EXPECT_THAT(im.Problems(), IsEmpty());
  ASSERT_EQ(im.config.rules_size(), 2);
  EXPECT_THAT(Targets(im.rule(0)), ElementsAre("10.0.0.1:8080"));
  EXPECT_THAT(Allow(im.rule(0)), ElementsAre("10.0.0.0/8"));
  EXPECT_EQ(im.rule(1).listen(), "0.0.0.0:81");
  EXPECT_THAT(im.result.yaml,
              HasSubstr("  # line 5: 0.0.0.0 80   10.0.0.1   8080   # trailing comment\n"));
  EXPECT_THAT(im.result.yaml, HasSubstr("  # line 7: 0.0.0.0 81 10.0.0.1 8081\n"));
}

TEST(RinetdImportTest, EmptyAndGarbageInput) {
  Imported empty = Import("");
  EXPECT_THAT(empty.Problems(), ElementsAre("no forwarding rules to translate"));
  EXPECT_THAT(empty.result.yaml, HasSubstr("rules: []\n"));

  std::string garbage("\x00\x01\xff\xfe binary\n\x7f\x80 0.0.0.0 80\n", 26);
  garbage += std::string(100000, 'x') + "\n";
  Imported g = Import(garbage + "0.0.0.0 80 10.0.0.1 8080\n");
  EXPECT_THAT(g.Problems(), SizeIs(3));
  for (const std::string& p : g.Problems()) EXPECT_THAT(p, HasSubstr("cannot read"));
  ASSERT_EQ(g.config.rules_size(), 1);
  // Source text quoted in the YAML is printable and bounded.
  for (char c : g.result.yaml) {
    EXPECT_TRUE(c == '\n' || (c >= 0x20 && c < 0x7f)) << static_cast<int>(c);
  }
  EXPECT_LT(g.result.yaml.size(), 4000u);
}

TEST(RinetdImportTest, InputTooLargeToTranslate) {
  // Bounds that keep any input quick: nothing is translated past them.
  std::string many_patterns = RuleWith("");
  for (int i = 0; i < 4097; ++i) many_patterns += "allow 10.*\n";
  Imported a = Import(many_patterns);
  EXPECT_THAT(a.Problems(), ElementsAre("more than 4096 allow/deny lines; nothing translated"));
  EXPECT_EQ(a.config.rules_size(), 0);

  // 2000 global patterns of 10 CIDRs each, repeated in 5 rules.
  std::string many_cidrs;
  for (int i = 0; i < 2000; ++i) many_cidrs += "deny 1?.0.0.1\n";
  for (int port = 1; port <= 5; ++port) many_cidrs += absl::StrCat("0.0.0.0 ", port, " a 1\n");
  Imported b = Import(many_cidrs);
  EXPECT_THAT(b.Problems(), ElementsAre("the rules would hold more than 100000 CIDRs (global "
                                        "patterns repeat in every rule); nothing translated"));
  EXPECT_EQ(b.config.rules_size(), 0);
  EXPECT_EQ(b.result.rules_left_out, 5);

  Imported c = Import(std::string(100000, '\n') + "0.0.0.0 80 10.0.0.1 8080\n");
  EXPECT_THAT(c.Problems(), ElementsAre("more than 100000 lines; nothing translated"));
  EXPECT_EQ(c.config.rules_size(), 0);
}

}  // namespace
}  // namespace ferry::config
