#include "pkg/config/rinetd.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "pkg/net/address.h"

namespace ferry::config {
namespace {

// A pattern expands to at most this many CIDRs; beyond that the rule would
// be unreadable, and the pattern is treated as having no CIDR form.
constexpr size_t kMaxCidrsPerPattern = 16;
// Glob states are bits of a uint64_t: position 0..length.
constexpr size_t kMaxPatternLength = 63;
// Octet steps one pattern's expansion may take (adversarial globs): 64
// distinct glob states per pattern, far more than real patterns meet.
constexpr size_t kMaxExpandWork = 64 * 256;
// Bounds on what one file may ask for, so that no input runs for long: lines,
// allow/deny lines, and CIDRs written over all rules (global patterns are
// repeated in every rule).
constexpr size_t kMaxLines = 100000;
constexpr size_t kMaxPatternLines = 4096;
constexpr size_t kMaxCidrsWritten = 100000;
// Source text quoted in comments is cut to this many characters.
constexpr size_t kMaxQuotedLine = 160;

constexpr absl::string_view kBlanks = " \t";

// Common TCP services (IANA names and Debian's aliases), so that an import in
// a container without /etc/services still knows them.
constexpr std::pair<absl::string_view, uint16_t> kServices[] = {
    {"echo", 7},          {"discard", 9},     {"daytime", 13},         {"ftp-data", 20},
    {"ftp", 21},          {"ssh", 22},        {"telnet", 23},          {"smtp", 25},
    {"time", 37},         {"domain", 53},     {"gopher", 70},          {"finger", 79},
    {"http", 80},         {"www", 80},        {"kerberos", 88},        {"pop3", 110},
    {"sunrpc", 111},      {"auth", 113},      {"ident", 113},          {"nntp", 119},
    {"netbios-ssn", 139}, {"imap", 143},      {"imap2", 143},          {"snmp", 161},
    {"bgp", 179},         {"ldap", 389},      {"https", 443},          {"microsoft-ds", 445},
    {"submissions", 465}, {"smtps", 465},     {"ssmtp", 465},          {"rtsp", 554},
    {"submission", 587},  {"ipp", 631},       {"ldaps", 636},          {"domain-s", 853},
    {"rsync", 873},       {"ftps", 990},      {"imaps", 993},          {"pop3s", 995},
    {"socks", 1080},      {"openvpn", 1194},  {"ms-sql-s", 1433},      {"mqtt", 1883},
    {"nfs", 2049},        {"mysql", 3306},    {"ms-wbt-server", 3389}, {"rdp", 3389},
    {"svn", 3690},        {"sip", 5060},      {"xmpp-client", 5222},   {"postgresql", 5432},
    {"postgres", 5432},   {"amqp", 5672},     {"vnc", 5900},           {"x11", 6000},
    {"redis", 6379},      {"ircd", 6667},     {"ircs-u", 6697},        {"http-alt", 8080},
    {"webcache", 8080},   {"tproxy", 8081},   {"git", 9418},           {"memcache", 11211},
    {"hkp", 11371},       {"mongodb", 27017},
};

std::string Quoted(absl::string_view s) { return absl::StrCat("\"", s, "\""); }

// A YAML double-quoted scalar. Values reaching here are checked to be UTF-8
// without control characters, so only the quote and backslash need escaping.
std::string YamlString(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
  return out;
}

// Source text made safe for a YAML comment: printable ASCII only, bounded.
std::string CommentText(absl::string_view s, size_t max = kMaxQuotedLine) {
  std::string out;
  for (char c : s.substr(0, max)) {
    const auto u = static_cast<unsigned char>(c);
    out += (c == '\t') ? ' ' : (u < 0x20 || u >= 0x7f) ? '?' : c;
  }
  if (s.size() > max) out += "...";
  return out;
}

bool IsValidUtf8(absl::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;  // continuation bytes
    if (c >= 0x80) {
      if ((c >> 5) == 0x6) {
        n = 1;
      } else if ((c >> 4) == 0xe) {
        n = 2;
      } else if ((c >> 3) == 0x1e) {
        n = 3;
      } else {
        return false;
      }
    }
    if (i + n >= s.size()) return false;
    for (size_t k = 1; k <= n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    }
    i += n + 1;
  }
  return true;
}

bool HasControl(absl::string_view s) {
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return true;
  }
  return false;
}

bool AllDigits(absl::string_view s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](char c) { return absl::ascii_isdigit(c); });
}

// ---------------------------------------------------------------------------
// Address prefixes.

// An IPv4 or IPv6 prefix; IPv4 addresses use the first 4 bytes of `addr`.
struct Prefix {
  bool v6 = false;
  std::array<uint8_t, 16> addr{};
  int len = 0;

  static Prefix V4(uint32_t value, int len) {
    Prefix p;
    p.addr[0] = static_cast<uint8_t>(value >> 24);
    p.addr[1] = static_cast<uint8_t>(value >> 16);
    p.addr[2] = static_cast<uint8_t>(value >> 8);
    p.addr[3] = static_cast<uint8_t>(value);
    p.len = len;
    return p;
  }
  static Prefix AllV4() { return V4(0, 0); }
  static Prefix AllV6() {
    Prefix p;
    p.v6 = true;
    return p;
  }

  bool Contains(const Prefix& other) const {
    if (v6 != other.v6 || len > other.len) return false;
    for (int bit = 0; bit < len; ++bit) {
      const int mask = 0x80 >> (bit % 8);
      if ((addr[bit / 8] & mask) != (other.addr[bit / 8] & mask)) return false;
    }
    return true;
  }
  bool operator==(const Prefix& o) const { return v6 == o.v6 && len == o.len && addr == o.addr; }
  bool operator<(const Prefix& o) const {
    return std::tie(v6, len, addr) < std::tie(o.v6, o.len, o.addr);
  }

