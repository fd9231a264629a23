#include "pkg/proxy/proxy_protocol.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ferry::proxy {
namespace {

using State = ProxyParse::State;

constexpr absl::string_view kV1Signature = "PROXY ";
constexpr uint8_t kV2Signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                      0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
constexpr size_t kV2FixedSize = 16;  // signature, version/command, family, length
constexpr size_t kV2UnixPathSize = 108;
constexpr size_t kMaxIpv4Text = 15;  // "255.255.255.255"
constexpr size_t kMaxIpv6Text = 45;  // "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"

constexpr uint8_t kV2Local = 0x0;
constexpr uint8_t kV2Proxy = 0x1;
constexpr uint8_t kV2Unspec = 0x00;
constexpr uint8_t kV2Tcp4 = 0x11;
constexpr uint8_t kV2Tcp6 = 0x21;
constexpr uint8_t kV2UnixStream = 0x31;

ProxyParse NeedMore() { return ProxyParse{}; }

ProxyParse Error(std::string message) {
  ProxyParse p;
  p.state = State::kError;
  p.error = std::move(message);
  return p;
}

ProxyParse Done(size_t consumed, ProxyHeader header) {
  ProxyParse p;
  p.state = State::kDone;
  p.consumed = consumed;
  p.header = std::move(header);
  return p;
}

// Quotes untrusted bytes for an error message: C escapes, at most 32 bytes.
std::string Quote(absl::string_view bytes) {
  constexpr size_t kMaxShown = 32;
  std::string shown = absl::CHexEscape(bytes.substr(0, kMaxShown));
  return absl::StrCat("\"", shown, bytes.size() > kMaxShown ? "...\"" : "\"");
}

ProxyParse NotAHeader(absl::string_view data) {
  return Error(
      absl::StrCat("no PROXY protocol header: connection starts with ", Quote(data.substr(0, 16))));
}

// ---- v1 ----------------------------------------------------------------------------------------

// Dotted-quad IPv4, exactly four decimal octets 0..255 without leading zeros. Written here rather
// than left to inet_pton so the rules do not depend on the libc.
bool ParseIpv4(absl::string_view s, in_addr* out) {
  uint8_t bytes[4];
  size_t i = 0;
  for (int octet = 0; octet < 4; ++octet) {
    if (octet > 0) {
      if (i >= s.size() || s[i] != '.') return false;
      ++i;
    }
    size_t start = i;
    unsigned value = 0;
    while (i < s.size() && i - start < 3 && s[i] >= '0' && s[i] <= '9') {
      value = value * 10 + static_cast<unsigned>(s[i] - '0');
      ++i;
    }
    if (i == start || (s[start] == '0' && i - start > 1) || value > 255) return false;
    bytes[octet] = static_cast<uint8_t>(value);
  }
  if (i != s.size()) return false;
  std::memcpy(&out->s_addr, bytes, 4);
  return true;
}

bool ParseIpv6(absl::string_view s, in6_addr* out) {
  char text[kMaxIpv6Text + 1];
  if (s.empty() || s.size() > kMaxIpv6Text) return false;
  std::memcpy(text, s.data(), s.size());
  text[s.size()] = '\0';
  return inet_pton(AF_INET6, text, out) == 1;
}

// True if some valid address of `family` starts with `prefix`. Rather than a grammar of prefixes,
// tries the few endings that close any prefix of a valid address: a prefix ending in a group or
// octet closes with "" or "::" (or the missing IPv4 octets), one ending in ':' with ":" or "0",
// one ending in '.' with the missing octets. If none parses, no longer text can either.
bool IsAddressPrefix(int family, absl::string_view prefix) {
  static constexpr absl::string_view kIpv4Endings[] = {"",     "0",     ".0",    "0.0",
                                                       ".0.0", "0.0.0", ".0.0.0"};
  static constexpr absl::string_view kIpv6Endings[] = {"",   "0",   ":",    "::",    "0::",   ":0",
                                                       ".0", "0.0", ".0.0", "0.0.0", ".0.0.0"};
  if (prefix.empty()) return true;
  size_t max = family == AF_INET ? kMaxIpv4Text : kMaxIpv6Text;
  if (prefix.size() > max) return false;
  char text[kMaxIpv6Text + 8];
  std::memcpy(text, prefix.data(), prefix.size());
  if (family == AF_INET) {
    for (absl::string_view ending : kIpv4Endings) {
      std::memcpy(text + prefix.size(), ending.data(), ending.size());
      in_addr unused;
      if (ParseIpv4(absl::string_view(text, prefix.size() + ending.size()), &unused)) return true;
    }
    return false;
  }
  for (absl::string_view ending : kIpv6Endings) {
    std::memcpy(text + prefix.size(), ending.data(), ending.size());
    text[prefix.size() + ending.size()] = '\0';
    in6_addr unused;
    if (inet_pton(AF_INET6, text, &unused) == 1) return true;
  }
  return false;
}

enum class PortCheck { kOk, kBad, kRange };

// Decimal 0..65535, no sign, no leading zero.
PortCheck ParsePort(absl::string_view s, uint16_t* out) {
  if (s.empty()) return PortCheck::kBad;
  uint32_t value = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return PortCheck::kBad;
  }
  if (s.size() > 1 && s[0] == '0') return PortCheck::kBad;
  if (s.size() > 5) return PortCheck::kRange;
  for (char c : s) value = value * 10 + static_cast<uint32_t>(c - '0');
  if (value > 65535) return PortCheck::kRange;
  *out = static_cast<uint16_t>(value);
  return PortCheck::kOk;
}

