#include "pkg/net/cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace ferry::net {

absl::StatusOr<Cidr> Cidr::Parse(absl::string_view text) {
  Cidr c;
  absl::string_view addr = text;
  int bits = -1;
  if (size_t slash = text.find('/'); slash != absl::string_view::npos) {
    addr = text.substr(0, slash);
    absl::string_view len = text.substr(slash + 1);
    if (!absl::SimpleAtoi(len, &bits) || bits < 0) {
      return absl::InvalidArgumentError(absl::StrCat("bad prefix length \"", len, "\""));
    }
  }
  std::string a(addr);
  if (inet_pton(AF_INET, a.c_str(), c.net_.data()) == 1) {
    c.v6_ = false;
    if (bits < 0) bits = 32;
    if (bits > 32) return absl::InvalidArgumentError(absl::StrCat("bad prefix length ", bits));
  } else if (inet_pton(AF_INET6, a.c_str(), c.net_.data()) == 1) {
    c.v6_ = true;
    if (bits < 0) bits = 128;
    if (bits > 128) return absl::InvalidArgumentError(absl::StrCat("bad prefix length ", bits));
  } else {
    return absl::InvalidArgumentError(absl::StrCat("bad address \"", addr, "\" in CIDR"));
  }
  c.bits_ = bits;
  // Clear host bits so Contains can compare whole bytes.
  for (int i = 0; i < 16; ++i) {
    int keep = std::max(0, std::min(8, bits - i * 8));
    c.net_[i] &= static_cast<uint8_t>(0xff00 >> keep);
  }
  return c;
}

bool Cidr::Contains(const Address& addr) const {
  Address a = addr.Unmapped();
  const uint8_t* p;
  if (a.family() == AF_INET && !v6_) {
    p = reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in*>(a.sa())->sin_addr);
  } else if (a.family() == AF_INET6 && v6_) {
    p = reinterpret_cast<const sockaddr_in6*>(a.sa())->sin6_addr.s6_addr;
  } else {
    return false;
  }
  for (int i = 0; i * 8 < bits_; ++i) {
    int keep = std::min(8, bits_ - i * 8);
    uint8_t mask = static_cast<uint8_t>(0xff00 >> keep);
    if ((p[i] & mask) != net_[i]) return false;
  }
  return true;
}

std::string Cidr::ToString() const {
  char buf[INET6_ADDRSTRLEN] = {0};
  inet_ntop(v6_ ? AF_INET6 : AF_INET, net_.data(), buf, sizeof(buf));
  return absl::StrCat(buf, "/", bits_);
}

bool Acl::Allows(const Address& peer) const {
  for (const Cidr& c : deny_) {
    if (c.Contains(peer)) return false;
  }
  if (allow_.empty()) return true;
  for (const Cidr& c : allow_) {
    if (c.Contains(peer)) return true;
  }
  return false;
}

}  // namespace ferry::net