  // This prefix cut to its first `bits` bits (bits <= len).
  Prefix Truncated(int bits) const {
    Prefix p = *this;
    p.len = bits;
    for (int i = 0; i < 16; ++i) {
      const int keep = std::clamp(bits - 8 * i, 0, 8);
      p.addr[i] &= static_cast<uint8_t>(0xff00 >> keep);
    }
    return p;
  }

  std::string ToString() const {
    char buf[INET6_ADDRSTRLEN] = {0};
    inet_ntop(v6 ? AF_INET6 : AF_INET, addr.data(), buf, sizeof(buf));
    return absl::StrCat(buf, "/", len);
  }
};

// ---------------------------------------------------------------------------
// Patterns.

// rinetd's pattern: `*` matches any run of characters (dots included), `?`
// exactly one; everything else itself. As an NFA whose states are the
// pattern positions, kept as bits.
class Glob {
 public:
  explicit Glob(absl::string_view pattern) : p_(pattern) {}

  uint64_t Start() const { return Close(1); }
  uint64_t Step(uint64_t states, char c) const {
    uint64_t next = 0;
    for (size_t i = 0; i < p_.size(); ++i) {
      if ((states & Bit(i)) == 0) continue;
      if (p_[i] == '*') {
        next |= Bit(i);
      } else if (p_[i] == '?' || p_[i] == c) {
        next |= Bit(i + 1);
      }
    }
    return Close(next);
  }
  bool Accepts(uint64_t states) const { return (states & Bit(p_.size())) != 0; }

 private:
  static uint64_t Bit(size_t i) { return uint64_t{1} << i; }
  // A star may match nothing: being before it is being after it too.
  uint64_t Close(uint64_t states) const {
    for (size_t i = 0; i < p_.size(); ++i) {
      if ((states & Bit(i)) != 0 && p_[i] == '*') states |= Bit(i + 1);
    }
    return states;
  }

  absl::string_view p_;
};

// The IPv4 addresses whose dotted-decimal text (as rinetd prints a client)
// a glob matches, as the fewest CIDR blocks: a walk over the octets that
// shares work between equal glob states.
class Ipv4Expander {
 public:
  explicit Ipv4Expander(const Glob& glob) : glob_(glob) {}

  // nullopt when the set needs more than kMaxCidrsPerPattern blocks, or more
  // work than kMaxExpandWork to find out (then gave_up() is true).
  std::optional<std::vector<Prefix>> Run() {
    auto blocks = Expand(4, glob_.Start());
    if (!blocks) return std::nullopt;
    std::vector<Prefix> out;
    for (const Block& b : *blocks) out.push_back(Prefix::V4(b.value, b.len));
    return out;
  }
  bool gave_up() const { return gave_up_; }

 private:
  // A block of the addresses' last `octets` octets: its `len` leading bits
  // (of 8 * octets) are those of `value`.
  struct Block {
    uint32_t value;
    int len;
  };
  using Blocks = std::optional<std::vector<Block>>;

  Blocks Expand(int octets, uint64_t states) {
    const auto key = std::make_pair(octets, states);
    if (auto it = memo_.find(key); it != memo_.end()) return it->second;
    Blocks result = Compute(octets, states);
    memo_.emplace(key, result);
    return result;
  }

  Blocks Compute(int octets, uint64_t states) {
    work_ += 256;
    if (work_ > kMaxExpandWork) {
      gave_up_ = true;
      return std::nullopt;
    }
    const int shift = 8 * (octets - 1);
    std::vector<Block> out;
    std::array<bool, 256> full{};
    std::array<std::vector<Block>, 256> partial;
    for (int v = 0; v < 256; ++v) {
      uint64_t s = states;
      for (char c : std::to_string(v)) s = glob_.Step(s, c);
      if (s == 0) continue;
      if (octets == 1) {
        full[v] = glob_.Accepts(s);
        continue;
      }
      s = glob_.Step(s, '.');
      if (s == 0) continue;
      Blocks child = Expand(octets - 1, s);
      if (!child) return std::nullopt;
      if (child->size() == 1 && (*child)[0].len == 0) {
        full[v] = true;
      } else {
        partial[v] = std::move(*child);
      }
    }
    for (int v = 0; v < 256;) {
      if (!full[v]) {
        for (const Block& b : partial[v]) {
          out.push_back({(static_cast<uint32_t>(v) << shift) | b.value, 8 + b.len});
        }
        ++v;
        continue;
      }
      int end = v;
      while (end < 256 && full[end]) ++end;
      // The run [v, end) as aligned power-of-two blocks.
      while (v < end) {
        int k = 0;
        while (k < 8 && v % (2 << k) == 0 && v + (2 << k) <= end) ++k;
        out.push_back({static_cast<uint32_t>(v) << shift, 8 - k});
        v += 1 << k;
      }
    }
    if (out.size() > kMaxCidrsPerPattern) return std::nullopt;
    return out;
  }

  const Glob& glob_;
  std::map<std::pair<int, uint64_t>, Blocks> memo_;
  size_t work_ = 0;
  bool gave_up_ = false;
};

// What one allow/deny pattern means as CIDRs.
struct PatternCidrs {
  // Not a pattern rinetd takes (bad characters, missing): the reason. Then
  // nothing else is set.
  std::string bad;
  std::vector<Prefix> prefixes;
  // Whether `prefixes` holds exactly the IPv4 (IPv6) clients the pattern
  // matches; when not, why.
  bool v4_exact = true;
  bool v6_exact = true;
  std::string v4_why;
  std::string v6_why;
  // A remark worth a problem although the translation is exact.
  std::string remark;
};