// The characters up to the next space or CR (or the end of `line`), from `pos`.
absl::string_view Token(absl::string_view line, size_t pos) {
  size_t end = pos;
  while (end < line.size() && line[end] != ' ' && line[end] != '\r') ++end;
  return line.substr(pos, end - pos);
}

struct V1Field {
  const char* name;
  bool is_port;
};
constexpr V1Field kV1Fields[] = {{"source address", false},
                                 {"destination address", false},
                                 {"source port", true},
                                 {"destination port", true}};

// Checks one field; with `complete` false, only that `token` can still grow into a valid one.
// Returns the error, or "" when fine.
std::string CheckV1Field(const V1Field& field, int family, absl::string_view token, bool complete,
                         net::Address* address_out, uint16_t* port_out) {
  if (field.is_port) {
    uint16_t port = 0;
    PortCheck check = token.empty() && !complete ? PortCheck::kOk : ParsePort(token, &port);
    if (check == PortCheck::kRange) {
      return absl::StrCat("v1 ", field.name, " ", Quote(token), " out of range");
    }
    if (check == PortCheck::kBad) return absl::StrCat("v1 bad ", field.name, " ", Quote(token));
    *port_out = port;
    return "";
  }
  const char* proto = family == AF_INET ? "TCP4" : "TCP6";
  bool ok;
  if (!complete) {
    ok = IsAddressPrefix(family, token);
  } else if (family == AF_INET) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    ok = ParseIpv4(token, &sin.sin_addr);
    if (ok)
      *address_out = net::Address::FromSockaddr(reinterpret_cast<sockaddr*>(&sin), sizeof(sin));
  } else {
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    ok = ParseIpv6(token, &sin6.sin6_addr);
    if (ok) {
      *address_out = net::Address::FromSockaddr(reinterpret_cast<sockaddr*>(&sin6), sizeof(sin6));
    }
  }
  if (!ok) return absl::StrCat("v1 bad ", proto, " ", field.name, " ", Quote(token));
  return "";
}

