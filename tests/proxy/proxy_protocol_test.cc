#include "pkg/proxy/proxy_protocol.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cstdio>
#include <cstring>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::proxy {
namespace {

using State = ProxyParse::State;
using ::testing::HasSubstr;

// ---- building headers --------------------------------------------------------------------------

std::string Signature() { return std::string("\r\n\r\n\0\r\nQUIT\n", 12); }

std::string Be16(uint16_t v) {
  return std::string{static_cast<char>(v >> 8), static_cast<char>(v & 0xFF)};
}

// A v2 header whose length field is `length` (the real block size unless given).
std::string V2(uint8_t ver_cmd, uint8_t family, const std::string& block, int length = -1) {
  uint16_t len = length < 0 ? static_cast<uint16_t>(block.size()) : static_cast<uint16_t>(length);
  return Signature() + static_cast<char>(ver_cmd) + static_cast<char>(family) + Be16(len) + block;
}

std::string Ip4Block(const char* src, const char* dst, uint16_t sport, uint16_t dport) {
  char a[4], b[4];
  EXPECT_EQ(inet_pton(AF_INET, src, a), 1);
  EXPECT_EQ(inet_pton(AF_INET, dst, b), 1);
  return std::string(a, 4) + std::string(b, 4) + Be16(sport) + Be16(dport);
}

std::string Ip6Block(const char* src, const char* dst, uint16_t sport, uint16_t dport) {
  char a[16], b[16];
  EXPECT_EQ(inet_pton(AF_INET6, src, a), 1);
  EXPECT_EQ(inet_pton(AF_INET6, dst, b), 1);
  return std::string(a, 16) + std::string(b, 16) + Be16(sport) + Be16(dport);
}

std::string UnixPath(const std::string& path) {
  std::string out = path;
  out.resize(108, '\0');
  return out;
}

std::string Tlv(uint8_t type, const std::string& value) {
  return static_cast<char>(type) + Be16(static_cast<uint16_t>(value.size())) + value;
}

// Parses a copy sized exactly to `bytes`, so AddressSanitizer reports any read past the end.
ProxyParse Parse(const std::string& bytes) {
  std::vector<uint8_t> copy(bytes.begin(), bytes.end());
  return ParseProxyHeader(absl::MakeConstSpan(copy));
}

std::string Show(const std::string& bytes) { return absl::CHexEscape(bytes); }

const char* StateName(State s) {
  switch (s) {
    case State::kNeedMore:
      return "kNeedMore";
    case State::kDone:
      return "kDone";
    case State::kError:
      return "kError";
  }
  return "?";
}

// ---- valid headers -----------------------------------------------------------------------------

struct ValidCase {
  const char* name;
  std::string bytes;
  ProxyVersion version;
  bool local;
  int family;          // of both addresses when !local
  const char* source;  // Address::ToString() when !local
  const char* destination;
};

const std::string kFullV6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";

std::vector<ValidCase> ValidCases() {
  return {
      {"v1 TCP4", "PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\n", ProxyVersion::kV1, false,
       AF_INET, "192.168.0.1:56324", "10.0.0.2:443"},
      {"v1 TCP4 extremes", "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", ProxyVersion::kV1,
       false, AF_INET, "0.0.0.0:0", "255.255.255.255:65535"},
      {"v1 TCP6", "PROXY TCP6 2001:db8::1 fd00::2 1111 2222\r\n", ProxyVersion::kV1, false,
       AF_INET6, "[2001:db8::1]:1111", "[fd00::2]:2222"},
      {"v1 TCP6 mapped IPv4", "PROXY TCP6 ::ffff:10.1.2.3 ::1 0 65535\r\n", ProxyVersion::kV1,
       false, AF_INET6, "10.1.2.3:0", "[::1]:65535"},
      {"v1 TCP6 longest", "PROXY TCP6 " + kFullV6 + " " + kFullV6 + " 65535 65535\r\n",
       ProxyVersion::kV1, false, AF_INET6, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
       "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"},
      {"v1 UNKNOWN", "PROXY UNKNOWN\r\n", ProxyVersion::kV1, true, 0, "", ""},
      // The spec's worst case: exactly 107 bytes.
      {"v1 UNKNOWN 107 bytes", "PROXY UNKNOWN " + kFullV6 + " " + kFullV6 + " 65535 65535\r\n",
       ProxyVersion::kV1, true, 0, "", ""},
      {"v1 UNKNOWN ignores the rest", "PROXY UNKNOWN what\rever  \n goes\r\n", ProxyVersion::kV1,
       true, 0, "", ""},
      {"v2 TCP4", V2(0x21, 0x11, Ip4Block("192.0.2.1", "198.51.100.2", 5000, 443)),
       ProxyVersion::kV2, false, AF_INET, "192.0.2.1:5000", "198.51.100.2:443"},
      {"v2 TCP4 with TLVs",
       V2(0x21, 0x11,
          Ip4Block("192.0.2.1", "198.51.100.2", 1, 65535) + Tlv(0x04, "") +
              Tlv(0xEA, std::string("\x01vpce-0123", 10)) + Tlv(0x04, std::string(300, '\0'))),
       ProxyVersion::kV2, false, AF_INET, "192.0.2.1:1", "198.51.100.2:65535"},
      {"v2 TCP6", V2(0x21, 0x21, Ip6Block("2001:db8::1", "2001:db8::2", 40000, 8443)),
       ProxyVersion::kV2, false, AF_INET6, "[2001:db8::1]:40000", "[2001:db8::2]:8443"},
      {"v2 TCP6 with TLV",
       V2(0x21, 0x21, Ip6Block("fd00::1", "::ffff:10.0.0.1", 0, 80) + Tlv(0x01, "h2")),
       ProxyVersion::kV2, false, AF_INET6, "[fd00::1]:0", "10.0.0.1:80"},
      {"v2 UNIX", V2(0x21, 0x31, UnixPath("/run/client.sock") + UnixPath("/run/ferry.sock")),
       ProxyVersion::kV2, false, AF_UNIX, "unix:/run/client.sock", "unix:/run/ferry.sock"},
      {"v2 LOCAL", V2(0x20, 0x00, ""), ProxyVersion::kV2, true, 0, "", ""},
      {"v2 LOCAL ignores addresses", V2(0x20, 0x11, Ip4Block("192.0.2.1", "198.51.100.2", 1, 2)),
       ProxyVersion::kV2, true, 0, "", ""},
      {"v2 LOCAL ignores the family byte", V2(0x20, 0xFF, "junk"), ProxyVersion::kV2, true, 0, "",
       ""},
      {"v2 PROXY UNSPEC", V2(0x21, 0x00, ""), ProxyVersion::kV2, true, 0, "", ""},
  };
}

void ExpectHeader(const ValidCase& c, const ProxyParse& p) {
  ASSERT_EQ(p.state, State::kDone) << c.name << ": " << p.error;
  EXPECT_EQ(p.consumed, c.bytes.size()) << c.name;
  EXPECT_EQ(p.header.version, c.version) << c.name;
  EXPECT_EQ(p.header.local, c.local) << c.name;
  if (c.local) return;
  EXPECT_EQ(p.header.source.family(), c.family) << c.name;
  EXPECT_EQ(p.header.destination.family(), c.family) << c.name;
  EXPECT_EQ(p.header.source.ToString(), c.source) << c.name;
  EXPECT_EQ(p.header.destination.ToString(), c.destination) << c.name;
}

TEST(ParseProxyHeaderTest, AcceptsEveryValidForm) {
  for (const ValidCase& c : ValidCases()) ExpectHeader(c, Parse(c.bytes));
}

TEST(ParseProxyHeaderTest, EveryProperPrefixNeedsMore) {
  for (const ValidCase& c : ValidCases()) {
    for (size_t n = 0; n < c.bytes.size(); ++n) {
      ProxyParse p = Parse(c.bytes.substr(0, n));
      EXPECT_EQ(p.state, State::kNeedMore)
          << c.name << " cut to " << n << " bytes: " << StateName(p.state) << " " << p.error;
    }
  }
}

TEST(ParseProxyHeaderTest, PayloadAfterTheHeaderIsNotConsumed) {
  const std::string payloads[] = {
      "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
      "\r\n",                                 // looks like the start of a v2 signature
      "PROXY TCP4 1.1.1.1 2.2.2.2 1 2\r\n",   // a second header is payload
      std::string(2 * kMaxProxyHeader, 'z'),  // more than any header can hold
  };
  for (const ValidCase& c : ValidCases()) {
    for (const std::string& payload : payloads) ExpectHeader(c, Parse(c.bytes + payload));
  }
}

TEST(ParseProxyHeaderTest, TakesStringView) {
  ProxyParse p = ParseProxyHeader(absl::string_view("PROXY TCP4 1.2.3.4 5.6.7.8 9 10\r\nhi"));
  ASSERT_EQ(p.state, State::kDone) << p.error;
  EXPECT_EQ(p.consumed, 33u);
  EXPECT_EQ(p.header.source.ToString(), "1.2.3.4:9");
}

// ---- invalid headers ---------------------------------------------------------------------------

struct BadCase {
  std::string bytes;
  // The error must be reported once this many bytes are in, and not before (every shorter prefix
  // is kNeedMore): the parser neither waits past the first impossible byte nor gives up early.
  // 0 means the whole of `bytes`.
  size_t decided_at;
  const char* message;  // a substring of the error
};

std::vector<BadCase> BadCases() {
  const std::string ok4 = Ip4Block("192.0.2.1", "198.51.100.2", 1, 2);
  const std::string long_v6 = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
  std::vector<BadCase> cases = {
      // Not a PROXY header at all.
      {"GET / HTTP/1.1\r\n", 1, "no PROXY protocol header: connection starts with \"G"},
      {"\x16\x03\x01\x02\x00\x01", 1, "no PROXY protocol header"},  // TLS ClientHello
      {"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 1, "no PROXY protocol header"},
      {"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", 6, "no PROXY protocol header"},
      {"\r\n\r\nGET", 5, "no PROXY protocol header"},
      {std::string("\r\n\r\n\0\r\nQUIX\n\x21\x11\x00\x0c", 16), 11, "no PROXY protocol header"},
      // v1 protocol field.
      {"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", 10, "v1 unknown protocol \"TCP5\""},
      {"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", 8, "v1 unknown protocol"},
      {"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", 7, "v1 unknown protocol"},
      {"PROXY UNKNOWNX\r\n", 14, "v1 unknown protocol \"UNKNOWNX"},
      {"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 7, "v1 extra space before the protocol"},
      {"PROXY \r\n", 7, "v1 header ends before the protocol"},
      // v1 spacing and line end.
      {"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", 12, "v1 extra space before the source address"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1111  2222\r\n", 33,
       "v1 extra space before the destination port"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222 \r\n", 37,
       "v1 unexpected data after the destination port"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1111\r\n", 32, "v1 header ends before the destination port"},
      {"PROXY TCP4\r\n", 11, "v1 header ends before the source address"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\n", 0, "v1 bad destination port \"2222\\n\""},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\rX", 0, "v1 CR not followed by LF"},
      {"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", 19, "v1 bad TCP4 source address \"1.2.3.4\\t"},
      // v1 addresses.
      {"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", 20, "v1 bad TCP4 source address \"1.2.3.256\""},
      {"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", 13, "v1 bad TCP4 source address \"01"},
      {"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", 17, "v1 bad TCP4 source address \"1.2.3\""},
      {"PROXY TCP4 1.2.3.4 5.6.7.8.9 1 2\r\n", 27, "v1 bad TCP4 destination address"},
      {"PROXY TCP4 ::1 ::1 1 2\r\n", 12, "v1 bad TCP4 source address"},
      {"PROXY TCP4 -1.2.3.4 5.6.7.8 1 2\r\n", 12, "v1 bad TCP4 source address"},
      {"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", 13, "v1 bad TCP6 source address"},
      {"PROXY TCP6 :::1 ::1 1 2\r\n", 14, "v1 bad TCP6 source address"},
      {"PROXY TCP6 ::1 fe80::1%eth0 1 2\r\n", 23, "v1 bad TCP6 destination address"},
      {"PROXY TCP6 12345::1 ::1 1 2\r\n", 16, "v1 bad TCP6 source address"},
      {"PROXY TCP6 1::2:3:4:5:6:7:8 ::1 1 2\r\n", 26, "v1 bad TCP6 source address"},
      {"PROXY TCP6 ::ffff:1.2.3.04 ::1 1 2\r\n", 26, "v1 bad TCP6 source address"},
      // v1 ports.
      {"PROXY TCP4 1.2.3.4 5.6.7.8 65536 80\r\n", 32, "v1 source port \"65536\" out of range"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 100000 80\r\n", 33, "v1 source port \"100000\" out of range"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 080 80\r\n", 29, "v1 bad source port \"08"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 +80 80\r\n", 28, "v1 bad source port \"+"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 -1 80\r\n", 28, "v1 bad source port \"-"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 80 http\r\n", 31, "v1 bad destination port \"h"},
      // v1 length.
      {"PROXY UNKNOWN " + std::string(200, 'x'), 107, "v1 header without CRLF in 107 bytes"},
      {"PROXY TCP6 " + long_v6 + " " + long_v6 + " 1 2\r\n", 107,
       "v1 header without CRLF in 107 bytes"},
      // v2 fixed part.
      {V2(0x11, 0x11, ok4), 13, "v2 bad version 1 in byte 0x11 (want 2)"},
      {V2(0x31, 0x11, ok4), 13, "v2 bad version 3"},
      {V2(0x22, 0x11, ok4), 13, "v2 unknown command 0x2"},
      {V2(0x2F, 0x11, ok4), 13, "v2 unknown command 0xf"},
      {V2(0x21, 0x12, ok4), 14, "v2 transport is not TCP (family byte 0x12 is datagram)"},
      {V2(0x21, 0x22, Ip6Block("::1", "::1", 1, 2)), 14, "v2 transport is not TCP"},
      {V2(0x21, 0x32, UnixPath("/a") + UnixPath("/b")), 14, "v2 transport is not TCP"},
      {V2(0x21, 0x41, ok4), 14, "v2 unsupported address family/transport byte 0x41"},
      {V2(0x21, 0x10, ok4), 14, "v2 unsupported address family/transport byte 0x10"},
      {V2(0x21, 0x01, ok4), 14, "v2 unsupported address family/transport byte 0x01"},
      // v2 length.
      {V2(0x21, 0x11, ok4, 4081), 16, "v2 header of 4097 bytes exceeds the limit of 4096"},
      {V2(0x20, 0x00, "", 65535), 16, "v2 header of 65551 bytes exceeds the limit of 4096"},
      {V2(0x21, 0x11, ok4.substr(0, 8)), 16,
       "v2 address block of 8 bytes is shorter than the 12 a TCP4 address needs"},
      {V2(0x21, 0x21, ok4), 16,
       "v2 address block of 12 bytes is shorter than the 36 a TCP6 address needs"},
      {V2(0x21, 0x31, std::string(36, '\0')), 16,
       "v2 address block of 36 bytes is shorter than the 216 a UNIX address needs"},
      // v2 addresses and TLVs.
      {V2(0x21, 0x11, ok4 + "ab"), 16,
       "v2 2 bytes after the TCP4 addresses are too short for a TLV (3-byte header)"},
      {V2(0x21, 0x11, ok4 + std::string("\x01\x00\x03", 3) + "ab"), 31,
       "v2 TLV type 0x01 at byte 28 with 3 value bytes overruns the header end at byte 33"},
      {V2(0x21, 0x11, ok4 + Tlv(0x04, "x") + std::string("\x05\x00", 2)), 31,
       "v2 TLV at byte 32 cut off by the header length (2 bytes left, a TLV header takes 3)"},
      {V2(0x21, 0x31, std::string(108, 'a') + UnixPath("/b")), 124,
       "v2 unix source path not NUL-terminated in 108 bytes"},
      {V2(0x21, 0x31, UnixPath("/a") + std::string(108, 'b')), 232,
       "v2 unix destination path not NUL-terminated in 108 bytes"},
  };
  return cases;
}

TEST(ParseProxyHeaderTest, RejectsAtTheFirstImpossibleByteWithTheReason) {
  for (const BadCase& c : BadCases()) {
    const size_t decided_at = c.decided_at == 0 ? c.bytes.size() : c.decided_at;
    ASSERT_LE(decided_at, c.bytes.size()) << Show(c.bytes);
    for (size_t n = 0; n <= c.bytes.size(); ++n) {
      ProxyParse p = Parse(c.bytes.substr(0, n));
      if (n < decided_at) {
        EXPECT_EQ(p.state, State::kNeedMore)
            << Show(c.bytes) << " cut to " << n << ": " << StateName(p.state) << " " << p.error;
      } else {
        EXPECT_EQ(p.state, State::kError) << Show(c.bytes) << " cut to " << n;
        EXPECT_THAT(p.error, HasSubstr(c.message)) << Show(c.bytes) << " cut to " << n;
        EXPECT_EQ(p.consumed, 0u);
      }
    }
  }
}

TEST(ParseProxyHeaderTest, NamesTheBytesAClientSentInsteadOfAHeader) {
  ProxyParse p = Parse("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n");
  ASSERT_EQ(p.state, State::kError);
  EXPECT_EQ(p.error, "no PROXY protocol header: connection starts with \"GET / HTTP/1.1\\r\\n\"");
}

// IPv6 text is checked as a prefix while it arrives; every prefix of every valid form must be
// accepted, or a header split across reads would be refused.
TEST(ParseProxyHeaderTest, AcceptsEveryPrefixOfIpv6Forms) {
  const char* forms[] = {
      "::",
      "::1",
      "1::",
      "1::2",
      "fe80::1:2:3:4:5",
      "1:2:3:4:5:6:7:8",
      "1:2:3:4:5:6::",
      "1:2:3:4:5:6::8",
      "1::3:4:5:6:7:8",
      "::2:3:4:5:6:7:8",
      "1:2:3:4:5:6:7::",
      "::ffff:1.2.3.4",
      "::1.2.3.4",
      "1:2:3:4:5:6:1.2.3.4",
      "1::6:255.255.255.0",
      "64:ff9b::192.0.2.33",
      "0:0:0:0:0:0:0:0",
      "00ab:0cde::0001",
      "ABCD:EF01::",
      "1:0::0:1",
  };
  for (const char* form : forms) {
    const std::string header = std::string("PROXY TCP6 ") + form + " ::1 1 2\r\n";
    ProxyParse full = Parse(header);
    ASSERT_EQ(full.state, State::kDone) << header << ": " << full.error;
    for (size_t n = 0; n < header.size(); ++n) {
      ProxyParse p = Parse(header.substr(0, n));
      EXPECT_EQ(p.state, State::kNeedMore)
          << Show(header.substr(0, n)) << ": " << StateName(p.state) << " " << p.error;
    }
  }
}

// A random textual form of a random IPv6 address: groups with or without leading zeros, mixed
// case, a "::" over any run of zero groups (also one group, which inet_ntop never writes) and
// sometimes the last 32 bits as dotted IPv4.
std::string RandomIpv6Text(std::mt19937& rng) {
  uint16_t groups[8];
  for (uint16_t& g : groups) {
    const uint32_t kind = rng() % 4;
    g = kind == 0   ? 0
        : kind == 1 ? static_cast<uint16_t>(rng() & 0xF)
                    : static_cast<uint16_t>(rng() & 0xFFFF);
  }
  const bool dotted_tail = rng() % 3 == 0;
  const int group_count = dotted_tail ? 6 : 8;
  // Most of the time, zero a run of groups and write it as "::".
  int run_start = -1, run_len = 0;
  if (rng() % 4 != 0) {
    run_start = static_cast<int>(rng() % group_count);
    run_len = 1 + static_cast<int>(rng() % (group_count - run_start));
    for (int i = run_start; i < run_start + run_len; ++i) groups[i] = 0;
  }
  std::string text;
  for (int i = 0; i < group_count; ++i) {
    if (i == run_start) {
      text += "::";
      i += run_len - 1;
      continue;
    }
    if (!text.empty() && text.back() != ':') text += ':';
    char buf[8];
    const int width = 1 + static_cast<int>(rng() % 4);
    std::snprintf(buf, sizeof(buf), rng() % 2 ? "%0*x" : "%0*X", width, groups[i]);
    text += buf;
  }
  if (dotted_tail) {
    if (!text.empty() && text.back() != ':') text += ':';
    text += std::to_string(groups[6] >> 8) + "." + std::to_string(groups[6] & 0xFF) + "." +
            std::to_string(groups[7] >> 8) + "." + std::to_string(groups[7] & 0xFF);
  }
  return text;
}

TEST(ParseProxyHeaderTest, AcceptsEveryPrefixOfRandomIpv6Texts) {
  std::mt19937 rng(99);
  for (int i = 0; i < 2000; ++i) {
    const std::string text = RandomIpv6Text(rng);
    in6_addr unused;
    ASSERT_EQ(inet_pton(AF_INET6, text.c_str(), &unused), 1) << text;
    const std::string header = "PROXY TCP6 ::1 " + text + " 1 2\r\n";
    ProxyParse full = Parse(header);
    ASSERT_EQ(full.state, State::kDone) << header << ": " << full.error;
    for (size_t n = 0; n < header.size(); ++n) {
      ProxyParse p = Parse(header.substr(0, n));
      ASSERT_EQ(p.state, State::kNeedMore)
          << Show(header.substr(0, n)) << ": " << StateName(p.state) << " " << p.error;
    }
  }
}

// ---- writing -----------------------------------------------------------------------------------

net::Address Addr(const char* literal) {
  auto a = net::Address::ParseLiteral(literal);
  EXPECT_TRUE(a.ok()) << literal << ": " << a.status();
  return a.ok() ? *a : net::Address();
}

std::string Header(ProxyVersion v, const net::Address& src, const net::Address& dst) {
  std::string out = "keep";  // appends, never overwrites
  AppendProxyHeader(v, src, dst, &out);
  EXPECT_EQ(out.substr(0, 4), "keep");
  return out.substr(4);
}

TEST(AppendProxyHeaderTest, WritesV1Lines) {
  const struct {
    const char* src;
    const char* dst;
    const char* line;
  } cases[] = {
      {"192.0.2.1:5000", "198.51.100.2:443", "PROXY TCP4 192.0.2.1 198.51.100.2 5000 443\r\n"},
      {"[2001:db8::1]:5000", "[2001:db8::2]:443",
       "PROXY TCP6 2001:db8::1 2001:db8::2 5000 443\r\n"},
      // A dual-stack listener sees IPv4 clients IPv4-mapped: written as TCP4.
      {"[::ffff:10.0.0.1]:1", "[::ffff:10.0.0.2]:65535",
       "PROXY TCP4 10.0.0.1 10.0.0.2 1 65535\r\n"},
      // Mixed families keep both addresses as TCP6.
      {"10.0.0.1:1", "[::1]:2", "PROXY TCP6 ::ffff:10.0.0.1 ::1 1 2\r\n"},
      {"unix:/run/a.sock", "unix:/run/b.sock", "PROXY UNKNOWN\r\n"},
      {"unix:/run/a.sock", "127.0.0.1:80", "PROXY UNKNOWN\r\n"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(Header(ProxyVersion::kV1, Addr(c.src), Addr(c.dst)), c.line) << c.src;
  }
  EXPECT_EQ(Header(ProxyVersion::kV1, net::Address(), Addr("127.0.0.1:80")), "PROXY UNKNOWN\r\n");
}

TEST(AppendProxyHeaderTest, WritesV2Bytes) {
  EXPECT_EQ(Show(Header(ProxyVersion::kV2, Addr("192.0.2.1:5000"), Addr("198.51.100.2:443"))),
            Show(Signature() + std::string("\x21\x11\x00\x0c", 4) +
                 std::string("\xc0\x00\x02\x01\xc6\x33\x64\x02\x13\x88\x01\xbb", 12)));
  EXPECT_EQ(Show(Header(ProxyVersion::kV2, Addr("[2001:db8::1]:1"), Addr("[::1]:2"))),
            Show(V2(0x21, 0x21, Ip6Block("2001:db8::1", "::1", 1, 2))));
  EXPECT_EQ(Show(Header(ProxyVersion::kV2, Addr("10.0.0.1:1"), Addr("[::1]:2"))),
            Show(V2(0x21, 0x21, Ip6Block("::ffff:10.0.0.1", "::1", 1, 2))));
  EXPECT_EQ(Show(Header(ProxyVersion::kV2, Addr("unix:/run/a.sock"), Addr("unix:/b"))),
            Show(V2(0x21, 0x31, UnixPath("/run/a.sock") + UnixPath("/b"))));
  EXPECT_EQ(Show(Header(ProxyVersion::kV2, Addr("unix:/run/a.sock"), Addr("127.0.0.1:80"))),
            Show(V2(0x20, 0x00, "")));
  EXPECT_EQ(Show(Header(ProxyVersion::kV2, net::Address(), net::Address())),
            Show(V2(0x20, 0x00, "")));
}

TEST(AppendProxyHeaderTest, RoundTrips) {
  const std::pair<const char*, const char*> pairs[] = {
      {"192.0.2.1:5000", "198.51.100.2:443"},
      {"0.0.0.0:0", "255.255.255.255:65535"},
      {"[2001:db8::1]:5000", "[fd00::2]:443"},
      {"[::]:0", "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"},
      {"[::ffff:10.0.0.1]:7", "[::ffff:10.0.0.2]:8"},
      {"10.0.0.1:7", "[::1]:8"},
  };
  for (ProxyVersion v : {ProxyVersion::kV1, ProxyVersion::kV2}) {
    for (const auto& [src, dst] : pairs) {
      const std::string bytes = Header(v, Addr(src), Addr(dst));
      ProxyParse p = Parse(bytes + "payload");
      ASSERT_EQ(p.state, State::kDone) << Show(bytes) << ": " << p.error;
      EXPECT_EQ(p.consumed, bytes.size());
      EXPECT_EQ(p.header.version, v);
      EXPECT_FALSE(p.header.local);
      // Mixed families come back IPv4-mapped; Unmapped() restores what was sent.
      EXPECT_EQ(p.header.source.Unmapped(), Addr(src).Unmapped()) << src;
      EXPECT_EQ(p.header.destination.Unmapped(), Addr(dst).Unmapped()) << dst;
    }
  }
  ProxyParse unix_parse =
      Parse(Header(ProxyVersion::kV2, Addr("unix:/run/a.sock"), Addr("unix:/run/b.sock")));
  ASSERT_EQ(unix_parse.state, State::kDone) << unix_parse.error;
  EXPECT_EQ(unix_parse.header.source, net::Address::Unix("/run/a.sock"));
  EXPECT_EQ(unix_parse.header.destination, net::Address::Unix("/run/b.sock"));
  for (ProxyVersion v : {ProxyVersion::kV1, ProxyVersion::kV2}) {
    ProxyParse local = Parse(Header(v, Addr("unix:/run/a.sock"), Addr("127.0.0.1:80")));
    ASSERT_EQ(local.state, State::kDone) << local.error;
    EXPECT_TRUE(local.header.local);
  }
}

// ---- robustness --------------------------------------------------------------------------------

// Checks what must hold for any input, and that a longer input never contradicts a shorter one.
void CheckInvariants(const std::string& data, std::mt19937& rng, int* done, int* errors) {
  ProxyParse p = Parse(data);
  ASSERT_LE(p.consumed, data.size()) << Show(data);
  switch (p.state) {
    case State::kDone: {
      ++*done;
      ASSERT_GT(p.consumed, 0u) << Show(data);
      ASSERT_LE(p.consumed, kMaxProxyHeader) << Show(data);
      ProxyParse alone = Parse(data.substr(0, p.consumed));
      ASSERT_EQ(alone.state, State::kDone) << Show(data);
      ASSERT_EQ(alone.consumed, p.consumed) << Show(data);
      break;
    }
    case State::kError:
      ++*errors;
      ASSERT_FALSE(p.error.empty()) << Show(data);
      ASSERT_EQ(p.consumed, 0u) << Show(data);
      break;
    case State::kNeedMore:
      ASSERT_LT(data.size(), kMaxProxyHeader) << Show(data);
      break;
  }
  const size_t k = std::uniform_int_distribution<size_t>(0, data.size())(rng);
  ProxyParse shorter = Parse(data.substr(0, k));
  if (shorter.state == State::kError) {
    ASSERT_EQ(p.state, State::kError)
        << Show(data) << " but its first " << k << " bytes: " << shorter.error;
  } else if (shorter.state == State::kDone) {
    ASSERT_EQ(p.state, State::kDone) << Show(data) << " cut at " << k;
    ASSERT_EQ(p.consumed, shorter.consumed) << Show(data);
  }
}

TEST(ParseProxyHeaderTest, RandomBytesNeverCrashOrOverread) {
  std::mt19937 rng(20240611);
  const std::string alphabet = "0123456789abcdefABCDEF.: \r\n\tPROXYTCP46UNKOW+-%";
  const std::string starts[] = {"",
                                "PROXY ",
                                "PROXY TCP4 ",
                                "PROXY TCP6 ",
                                "PROXY UNKNOWN",
                                Signature(),
                                Signature() + "\x21",
                                Signature() + "\x20"};
  int done = 0, errors = 0;
  for (int i = 0; i < 10000; ++i) {
    std::string data = starts[rng() % std::size(starts)];
    const size_t extra = rng() % 160;
    const bool text = rng() % 2 == 0;
    for (size_t j = 0; j < extra; ++j) {
      data.push_back(text ? alphabet[rng() % alphabet.size()] : static_cast<char>(rng() & 0xFF));
    }
    CheckInvariants(data, rng, &done, &errors);
    if (::testing::Test::HasFatalFailure()) return;
  }
  EXPECT_GT(errors, 1000);
}

TEST(ParseProxyHeaderTest, MutatedHeadersNeverCrashOrOverread) {
  std::mt19937 rng(7);
  std::vector<std::string> seeds;
  for (const ValidCase& c : ValidCases()) seeds.push_back(c.bytes + "GET / HTTP/1.0\r\n\r\n");
  int done = 0, errors = 0;
  for (int i = 0; i < 10000; ++i) {
    std::string data = seeds[rng() % seeds.size()];
    const int mutations = 1 + static_cast<int>(rng() % 3);
    for (int m = 0; m < mutations && !data.empty(); ++m) {
      const size_t at = rng() % data.size();
      switch (rng() % 4) {
        case 0:
          data[at] = static_cast<char>(rng() & 0xFF);
          break;
        case 1:
          data.erase(at, 1);
          break;
        case 2:
          data.insert(at, 1, static_cast<char>(rng() & 0xFF));
          break;
        case 3:
          data.resize(at);
          break;
      }
    }
    CheckInvariants(data, rng, &done, &errors);
    if (::testing::Test::HasFatalFailure()) return;
  }
  // Both outcomes are exercised, or the mutations are not reaching the parser's checks.
  EXPECT_GT(done, 500);
  EXPECT_GT(errors, 500);
}

}  // namespace
}  // namespace ferry::proxy