bool IsPatternChar(char c) {
  return absl::ascii_isxdigit(c) || c == '.' || c == ':' || c == '*' || c == '?';
}

// "fe80:*", "2001:db8:*": whole leading groups, each written as the address
// text writes it (lowercase, no leading zero, not zero), then ":*". Such text
// starts every address with those groups and no other, so it is a prefix.
std::optional<Prefix> Ipv6GroupPrefix(absl::string_view pattern) {
  if (!absl::ConsumeSuffix(&pattern, ":*") || pattern.empty()) return std::nullopt;
  std::vector<absl::string_view> groups = absl::StrSplit(pattern, ':');
  if (groups.size() > 7) return std::nullopt;
  Prefix p;
  p.v6 = true;
  p.len = static_cast<int>(16 * groups.size());
  for (size_t i = 0; i < groups.size(); ++i) {
    absl::string_view g = groups[i];
    if (g.empty() || g.size() > 4 || g[0] == '0') return std::nullopt;
    uint32_t value = 0;
    for (char c : g) {
      if (!absl::ascii_isdigit(c) && !(c >= 'a' && c <= 'f')) return std::nullopt;
      value = value * 16 + static_cast<uint32_t>(absl::ascii_isdigit(c) ? c - '0' : c - 'a' + 10);
    }
    p.addr[2 * i] = static_cast<uint8_t>(value >> 8);
    p.addr[2 * i + 1] = static_cast<uint8_t>(value);
  }
  return p;
}

PatternCidrs TranslatePattern(absl::string_view pattern) {
  PatternCidrs r;
  if (pattern.size() > kMaxPatternLength) {
    r.bad = absl::StrCat("pattern longer than ", kMaxPatternLength, " characters");
    return r;
  }
  for (char c : pattern) {
    if (!IsPatternChar(c)) {
      r.bad = "a pattern holds only digits, '.', '*' and '?' (and hex digits and ':' for IPv6)";
      return r;
    }
  }
  const bool wildcard = pattern.find_first_of("*?") != absl::string_view::npos;
  if (pattern.find_first_not_of('*') == absl::string_view::npos) {
    r.prefixes = {Prefix::AllV4(), Prefix::AllV6()};
    return r;
  }
  const bool ipv6_form = std::any_of(pattern.begin(), pattern.end(),
                                     [](char c) { return c == ':' || absl::ascii_isalpha(c); });
  if (!ipv6_form) {
    Glob glob(pattern);
    Ipv4Expander expander(glob);
    if (auto v4 = expander.Run()) {
      r.prefixes = std::move(*v4);
    } else {
      r.v4_exact = false;
      r.v4_why = expander.gave_up()
                     ? "too complex to turn into CIDRs"
                     : absl::StrCat("needs more than ", kMaxCidrsPerPattern, " CIDRs");
    }
    // IPv6 address text has no dots, so only a dotless wildcard pattern can
    // match one ("1*" matches 1::5), and those matches have no CIDR form.
    if (wildcard && pattern.find('.') == absl::string_view::npos) {
      r.v6_exact = false;
      r.v6_why = "may match IPv6 client addresses too, which have no CIDR form";
    }
    if (r.prefixes.empty() && r.v4_exact && r.v6_exact) r.remark = "matches no client address";
    return r;
  }
  // IPv6: rinetd compares with the text getnameinfo() writes (lowercase,
  // compressed); IPv4 client text has neither letters nor ':'.
  if (std::any_of(pattern.begin(), pattern.end(), [](char c) { return absl::ascii_isupper(c); })) {
    r.remark = "matches no client address (rinetd compares with lowercase address text)";
    return r;
  }
  if (!wildcard) {
    in6_addr a;
    char canonical[INET6_ADDRSTRLEN] = {0};
    const std::string text(pattern);
    if (inet_pton(AF_INET6, text.c_str(), &a) == 1 &&
        inet_ntop(AF_INET6, &a, canonical, sizeof(canonical)) != nullptr) {
      if (text != canonical) {
        r.remark = absl::StrCat(
            "matches no client address (rinetd compares with the address "
            "text, written ",
            canonical, ")");
        return r;
      }
      Prefix p;
      if (IN6_IS_ADDR_V4MAPPED(&a)) {
        // ferry sees an IPv4-mapped client as the IPv4 address.
        std::memcpy(p.addr.data(), &a.s6_addr[12], 4);
        p.len = 32;
      } else {
        p.v6 = true;
        std::memcpy(p.addr.data(), &a.s6_addr[0], 16);
        p.len = 128;
      }
      r.prefixes.push_back(p);
      return r;
    }
    r.remark = "matches no client address";
    return r;
  }
  if (auto p = Ipv6GroupPrefix(pattern)) {
    r.prefixes.push_back(*p);
    return r;
  }
  r.v6_exact = false;
  r.v6_why = "has no CIDR form";
  return r;
}

// ---------------------------------------------------------------------------
// The parsed file.

// One allow or deny line.
struct PatternLine {
  int line = 0;
  bool allow = false;
  std::string pattern;
  PatternCidrs cidrs;

  std::string Source() const {
    return absl::StrCat("line ", line, ": ", allow ? "allow " : "deny ", CommentText(pattern));
  }
};

// A CIDR of a rule's allow or deny list, with where it comes from.
struct AclEntry {
  Prefix prefix;
  std::string source;
};

// One forwarding rule line (rinetd counts it as a rule even when ferry
// cannot take it; its allow/deny lines belong to it either way).
struct Forward {
  int line = 0;
  std::string text;
  // Why the rule is not written; empty = written.
  std::string left_out;
  std::string listen;
  std::string target;
  uint16_t bind_port = 0;
  // Which client families the listener can see.
  bool may_v4 = true;
  bool may_v6 = true;
  std::vector<std::string> source_addresses;
  std::vector<std::string> notes;
  std::vector<PatternLine> patterns;
  // Filled by Finish().
  std::vector<AclEntry> allow;
  std::vector<AclEntry> deny;
  std::string acl_note;
};

