#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace ferry::net {

// A concrete socket address: IPv4, IPv6 or a unix socket path. A value type.
class Address {
 public:
  Address() = default;

  // Parses a literal: "1.2.3.4:80", "[::1]:80" or "unix:/path". No host names.
  static absl::StatusOr<Address> ParseLiteral(absl::string_view text);
  static Address FromSockaddr(const sockaddr* sa, socklen_t len);
  static Address Unix(absl::string_view path);

  const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&storage_); }
  sockaddr* mutable_sa() { return reinterpret_cast<sockaddr*>(&storage_); }
  socklen_t len() const { return len_; }
  int family() const { return storage_.ss_family; }
  bool is_unix() const { return family() == AF_UNIX; }
  bool is_ip() const { return family() == AF_INET || family() == AF_INET6; }
  uint16_t port() const;
  void set_port(uint16_t port);
  std::string unix_path() const;

  // The endpoint key: "IP:PORT", "[IPv6]:PORT" or "unix:/path". IPv4-mapped
  // IPv6 addresses print as IPv4.
  std::string ToString() const;
  // The address without the port ("10.0.0.1", "::1").
  std::string HostString() const;

  // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) becomes the IPv4 one.
  Address Unmapped() const;

  bool operator==(const Address& other) const;
  bool operator!=(const Address& other) const { return !(*this == other); }

 private:
  sockaddr_storage storage_{};
  socklen_t len_ = 0;
};

// What a user writes for a listen or target address.
struct HostPort {
  std::string host;       // literal IP or DNS name; empty for ":PORT" (every interface)
  uint16_t port = 0;
  std::string unix_path;  // set for "unix:/path"; host and port are then unused

  bool is_unix() const { return !unix_path.empty(); }
  bool is_any() const { return !is_unix() && host.empty(); }
  std::string ToString() const;
};

// Parses "HOST:PORT", "[IPv6]:PORT", ":PORT" or "unix:/path". The error
// message names the problem without the field path, e.g. "port 70000 out of
// range" or "missing port in \"example.com\"".
absl::StatusOr<HostPort> ParseHostPort(absl::string_view text);

// True if `host` is an IPv4 or IPv6 literal.
bool IsIpLiteral(absl::string_view host);

// The address a listener binds for `hp`. ":PORT" binds $INADDR_DEFAULT when
// set, else "[::]" (dual stack) when the host has IPv6, else 0.0.0.0. Host
// names are resolved and the first address is used.
absl::StatusOr<Address> ListenAddress(const HostPort& hp);

// Every address `hp` resolves to (blocking getaddrinfo), in resolver order,
// duplicates removed. Literals and unix paths return themselves.
absl::StatusOr<std::vector<Address>> Resolve(const HostPort& hp);

// The source address outgoing connections bind, from $INADDR_DEFAULT (port 0);
// empty when unset.
absl::StatusOr<std::vector<Address>> DefaultSourceAddress();

}  // namespace ferry::net