ProxyParse ParseV1(absl::string_view data) {
  // Only the first kMaxProxyV1 bytes can hold the header. Once that many have arrived, running
  // out of line is an error rather than a reason to wait.
  absl::string_view line = data.substr(0, kMaxProxyV1);
  const bool window_full = line.size() == kMaxProxyV1;
  auto out_of_bytes = [&]() {
    return window_full ? Error(absl::StrCat("v1 header without CRLF in ", kMaxProxyV1, " bytes"))
                       : NeedMore();
  };

  size_t pos = kV1Signature.size();
  absl::string_view proto = Token(line, pos);
  pos += proto.size();
  int family = 0;
  if (proto == "TCP4") {
    family = AF_INET;
  } else if (proto == "TCP6") {
    family = AF_INET6;
  } else if (proto != "UNKNOWN") {
    bool may_grow =
        pos == line.size() && (absl::string_view("TCP4").substr(0, proto.size()) == proto ||
                               absl::string_view("TCP6").substr(0, proto.size()) == proto ||
                               absl::string_view("UNKNOWN").substr(0, proto.size()) == proto);
    if (!may_grow) {
      if (proto.empty() && pos < line.size()) {
        return Error(line[pos] == ' ' ? "v1 extra space before the protocol"
                                      : "v1 header ends before the protocol");
      }
      return Error(
          absl::StrCat("v1 unknown protocol ", Quote(proto), " (want TCP4, TCP6 or UNKNOWN)"));
    }
  }
  if (pos == line.size()) return out_of_bytes();

  if (family == 0) {
    // UNKNOWN: the spec has the receiver ignore everything up to the CRLF.
    size_t crlf = line.find("\r\n", pos);
    if (crlf == absl::string_view::npos) return out_of_bytes();
    ProxyHeader header;
    header.version = ProxyVersion::kV1;
    header.local = true;
    return Done(crlf + 2, std::move(header));
  }

  ProxyHeader header;
  header.version = ProxyVersion::kV1;
  uint16_t ports[2] = {0, 0};
  for (size_t i = 0; i < 4; ++i) {
    const V1Field& field = kV1Fields[i];
    // A field starts after exactly one space.
    if (pos == line.size()) return out_of_bytes();
    if (line[pos] != ' ') return Error(absl::StrCat("v1 header ends before the ", field.name));
    ++pos;
    absl::string_view token = Token(line, pos);
    bool complete = pos + token.size() < line.size();
    if (token.empty() && complete) {
      return Error(line[pos] == ' ' ? absl::StrCat("v1 extra space before the ", field.name)
                                    : absl::StrCat("v1 header ends before the ", field.name));
    }
    net::Address* address = i == 0 ? &header.source : &header.destination;
    std::string error =
        CheckV1Field(field, family, token, complete, address, &ports[i == 3 ? 1 : 0]);
    if (!error.empty()) return Error(std::move(error));
    pos += token.size();
    if (!complete) return out_of_bytes();
  }
  if (line[pos] == ' ') return Error("v1 unexpected data after the destination port");
  // line[pos] is the CR that ended the last token.
  ++pos;
  if (pos == line.size()) return out_of_bytes();
  if (line[pos] != '\n') return Error("v1 CR not followed by LF");
  header.source.set_port(ports[0]);
  header.destination.set_port(ports[1]);
  return Done(pos + 1, std::move(header));
}

// ---- v2 ----------------------------------------------------------------------------------------

uint16_t ReadBe16(const uint8_t* p) {
  return static_cast<uint16_t>((static_cast<uint16_t>(p[0]) << 8) | p[1]);
}

// Decodes the address block of a PROXY command; `block` holds at least the family's size.
// Returns the error, or "" when fine.
std::string DecodeV2Addresses(uint8_t family, const uint8_t* block, ProxyHeader* header) {
  if (family == kV2Tcp4) {
    sockaddr_in src{}, dst{};
    src.sin_family = dst.sin_family = AF_INET;
    std::memcpy(&src.sin_addr, block, 4);
    std::memcpy(&dst.sin_addr, block + 4, 4);
    std::memcpy(&src.sin_port, block + 8, 2);  // both network order
    std::memcpy(&dst.sin_port, block + 10, 2);
    header->source = net::Address::FromSockaddr(reinterpret_cast<sockaddr*>(&src), sizeof(src));
    header->destination =
        net::Address::FromSockaddr(reinterpret_cast<sockaddr*>(&dst), sizeof(dst));
  } else if (family == kV2Tcp6) {
    sockaddr_in6 src{}, dst{};
    src.sin6_family = dst.sin6_family = AF_INET6;
    std::memcpy(&src.sin6_addr, block, 16);
    std::memcpy(&dst.sin6_addr, block + 16, 16);
    std::memcpy(&src.sin6_port, block + 32, 2);
    std::memcpy(&dst.sin6_port, block + 34, 2);
    header->source = net::Address::FromSockaddr(reinterpret_cast<sockaddr*>(&src), sizeof(src));
    header->destination =
        net::Address::FromSockaddr(reinterpret_cast<sockaddr*>(&dst), sizeof(dst));
  } else {  // kV2UnixStream
    const char* paths[2] = {reinterpret_cast<const char*>(block),
                            reinterpret_cast<const char*>(block + kV2UnixPathSize)};
    const char* names[2] = {"source", "destination"};
    net::Address* out[2] = {&header->source, &header->destination};
    for (int i = 0; i < 2; ++i) {
      const void* nul = std::memchr(paths[i], '\0', kV2UnixPathSize);
      if (nul == nullptr) {
        return absl::StrCat("v2 unix ", names[i], " path not NUL-terminated in ", kV2UnixPathSize,
                            " bytes");
      }
      *out[i] =
          net::Address::Unix(absl::string_view(paths[i], static_cast<const char*>(nul) - paths[i]));
    }
  }
  return "";
}