// An address as rinetd takes it (IPv4, IPv6 bare or in brackets, "0", a host
// name), ready for HOST:PORT.
struct Host {
  std::string host;
  bool v6 = false;
  bool may_v4 = true;
  bool may_v6 = true;
};

std::optional<Host> ParseHost(absl::string_view text, std::string* error) {
  absl::string_view h = text;
  if (absl::StartsWith(h, "[") && absl::EndsWith(h, "]")) h = h.substr(1, h.size() - 2);
  Host out;
  if (h == "0") h = "0.0.0.0";  // rinetd's grammar takes a bare 0 for "any"
  const std::string s(h);
  if (s.find(':') != std::string::npos) {
    in6_addr a;
    if (inet_pton(AF_INET6, s.c_str(), &a) != 1) {
      *error = absl::StrCat("bad IPv6 address ", Quoted(CommentText(text)));
      return std::nullopt;
    }
    out.host = s;
    out.v6 = true;
    // [::] takes IPv4 clients too (as mapped addresses); a specific IPv6
    // address only IPv6 ones, unless it is IPv4-mapped.
    out.may_v4 = IN6_IS_ADDR_UNSPECIFIED(&a) || IN6_IS_ADDR_V4MAPPED(&a);
    out.may_v6 = !IN6_IS_ADDR_V4MAPPED(&a);
    return out;
  }
  if (!s.empty() && s.find_first_not_of("0123456789.") == std::string::npos) {
    in_addr a;
    if (inet_pton(AF_INET, s.c_str(), &a) != 1) {
      *error = absl::StrCat("bad IPv4 address ", Quoted(CommentText(text)));
      return std::nullopt;
    }
    out.host = s;
    out.may_v6 = false;
    return out;
  }
  const bool name_chars = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_';
  });
  if (!name_chars || s.front() == '-' || s.front() == '.' || s.size() > 253) {
    *error = absl::StrCat("bad address ", Quoted(CommentText(text)),
                          " (an IPv4 or IPv6 address, or a host name)");
    return std::nullopt;
  }
  out.host = s;  // a name may resolve to both families
  return out;
}

std::string HostPortText(const Host& h, uint16_t port) {
  return h.v6 ? absl::StrCat("[", h.host, "]:", port) : absl::StrCat(h.host, ":", port);
}

// A rinetd port: "80", "http", "53/udp", "22/tcp".
struct Port {
  uint16_t port = 0;
  bool udp = false;
};

std::optional<Port> ParsePort(absl::string_view text, absl::string_view which, std::string* error) {
  Port out;
  absl::string_view p = text;
  if (size_t slash = p.find('/'); slash != absl::string_view::npos) {
    absl::string_view proto = p.substr(slash + 1);
    p = p.substr(0, slash);
    if (proto == "udp") {
      out.udp = true;
    } else if (proto != "tcp") {
      *error = absl::StrCat(which, " ", Quoted(CommentText(text)), ": protocol is tcp or udp");
      return std::nullopt;
    }
  }
  if (auto n = ResolveServicePort(p)) {
    out.port = *n;
    return out;
  }
  if (AllDigits(p)) {
    *error = absl::StrCat(which, " ", CommentText(p), " out of range (1-65535)");
  } else {
    *error = absl::StrCat(which, " ", Quoted(CommentText(p)),
                          ": unknown service name; write the port number");
  }
  return std::nullopt;
}

// The keywords rinetd and its forks know.
constexpr absl::string_view kKeywords[] = {"allow",      "deny",        "logfile",
                                           "logcommon",  "pidlogfile",  "pidfile",
                                           "buffersize", "dns-refresh", "include"};

bool TakesFileName(absl::string_view keyword) {
  return keyword == "logfile" || keyword == "pidlogfile" || keyword == "pidfile" ||
         keyword == "include";
}

// The argument of "logfile PATH" (and pidlogfile, pidfile, include): a
// "quoted name" or a run of non-blanks, which may hold '#'; then only blanks
// and a comment.
std::optional<std::string> ParseFileName(absl::string_view rest, std::string* error) {
  rest = absl::StripLeadingAsciiWhitespace(rest);
  std::string name;
  absl::string_view after;
  if (absl::ConsumePrefix(&rest, "\"")) {
    size_t close = rest.find('"');
    if (close == absl::string_view::npos) {
      *error = "missing closing '\"' in the file name";
      return std::nullopt;
    }
    name = std::string(rest.substr(0, close));
    after = rest.substr(close + 1);
  } else {
    size_t end = rest.find_first_of(kBlanks);
    name = std::string(rest.substr(0, end));
    after = end == absl::string_view::npos ? absl::string_view() : rest.substr(end);
  }
  after = absl::StripLeadingAsciiWhitespace(after);
  if (!after.empty() && after[0] != '#') {
    *error = absl::StrCat("unexpected ", Quoted(CommentText(after)), " after the file name");
    return std::nullopt;
  }
  if (name.empty()) {
    *error = "needs a file name";
    return std::nullopt;
  }
  if (HasControl(name) || !IsValidUtf8(name)) {
    *error = "the file name has control characters or is not UTF-8";
    return std::nullopt;
  }
  return name;
}

