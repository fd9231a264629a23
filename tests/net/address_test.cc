#include "pkg/net/address.h"

#include <cstdlib>

#include "gtest/gtest.h"
#include "pkg/net/cidr.h"

namespace ferry::net {
namespace {

struct GoodCase {
  const char* text;
  const char* host;
  uint16_t port;
  const char* unix_path;
};

TEST(ParseHostPortTest, AcceptsEveryAddressForm) {
  const GoodCase cases[] = {
      {"127.0.0.1:80", "127.0.0.1", 80, ""},
      {"[::1]:8443", "::1", 8443, ""},
      {":9000", "", 9000, ""},
      {"api.default.svc.cluster.local:80", "api.default.svc.cluster.local", 80, ""},
      {"localhost:0", "localhost", 0, ""},
      {"0.0.0.0:65535", "0.0.0.0", 65535, ""},
      {"unix:/run/ferry.sock", "", 0, "/run/ferry.sock"},
  };
  for (const GoodCase& c : cases) {
    auto hp = ParseHostPort(c.text);
    ASSERT_TRUE(hp.ok()) << c.text << ": " << hp.status();
    EXPECT_EQ(hp->host, c.host) << c.text;
    EXPECT_EQ(hp->port, c.port) << c.text;
    EXPECT_EQ(hp->unix_path, c.unix_path) << c.text;
  }
}

TEST(ParseHostPortTest, RejectsWithTheReason) {
  const std::pair<const char*, const char*> cases[] = {
      {"127.0.0.1:70000", "port 70000 out of range"},
      {"127.0.0.1", "missing port in \"127.0.0.1\""},
      {"127.0.0.1:", "missing port"},
      {"127.0.0.1:http", "bad port \"http\""},
      {"::1:80", "IPv6 address must be in brackets: \"::1:80\""},
      {"[::1]", "missing port in \"[::1]\""},
      {"[::1:80", "missing ']' in \"[::1:80\""},
      {"[zz::1]:80", "bad IPv6 address \"zz::1\""},
      {"bad host:80", "bad host name \"bad host\""},
      {"", "empty address"},
      {"unix:", "empty unix socket path"},
  };
  for (const auto& [text, message] : cases) {
    auto hp = ParseHostPort(text);
    ASSERT_FALSE(hp.ok()) << text;
    EXPECT_EQ(hp.status().message(), message) << text;
  }
}

TEST(AddressTest, KeyFormats) {
  EXPECT_EQ(Address::ParseLiteral("10.0.0.7:80")->ToString(), "10.0.0.7:80");
  EXPECT_EQ(Address::ParseLiteral("[fd00::1]:80")->ToString(), "[fd00::1]:80");
  EXPECT_EQ(Address::ParseLiteral("unix:/tmp/x.sock")->ToString(), "unix:/tmp/x.sock");
  // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; keys show IPv4.
  EXPECT_EQ(Address::ParseLiteral("[::ffff:10.1.2.3]:5")->ToString(), "10.1.2.3:5");
  EXPECT_FALSE(Address::ParseLiteral("example.com:80").ok());
}

TEST(ResolveTest, LiteralResolvesToItself) {
  auto all = Resolve(*ParseHostPort("127.0.0.1:81"));
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ(all->front().ToString(), "127.0.0.1:81");
}

TEST(ListenAddressTest, AnyHonorsInaddrDefault) {
  ::setenv("INADDR_DEFAULT", "127.0.0.2", 1);
  auto a = ListenAddress(*ParseHostPort(":8080"));
  ::unsetenv("INADDR_DEFAULT");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->ToString(), "127.0.0.2:8080");
  auto any = ListenAddress(*ParseHostPort(":8080"));
  ASSERT_TRUE(any.ok());
  EXPECT_TRUE(any->ToString() == "[::]:8080" || any->ToString() == "0.0.0.0:8080");
}

TEST(CidrTest, ContainsByPrefix) {
  struct Case {
    const char* cidr;
    const char* addr;
    bool in;
  };
  const Case cases[] = {
      {"10.0.0.0/8", "10.200.1.1:1", true},   {"10.0.0.0/8", "11.0.0.1:1", false},
      {"10.9.0.0/16", "10.9.255.1:1", true},  {"10.9.0.0/16", "10.10.0.1:1", false},
      {"127.0.0.1", "127.0.0.1:9", true},     {"127.0.0.1", "127.0.0.2:9", false},
      {"0.0.0.0/0", "8.8.8.8:53", true},      {"fd00::/8", "[fd12::1]:1", true},
      {"fd00::/8", "[fe80::1]:1", false},     {"::1/128", "[::1]:1", true},
      {"10.0.0.0/8", "[::ffff:10.1.1.1]:1", true},  // mapped IPv4 matches
      {"10.0.0.0/8", "[fd00::1]:1", false},   {"10.1.2.3/13", "10.0.0.1:1", true},
  };
  for (const Case& c : cases) {
    auto cidr = Cidr::Parse(c.cidr);
    ASSERT_TRUE(cidr.ok()) << c.cidr;
    EXPECT_EQ(cidr->Contains(*Address::ParseLiteral(c.addr)), c.in) << c.cidr << " " << c.addr;
  }
}

TEST(CidrTest, RejectsWithTheReason) {
  EXPECT_EQ(Cidr::Parse("10.0.0.0/33").status().message(), "bad prefix length 33");
  EXPECT_EQ(Cidr::Parse("::/129").status().message(), "bad prefix length 129");
  EXPECT_EQ(Cidr::Parse("10.0.0.0/x").status().message(), "bad prefix length \"x\"");
  EXPECT_EQ(Cidr::Parse("banana/8").status().message(), "bad address \"banana\" in CIDR");
}

TEST(AclTest, DenyWinsAndEmptyAllowAllowsAll) {
  auto c = [](const char* s) { return *Cidr::Parse(s); };
  auto a = [](const char* s) { return *Address::ParseLiteral(s); };
  Acl open;
  EXPECT_TRUE(open.Allows(a("1.2.3.4:1")));
  Acl acl({c("10.0.0.0/8")}, {c("10.9.0.0/16")});
  EXPECT_TRUE(acl.Allows(a("10.1.0.1:1")));
  EXPECT_FALSE(acl.Allows(a("10.9.0.1:1")));
  EXPECT_FALSE(acl.Allows(a("192.168.0.1:1")));
  Acl deny_only({}, {c("127.0.0.0/8")});
  EXPECT_FALSE(deny_only.Allows(a("127.0.0.1:1")));
  EXPECT_TRUE(deny_only.Allows(a("[::1]:1")));
}

}  // namespace
}  // namespace ferry::net
