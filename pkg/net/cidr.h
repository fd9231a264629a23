#pragma once

#include <array>
#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "pkg/net/address.h"

namespace ferry::net {

// An IPv4 or IPv6 prefix such as "10.0.0.0/8" or "fd00::/8". A bare address
// is a /32 or /128. IPv4-mapped IPv6 peers match IPv4 prefixes.
class Cidr {
 public:
  // Errors name the problem: "bad prefix length 33", "bad address \"x\"".
  static absl::StatusOr<Cidr> Parse(absl::string_view text);

  bool Contains(const Address& addr) const;
  std::string ToString() const;

 private:
  bool v6_ = false;
  int bits_ = 0;
  std::array<uint8_t, 16> net_{};
};

// Allow/deny lists: deny wins; an empty allow list allows all. Unix peers
// (which have no IP) are allowed unless the allow list is non-empty.
class Acl {
 public:
  Acl() = default;
  Acl(std::vector<Cidr> allow, std::vector<Cidr> deny)
      : allow_(std::move(allow)), deny_(std::move(deny)) {}
  bool Allows(const Address& peer) const;
  bool empty() const { return allow_.empty() && deny_.empty(); }

 private:
  std::vector<Cidr> allow_;
  std::vector<Cidr> deny_;
};

}  // namespace ferry::net