// Splits a forwarding rule into its fields and the text of its "[...]"
// options (after the "["). An address field may itself be "[IPv6]"; the
// options may follow the last field without a blank ("80[timeout=5]").
// Text after the fourth field that is not an option list lands in `options`
// with `has_options` false.
void SplitForward(absl::string_view body, std::vector<absl::string_view>* fields,
                  absl::string_view* options, bool* has_options) {
  size_t i = 0;
  auto skip_blanks = [&] {
    while (i < body.size() && (body[i] == ' ' || body[i] == '\t')) ++i;
  };
  for (;;) {
    skip_blanks();
    if (i >= body.size()) return;
    if (fields->size() == 4) break;
    const size_t start = i;
    const bool address = fields->size() == 0 || fields->size() == 2;
    if (address && body[i] == '[') {
      while (i < body.size() && body[i] != ']') ++i;
      if (i < body.size()) ++i;
    }
    while (i < body.size() && body[i] != ' ' && body[i] != '\t' && body[i] != '[') ++i;
    if (i == start) break;  // a '[' where a port belongs
    fields->push_back(body.substr(start, i - start));
  }
  *options = absl::StripAsciiWhitespace(body.substr(i));
  *has_options = fields->size() == 4 && absl::ConsumePrefix(options, "[");
}