ProxyParse ParseV2(absl::Span<const uint8_t> data) {
  if (data.size() <= sizeof(kV2Signature)) return NeedMore();
  const uint8_t ver_cmd = data[12];
  if ((ver_cmd >> 4) != 2) {
    return Error(
        absl::StrFormat("v2 bad version %d in byte 0x%02x (want 2)", ver_cmd >> 4, ver_cmd));
  }
  const uint8_t command = ver_cmd & 0x0F;
  if (command != kV2Local && command != kV2Proxy) {
    return Error(absl::StrFormat("v2 unknown command 0x%x (want LOCAL 0x0 or PROXY 0x1)", command));
  }
  if (data.size() < 14) return NeedMore();
  const uint8_t family = data[13];
  // LOCAL ignores the family byte, as the spec says.
  size_t address_size = 0;
  const char* family_name = "";
  if (command == kV2Proxy) {
    switch (family) {
      case kV2Unspec:
        break;
      case kV2Tcp4:
        address_size = 12;
        family_name = "TCP4";
        break;
      case kV2Tcp6:
        address_size = 36;
        family_name = "TCP6";
        break;
      case kV2UnixStream:
        address_size = 2 * kV2UnixPathSize;
        family_name = "UNIX";
        break;
      default:
        if ((family & 0x0F) == 0x2 && (family >> 4) >= 1 && (family >> 4) <= 3) {
          return Error(
              absl::StrFormat("v2 transport is not TCP (family byte 0x%02x is datagram)", family));
        }
        return Error(
            absl::StrFormat("v2 unsupported address family/transport byte 0x%02x", family));
    }
  }
  if (data.size() < kV2FixedSize) return NeedMore();
  const size_t length = ReadBe16(&data[14]);
  const size_t total = kV2FixedSize + length;
  if (total > kMaxProxyHeader) {
    return Error(
        absl::StrCat("v2 header of ", total, " bytes exceeds the limit of ", kMaxProxyHeader));
  }
  ProxyHeader header;
  header.version = ProxyVersion::kV2;
  if (command == kV2Local || family == kV2Unspec) {
    if (data.size() < total) return NeedMore();
    header.local = true;
    return Done(total, std::move(header));
  }
  if (length < address_size) {
    return Error(absl::StrCat("v2 address block of ", length, " bytes is shorter than the ",
                              address_size, " a ", family_name, " address needs"));
  }
  if (length > address_size && length - address_size < 3) {
    return Error(absl::StrCat("v2 ", length - address_size, " bytes after the ", family_name,
                              " addresses are too short for a TLV (3-byte header)"));
  }
  if (family == kV2UnixStream && data.size() >= kV2FixedSize + kV2UnixPathSize &&
      std::memchr(&data[kV2FixedSize], '\0', kV2UnixPathSize) == nullptr) {
    // Checked before the destination path arrives: no later byte can fix it.
    return Error(
        absl::StrCat("v2 unix source path not NUL-terminated in ", kV2UnixPathSize, " bytes"));
  }
  if (data.size() < kV2FixedSize + address_size) return NeedMore();
  std::string error = DecodeV2Addresses(family, &data[kV2FixedSize], &header);
  if (!error.empty()) return Error(std::move(error));

  // TLVs: type (1), length (2, big endian), value. Walk the headers present so far.
  size_t offset = kV2FixedSize + address_size;
  while (offset < total) {
    if (offset + 3 > total) {
      return Error(absl::StrCat("v2 TLV at byte ", offset, " cut off by the header length (",
                                total - offset, " bytes left, a TLV header takes 3)"));
    }
    if (offset + 3 > data.size()) return NeedMore();
    const uint8_t type = data[offset];
    const size_t value_size = ReadBe16(&data[offset + 1]);
    if (offset + 3 + value_size > total) {
      return Error(absl::StrFormat(
          "v2 TLV type 0x%02x at byte %d with %d value bytes overruns the header end at byte %d",
          type, offset, value_size, total));
    }
    offset += 3 + value_size;
  }
  if (data.size() < total) return NeedMore();
  return Done(total, std::move(header));
}

// ---- writing -----------------------------------------------------------------------------------