class Importer {
 public:
  RinetdImport Run(absl::string_view text, absl::string_view source_name) {
    int number = 0;
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      if (static_cast<size_t>(++number) > kMaxLines) {
        GiveUp(absl::StrCat("more than ", kMaxLines, " lines"));
        break;
      }
      absl::ConsumeSuffix(&line, "\r");
      ParseLine(number, line);
    }
    Finish();
    return Write(source_name);
  }

 private:
  // Input too large to translate in reasonable time: no rule is written.
  void GiveUp(const std::string& why) {
    if (!gave_up_.empty()) return;
    gave_up_ = why;
    Problem(0, absl::StrCat(why, "; nothing translated"));
  }

  void Problem(int line, std::string message) {
    if (!reported_.insert({line, message}).second) return;
    problems_.push_back({line, std::move(message)});
  }

  void ParseLine(int number, absl::string_view raw) {
    absl::string_view line = absl::StripAsciiWhitespace(raw);
    if (line.empty() || line[0] == '#') return;
    const std::string quoted_line = CommentText(line);
    absl::string_view first = line.substr(0, line.find_first_of(" \t#"));
    std::string keyword;
    for (absl::string_view k : kKeywords) {
      if (first == k) keyword = std::string(k);
      if (keyword.empty() && absl::EqualsIgnoreCase(first, k)) {
        Problem(number, absl::StrCat(Quoted(CommentText(first)),
                                     ": rinetd keywords are lowercase; read as ", Quoted(k)));
        keyword = std::string(k);
      }
    }
    absl::string_view rest = line.substr(first.size());
    if (TakesFileName(keyword)) {
      std::string error;
      auto name = ParseFileName(rest, &error);
      if (!name) {
        Problem(number, absl::StrCat(keyword, ": ", error));
        return;
      }
      FileDirective(number, keyword, *name);
      return;
    }
    rest = rest.substr(0, rest.find('#'));
    std::vector<absl::string_view> args =
        absl::StrSplit(rest, absl::ByAnyChar(kBlanks), absl::SkipEmpty());
    if (keyword == "allow" || keyword == "deny") {
      if (++pattern_lines_ > kMaxPatternLines) {
        GiveUp(absl::StrCat("more than ", kMaxPatternLines, " allow/deny lines"));
        return;
      }
      PatternLine p;
      p.line = number;
      p.allow = keyword == "allow";
      if (args.size() == 1) {
        p.pattern = std::string(args[0]);
        auto cached = translated_.find(p.pattern);
        if (cached == translated_.end()) {
          cached = translated_.emplace(p.pattern, TranslatePattern(p.pattern)).first;
        }
        p.cidrs = cached->second;
      } else {
        p.pattern = std::string(absl::StripAsciiWhitespace(rest));
        p.cidrs.bad = "needs exactly one pattern";
      }
      if (!p.cidrs.bad.empty()) {
        // An allow that matches nobody only narrows; a deny cannot be dropped.
        Problem(number, absl::StrCat(keyword, " ", Quoted(CommentText(p.pattern)), ": ",
                                     p.cidrs.bad, p.allow ? "; read as matching no client" : ""));
      } else if (!p.cidrs.remark.empty()) {
        Problem(number,
                absl::StrCat(keyword, " ", Quoted(CommentText(p.pattern)), ": ", p.cidrs.remark));
      }
      if (rules_.empty()) {
        global_.push_back(std::move(p));
      } else {
        rules_.back().patterns.push_back(std::move(p));
      }
      return;
    }
    if (keyword == "logcommon") {
      if (!args.empty()) Problem(number, "logcommon takes no argument");
      logcommon_ = true;
      logcommon_line_ = number;
      return;
    }
    if (keyword == "buffersize") {
      notes_.push_back({number, absl::StrCat("line ", number, ": ", quoted_line,
                                             " -- not needed: ferry sizes its buffers itself")});
      return;
    }
    if (keyword == "dns-refresh") {
      notes_.push_back({number, absl::StrCat("line ", number, ": ", quoted_line,
                                             " -- not needed: ferry re-resolves target host "
                                             "names every resolve_interval (default 5s)")});
      return;
    }
    ParseForward(number, line, quoted_line);
  }

  void FileDirective(int number, const std::string& keyword, const std::string& name) {
    if (keyword == "logfile") {
      log_path_ = name;
      log_line_ = number;
      return;
    }
    if (keyword == "include") {
      Problem(number, absl::StrCat("include ", Quoted(CommentText(name)),
                                   " is not followed: import the included files too and merge "
                                   "their rules (their allow/deny lines may apply to rules here)"));
      return;
    }
    notes_.push_back({number, absl::StrCat("line ", number, ": ", keyword, " ", CommentText(name),
                                           " -- not needed: ferry runs in the foreground (the "
                                           "service manager knows its pid)")});
  }

  void ParseForward(int number, absl::string_view line, const std::string& quoted_line) {
    absl::string_view body = line.substr(0, line.find('#'));
    std::vector<absl::string_view> f;
    absl::string_view options;
    bool has_options = false;
    SplitForward(body, &f, &options, &has_options);
    if (f.size() != 4 || (!options.empty() && !has_options)) {
      // Not counted as a rule: allow/deny lines after it keep the scope they
      // had (the previous rule, or global), which can only narrow access.
      Problem(number, absl::StrCat("cannot read ", Quoted(quoted_line),
                                   ": expected BINDADDRESS BINDPORT CONNECTADDRESS CONNECTPORT "
                                   "[OPTIONS] or a keyword (allow, deny, logfile, logcommon, "
                                   "pidlogfile)"));
      return;
    }
    Forward r;
    r.line = number;
    r.text = quoted_line;
    std::vector<std::string> errors;
    std::string error;
    std::optional<Host> bind = ParseHost(f[0], &error);
    if (!bind) errors.push_back("bind address: " + error);
    std::optional<Port> bind_port = ParsePort(f[1], "bind port", &error);
    if (!bind_port) errors.push_back(error);
    std::optional<Host> connect = ParseHost(f[2], &error);
    if (!connect) errors.push_back("connect address: " + error);
    std::optional<Port> connect_port = ParsePort(f[3], "connect port", &error);
    if (!connect_port) errors.push_back(error);
    if (has_options) ParseOptions(number, options, &r, &errors);
    if (errors.empty() && (bind_port->udp || connect_port->udp)) {
      errors.push_back(absl::StrCat("UDP forwarding (", CommentText(bind_port->udp ? f[1] : f[3]),
                                    ") is not supported by ferry, which relays TCP"));
    }
    if (errors.empty()) {
      r.bind_port = bind_port->port;
      r.listen = HostPortText(*bind, bind_port->port);
      r.target = HostPortText(*connect, connect_port->port);
      r.may_v4 = bind->may_v4;
      r.may_v6 = bind->may_v6;
      for (const std::string* hp : {&r.listen, &r.target}) {
        if (auto parsed = net::ParseHostPort(*hp); !parsed.ok()) {
          errors.push_back(std::string(parsed.status().message()));
        }
      }
    }
    if (errors.empty()) {
      for (const Forward& other : rules_) {
        if (other.left_out.empty() && other.listen == r.listen) {
          errors.push_back(absl::StrCat("listens on ", r.listen, " like the rule on line ",
                                        other.line, ", which rinetd binds first"));
          break;
        }
      }
    }
    if (!errors.empty()) {
      r.left_out = absl::StrJoin(errors, "; ");
      Problem(number, absl::StrCat(r.left_out, "; rule left out"));
    }
    rules_.push_back(std::move(r));
  }

  // "[timeout=N, src=ADDR]": the text inside the brackets, with the "]".
  void ParseOptions(int number, absl::string_view options, Forward* r,
                    std::vector<std::string>* errors) {
    if (!absl::ConsumeSuffix(&options, "]") ||
        options.find_first_of("[]") != absl::string_view::npos) {
      errors->push_back("options must be one [key=value, ...] list at the end of the line");
      return;
    }
    for (absl::string_view option : absl::StrSplit(options, ',')) {
      option = absl::StripAsciiWhitespace(option);
      std::pair<absl::string_view, absl::string_view> kv =
          absl::StrSplit(option, absl::MaxSplits('=', 1));
      absl::string_view key = absl::StripAsciiWhitespace(kv.first);
      absl::string_view value = absl::StripAsciiWhitespace(kv.second);
      const std::string shown = CommentText(option);
      if (key == "timeout" && AllDigits(value)) {
        r->notes.push_back(
            absl::StrCat("option ", shown, " -- not needed: rinetd uses it for UDP only"));
      } else if (key == "src" && !value.empty()) {
        std::string error;
        std::optional<Host> src = ParseHost(value, &error);
        if (!src) {
          Problem(number, absl::StrCat("option src: ", error, "; not translated"));
        } else if (IsImplemented("rules[].source_addresses")) {
          r->source_addresses.push_back(src->host);
        } else {
          Problem(number, absl::StrCat("option ", shown,
                                       " not translated: this build has no "
                                       "rules[].source_addresses; connections leave from the "
                                       "kernel's choice of address"));
        }
      } else if (option.empty()) {
        Problem(number, "empty option in [...]");
      } else {
        Problem(number, absl::StrCat("option ", Quoted(shown),
                                     " not translated (rinetd knows timeout=N and src=ADDR)"));
      }
    }
  }

  // Resolves every written rule's allow and deny lists.
  void Finish() {
    size_t global_cost = 0, cost = 0;
    for (const PatternLine& p : global_) global_cost += 1 + p.cidrs.prefixes.size();
    for (const Forward& r : rules_) {
      if (!r.left_out.empty()) continue;
      cost += global_cost;
      for (const PatternLine& p : r.patterns) cost += 1 + p.cidrs.prefixes.size();
    }
    if (cost > kMaxCidrsWritten) {
      GiveUp(absl::StrCat("the rules would hold more than ", kMaxCidrsWritten,
                          " CIDRs (global patterns repeat in every rule)"));
    }
    if (!gave_up_.empty()) {
      for (Forward& r : rules_) {
        if (r.left_out.empty()) r.left_out = gave_up_;
      }
      return;
    }
    for (Forward& r : rules_) {
      if (!r.left_out.empty()) continue;
      std::vector<const PatternLine*> global_allow, rule_allow, deny;
      for (const PatternLine& p : global_) (p.allow ? global_allow : deny).push_back(&p);
      for (const PatternLine& p : r.patterns) (p.allow ? rule_allow : deny).push_back(&p);
      // Deny lines first: one that cannot be kept leaves the rule out.
      for (const PatternLine* p : deny) {
        std::string why = DenyProblem(r, *p);
        if (why.empty()) continue;
        Problem(p->line, absl::StrCat("deny ", Quoted(CommentText(p->pattern)), ": ", why));
        r.left_out =
            absl::StrCat("its deny pattern on line ", p->line, " (", CommentText(p->pattern),
                         ") has no exact CIDR form, and without it ferry would admit "
                         "clients rinetd refuses");
        Problem(r.line, absl::StrCat("rule left out: ", r.left_out));
        unsafe_ = true;
        break;
      }
      if (!r.left_out.empty()) continue;
      for (const PatternLine* p : deny) {
        for (const Prefix& prefix : p->cidrs.prefixes) r.deny.push_back({prefix, p->Source()});
      }
      r.deny = Minimal(std::move(r.deny));
      std::optional<std::vector<AclEntry>> g = AllowList(r, global_allow);
      std::optional<std::vector<AclEntry>> own = AllowList(r, rule_allow);
      if (g && own) {
        r.allow = Minimal(Intersect(*g, *own));
      } else if (g || own) {
        r.allow = Minimal(g ? std::move(*g) : std::move(*own));
      }
      if ((g || own) && r.allow.empty()) {
        r.acl_note = g && own ? "no client matches both the global allow patterns and the rule's"
                              : "no client matches the allow patterns";
        r.deny = {{Prefix::AllV4(), r.acl_note}, {Prefix::AllV6(), r.acl_note}};
      }
    }
  }

  // Why `p` (a deny) cannot be written for `r` exactly; empty when it can.
  static std::string DenyProblem(const Forward& r, const PatternLine& p) {
    if (!p.cidrs.bad.empty()) return p.cidrs.bad;
    if (!p.cidrs.v4_exact && r.may_v4) return p.cidrs.v4_why;
    if (!p.cidrs.v6_exact && r.may_v6) return p.cidrs.v6_why;
    return "";
  }

  // The CIDRs of an allow list; nullopt when rinetd has no allow lines there
  // (everyone passes that check). A pattern without an exact form is left out
  // (so fewer clients pass), and said so.
  std::optional<std::vector<AclEntry>> AllowList(const Forward& r,
                                                 const std::vector<const PatternLine*>& lines) {
    if (lines.empty()) return std::nullopt;
    std::vector<AclEntry> out;
    for (const PatternLine* p : lines) {
      const PatternCidrs& c = p->cidrs;
      const std::string shown = Quoted(CommentText(p->pattern));
      if (!c.v4_exact && r.may_v4) {
        Problem(p->line, absl::StrCat("allow ", shown, ": ", c.v4_why,
                                      "; left out of the allow list, so clients only it admits "
                                      "are refused"));
      }
      if (!c.v6_exact && r.may_v6) {
        Problem(p->line, absl::StrCat("allow ", shown, ": ", c.v6_why,
                                      "; ferry refuses the IPv6 clients only it admits"));
      }
      for (const Prefix& prefix : c.prefixes) out.push_back({prefix, p->Source()});
    }
    return out;
  }

  // The entry of `entries` (by prefix) that holds `p`, strictly or not; null if none. Looks up
  // each shorter prefix of `p`, so lists of any length cost little.
  static const AclEntry* Container(const std::map<Prefix, const AclEntry*>& entries,
                                   const Prefix& p, bool strict) {
    for (int bits = 0; bits <= p.len - (strict ? 1 : 0); ++bits) {
      if (auto it = entries.find(p.Truncated(bits)); it != entries.end()) return it->second;
    }
    return nullptr;
  }

  static std::map<Prefix, const AclEntry*> Index(const std::vector<AclEntry>& entries) {
    std::map<Prefix, const AclEntry*> out;
    for (const AclEntry& e : entries) out.emplace(e.prefix, &e);  // the first of equals
    return out;
  }

  // The clients in both lists, as CIDRs: two prefixes overlap only when one
  // holds the other, and then the overlap is the smaller one.
  static std::vector<AclEntry> Intersect(const std::vector<AclEntry>& a,
                                         const std::vector<AclEntry>& b) {
    const auto a_index = Index(a), b_index = Index(b);
    std::vector<AclEntry> out;
    for (const AclEntry& x : a) {
      if (const AclEntry* y = Container(b_index, x.prefix, /*strict=*/false)) {
        out.push_back({x.prefix, absl::StrCat(x.source, " & ", y->source)});
      }
    }
    for (const AclEntry& y : b) {
      if (const AclEntry* x = Container(a_index, y.prefix, /*strict=*/true)) {
        out.push_back({y.prefix, absl::StrCat(y.source, " & ", x->source)});
      }
    }
    return out;
  }

  // Drops entries another entry already covers (the first of equals stays).
  static std::vector<AclEntry> Minimal(std::vector<AclEntry> in) {
    const auto index = Index(in);
    std::set<Prefix> written;
    std::vector<AclEntry> out;
    for (AclEntry& e : in) {
      if (Container(index, e.prefix, /*strict=*/true) != nullptr) continue;
      if (!written.insert(e.prefix).second) continue;
      out.push_back(std::move(e));
    }
    return out;
  }

  static void WriteList(const char* key, const std::vector<AclEntry>& entries, std::string* y) {
    if (entries.empty()) return;
    absl::StrAppend(y, "    ", key, ":\n");
    for (const AclEntry& e : entries) {
      absl::StrAppend(y, "      - ", YamlString(e.prefix.ToString()), "  # ", e.source, "\n");
    }
  }

  RinetdImport Write(absl::string_view source_name) {
    RinetdImport out;
    std::string& y = out.yaml;
    absl::StrAppend(&y, "# ferry config imported by `ferry import rinetd` from ",
                    CommentText(source_name), ".\n",
                    "# rinetd admits a client that matches its global allow patterns and the "
                    "rule's own\n",
                    "# (each when present) and no deny pattern: each rule's allow list holds the "
                    "clients in\n",
                    "# both allow lists, its deny list both deny lists; patterns became the CIDRs "
                    "they match.\n");
    std::string access_log;
    if (!log_path_.empty()) {
      const char* format = logcommon_ ? "clf" : "text";
      access_log = absl::StrCat("{format: ", format, ", path: ", YamlString(log_path_), "}");
      notes_.push_back(
          {log_line_,
           absl::StrCat(
               "line ", log_line_, ": logfile ", CommentText(log_path_),
               " -- every rule logs there (",
               logcommon_ ? "format clf: rinetd's logcommon)"
                          : "format text: key=value lines, not rinetd's tab-separated columns)")});
    } else if (logcommon_) {
      notes_.push_back({logcommon_line_, absl::StrCat("line ", logcommon_line_,
                                                      ": logcommon without logfile: rinetd logs "
                                                      "nothing, and neither does this config")});
    }
    std::stable_sort(notes_.begin(), notes_.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& note : notes_) absl::StrAppend(&y, "# ", note.second, "\n");

    std::set<std::string> names;
    std::string rules;
    for (Forward& r : rules_) {
      absl::StrAppend(&rules, "  # line ", r.line, ": ", r.text, "\n");
      if (!r.left_out.empty()) {
        absl::StrAppend(&rules, "  #   left out: ", CommentText(r.left_out), "\n");
        ++out.rules_left_out;
        continue;
      }
      for (const std::string& note : r.notes) absl::StrAppend(&rules, "  #   ", note, "\n");
      // port-80, then port-80-2, port-80-3 for more rules on port 80.
      const std::string base = absl::StrCat("port-", r.bind_port);
      std::string name = base;
      for (int n = 2; !names.insert(name).second; ++n) name = absl::StrCat(base, "-", n);
      absl::StrAppend(&rules, "  - name: ", name, "\n", "    listen: ", YamlString(r.listen), "\n",
                      "    targets: [", YamlString(r.target), "]\n");
      WriteList("allow", r.allow, &rules);
      WriteList("deny", r.deny, &rules);
      if (!r.source_addresses.empty()) {
        std::vector<std::string> quoted;
        for (const std::string& s : r.source_addresses) quoted.push_back(YamlString(s));
        absl::StrAppend(&rules, "    source_addresses: [", absl::StrJoin(quoted, ", "), "]\n");
      }
      if (!access_log.empty()) absl::StrAppend(&rules, "    access_log: ", access_log, "\n");
      ++out.rules_written;
    }
    absl::StrAppend(&y, out.rules_written == 0 ? "rules: []\n" : "rules:\n", rules);

    if (rules_.empty() && gave_up_.empty()) {
      problems_.push_back({0, "no forwarding rules to translate"});
    }
    std::stable_sort(problems_.begin(), problems_.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    if (!problems_.empty()) {
      absl::StrAppend(&y, "# Not translated (also reported by ferry import):\n");
    }
    for (auto& [line, message] : problems_) {
      std::string path = line == 0 ? "" : absl::StrCat("line ", line);
      absl::StrAppend(&y, "#   ", path.empty() ? "" : path + ": ",
                      CommentText(message, std::string::npos), "\n");
      out.problems.push_back({std::move(path), std::move(message)});
    }
    out.unsafe = unsafe_;
    return out;
  }

  std::vector<PatternLine> global_;
  std::vector<Forward> rules_;
  std::vector<std::pair<int, std::string>> notes_;
  std::string log_path_;
  int log_line_ = 0;
  bool logcommon_ = false;
  int logcommon_line_ = 0;
  bool unsafe_ = false;
  std::vector<std::pair<int, std::string>> problems_;
  std::map<std::string, PatternCidrs> translated_;
  size_t pattern_lines_ = 0;
  std::string gave_up_;
  std::set<std::pair<int, std::string>> reported_;
};

}  // namespace