// `a` as an IPv6 address, IPv4 mapped into ::ffff:0:0/96. `a` is IP.
in6_addr AsIpv6(const net::Address& a) {
  in6_addr out{};
  if (a.family() == AF_INET6) {
    return reinterpret_cast<const sockaddr_in6*>(a.sa())->sin6_addr;
  }
  out.s6_addr[10] = 0xFF;
  out.s6_addr[11] = 0xFF;
  std::memcpy(&out.s6_addr[12], &reinterpret_cast<const sockaddr_in*>(a.sa())->sin_addr, 4);
  return out;
}

void AppendBe16(uint16_t v, std::string* out) {
  out->push_back(static_cast<char>(v >> 8));
  out->push_back(static_cast<char>(v & 0xFF));
}

void AppendBytes(const void* p, size_t n, std::string* out) {
  out->append(static_cast<const char*>(p), n);
}

void AppendV2Start(uint8_t command, uint8_t family, uint16_t length, std::string* out) {
  AppendBytes(kV2Signature, sizeof(kV2Signature), out);
  out->push_back(static_cast<char>(0x20 | command));
  out->push_back(static_cast<char>(family));
  AppendBe16(length, out);
}

void AppendUnixPath(const net::Address& a, std::string* out) {
  char path[kV2UnixPathSize] = {};
  std::string text = a.unix_path();
  std::memcpy(path, text.data(), std::min(text.size(), kV2UnixPathSize - 1));
  AppendBytes(path, sizeof(path), out);
}

}  // namespace

ProxyParse ParseProxyHeader(absl::Span<const uint8_t> data) {
  absl::string_view text(reinterpret_cast<const char*>(data.data()), data.size());
  if (data.empty()) return NeedMore();
  if (data[0] == kV2Signature[0]) {
    size_t n = std::min(data.size(), sizeof(kV2Signature));
    if (std::memcmp(data.data(), kV2Signature, n) != 0) return NotAHeader(text);
    return ParseV2(data);
  }
  size_t n = std::min(text.size(), kV1Signature.size());
  if (text.substr(0, n) != kV1Signature.substr(0, n)) return NotAHeader(text);
  if (n < kV1Signature.size()) return NeedMore();
  return ParseV1(text);
}

void AppendProxyHeader(ProxyVersion version, const net::Address& source,
                       const net::Address& destination, std::string* out) {
  const net::Address src = source.Unmapped();
  const net::Address dst = destination.Unmapped();
  const bool both_ip = src.is_ip() && dst.is_ip();
  const bool ipv4 = both_ip && src.family() == AF_INET && dst.family() == AF_INET;

  if (version == ProxyVersion::kV1) {
    if (!both_ip) {
      out->append("PROXY UNKNOWN\r\n");
      return;
    }
    char src_text[INET6_ADDRSTRLEN] = {};
    char dst_text[INET6_ADDRSTRLEN] = {};
    if (ipv4) {
      inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(src.sa())->sin_addr, src_text,
                sizeof(src_text));
      inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(dst.sa())->sin_addr, dst_text,
                sizeof(dst_text));
    } else {
      in6_addr s6 = AsIpv6(src), d6 = AsIpv6(dst);
      inet_ntop(AF_INET6, &s6, src_text, sizeof(src_text));
      inet_ntop(AF_INET6, &d6, dst_text, sizeof(dst_text));
    }
    absl::StrAppend(out, "PROXY ", ipv4 ? "TCP4 " : "TCP6 ", src_text, " ", dst_text, " ",
                    src.port(), " ", dst.port(), "\r\n");
    return;
  }

  if (ipv4) {
    AppendV2Start(kV2Proxy, kV2Tcp4, 12, out);
    AppendBytes(&reinterpret_cast<const sockaddr_in*>(src.sa())->sin_addr, 4, out);
    AppendBytes(&reinterpret_cast<const sockaddr_in*>(dst.sa())->sin_addr, 4, out);
    AppendBe16(src.port(), out);
    AppendBe16(dst.port(), out);
  } else if (both_ip) {
    AppendV2Start(kV2Proxy, kV2Tcp6, 36, out);
    in6_addr s6 = AsIpv6(src), d6 = AsIpv6(dst);
    AppendBytes(&s6, 16, out);
    AppendBytes(&d6, 16, out);
    AppendBe16(src.port(), out);
    AppendBe16(dst.port(), out);
  } else if (src.is_unix() && dst.is_unix()) {
    AppendV2Start(kV2Proxy, kV2UnixStream, 2 * kV2UnixPathSize, out);
    AppendUnixPath(src, out);
    AppendUnixPath(dst, out);
  } else {
    AppendV2Start(kV2Local, kV2Unspec, 0, out);
  }
}

}  // namespace ferry::proxy