std::optional<uint16_t> ResolveServicePort(absl::string_view text) {
  if (AllDigits(text)) {
    uint32_t port = 0;
    for (char c : text) {
      port = port * 10 + static_cast<uint32_t>(c - '0');
      if (port > 65535) return std::nullopt;
    }
    if (port == 0) return std::nullopt;
    return static_cast<uint16_t>(port);
  }
  for (const auto& [name, port] : kServices) {
    if (text == name) return port;
  }
  // rinetd's grammar for a service name; nothing else goes to the lookup.
  const bool name =
      !text.empty() && text.size() <= 64 && (absl::ascii_isalpha(text[0]) || text[0] == '_') &&
      std::all_of(text.begin(), text.end(),
                  [](char c) { return absl::ascii_isalnum(c) || c == '-' || c == '_'; });
  if (!name) return std::nullopt;
  servent entry;
  servent* found = nullptr;
  char buf[4096];
  const std::string s(text);
  if (getservbyname_r(s.c_str(), "tcp", &entry, buf, sizeof(buf), &found) != 0 ||
      found == nullptr) {
    return std::nullopt;
  }
  const uint16_t port = ntohs(static_cast<uint16_t>(found->s_port));
  if (port == 0) return std::nullopt;
  return port;
}

RinetdImport ImportRinetd(absl::string_view text, absl::string_view source_name) {
  return Importer().Run(text, source_name);
}

}  // namespace ferry::config
