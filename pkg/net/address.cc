#include "pkg/net/address.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "pkg/base/fd.h"

namespace ferry::net {
namespace {

constexpr absl::string_view kUnixPrefix = "unix:";

absl::StatusOr<uint16_t> ParsePort(absl::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError("missing port");
  uint64_t port = 0;
  for (char c : text) {
    if (c < '0' || c > '9') {
      return absl::InvalidArgumentError(absl::StrCat("bad port \"", text, "\""));
    }
    port = port * 10 + static_cast<uint64_t>(c - '0');
    if (port > 1'000'000) break;
  }
  if (port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("port ", text, " out of range"));
  }
  return static_cast<uint16_t>(port);
}

bool ValidHostName(absl::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  for (char c : host) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_';
    if (!ok) return false;
  }
  return host.front() != '-' && host.front() != '.';
}

}  // namespace

Address Address::FromSockaddr(const sockaddr* sa, socklen_t len) {
  Address a;
  if (len > sizeof(a.storage_)) len = sizeof(a.storage_);
  std::memcpy(&a.storage_, sa, len);
  a.len_ = len;
  return a;
}

Address Address::Unix(absl::string_view path) {
  Address a;
  auto* un = reinterpret_cast<sockaddr_un*>(&a.storage_);
  un->sun_family = AF_UNIX;
  size_t n = std::min(path.size(), sizeof(un->sun_path) - 1);
  std::memcpy(un->sun_path, path.data(), n);
  a.len_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + n + 1);
  return a;
}

absl::StatusOr<Address> Address::ParseLiteral(absl::string_view text) {
  auto hp = ParseHostPort(text);
  if (!hp.ok()) return hp.status();
  if (hp->is_unix()) return Unix(hp->unix_path);
  if (!IsIpLiteral(hp->host)) {
    return absl::InvalidArgumentError(absl::StrCat("\"", hp->host, "\" is not an IP address"));
  }
  Address a;
  if (hp->host.find(':') != std::string::npos) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&a.storage_);
    in6->sin6_family = AF_INET6;
    inet_pton(AF_INET6, hp->host.c_str(), &in6->sin6_addr);
    in6->sin6_port = htons(hp->port);
    a.len_ = sizeof(sockaddr_in6);
  } else {
    auto* in4 = reinterpret_cast<sockaddr_in*>(&a.storage_);
    in4->sin_family = AF_INET;
    inet_pton(AF_INET, hp->host.c_str(), &in4->sin_addr);
    in4->sin_port = htons(hp->port);
    a.len_ = sizeof(sockaddr_in);
  }
  return a;
}

uint16_t Address::port() const {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  if (family() == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
  }
  return 0;
}

void Address::set_port(uint16_t port) {
  if (family() == AF_INET) reinterpret_cast<sockaddr_in*>(&storage_)->sin_port = htons(port);
  if (family() == AF_INET6) reinterpret_cast<sockaddr_in6*>(&storage_)->sin6_port = htons(port);
}

std::string Address::unix_path() const {
  if (!is_unix() || len_ <= offsetof(sockaddr_un, sun_path)) return "";
  const auto* un = reinterpret_cast<const sockaddr_un*>(&storage_);
  size_t max = len_ - offsetof(sockaddr_un, sun_path);
  return std::string(un->sun_path, strnlen(un->sun_path, max));
}

Address Address::Unmapped() const {
  if (family() != AF_INET6) return *this;
  const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&storage_);
  if (!IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) return *this;
  Address a;
  auto* in4 = reinterpret_cast<sockaddr_in*>(&a.storage_);
  in4->sin_family = AF_INET;
  std::memcpy(&in4->sin_addr, &in6->sin6_addr.s6_addr[12], 4);
  in4->sin_port = in6->sin6_port;
  a.len_ = sizeof(sockaddr_in);
  return a;
}

std::string Address::HostString() const {
  Address a = Unmapped();
  char buf[INET6_ADDRSTRLEN] = {0};
  if (a.family() == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&a.storage_)->sin_addr, buf,
              sizeof(buf));
  } else if (a.family() == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&a.storage_)->sin6_addr, buf,
              sizeof(buf));
  }
  return buf;
}

std::string Address::ToString() const {
  if (is_unix()) return absl::StrCat(kUnixPrefix, unix_path());
  Address a = Unmapped();
  if (a.family() == AF_INET) return absl::StrCat(a.HostString(), ":", a.port());
  if (a.family() == AF_INET6) return absl::StrCat("[", a.HostString(), "]:", a.port());
  return "unknown";
}

bool Address::operator==(const Address& other) const {
  return len_ == other.len_ && std::memcmp(&storage_, &other.storage_, len_) == 0;
}

std::string HostPort::ToString() const {
  if (is_unix()) return absl::StrCat(kUnixPrefix, unix_path);
  if (host.find(':') != std::string::npos) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

bool IsIpLiteral(absl::string_view host) {
  std::string h(host);
  in6_addr buf;
  return inet_pton(AF_INET, h.c_str(), &buf) == 1 || inet_pton(AF_INET6, h.c_str(), &buf) == 1;
}

absl::StatusOr<HostPort> ParseHostPort(absl::string_view text) {
  HostPort hp;
  if (text.empty()) return absl::InvalidArgumentError("empty address");
  if (absl::StartsWith(text, kUnixPrefix)) {
    absl::string_view path = text.substr(kUnixPrefix.size());
    if (path.empty()) return absl::InvalidArgumentError("empty unix socket path");
    if (path.size() >= sizeof(sockaddr_un::sun_path)) {
      return absl::InvalidArgumentError(
          absl::StrCat("unix socket path longer than ", sizeof(sockaddr_un::sun_path) - 1,
                       " bytes"));
    }
    hp.unix_path = std::string(path);
    return hp;
  }
  absl::string_view host, port;
  if (text.front() == '[') {
    size_t close = text.find(']');
    if (close == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("missing ']' in \"", text, "\""));
    }
    host = text.substr(1, close - 1);
    absl::string_view rest = text.substr(close + 1);
    if (rest.empty() || rest.front() != ':') {
      return absl::InvalidArgumentError(absl::StrCat("missing port in \"", text, "\""));
    }
    port = rest.substr(1);
    in6_addr buf;
    if (inet_pton(AF_INET6, std::string(host).c_str(), &buf) != 1) {
      return absl::InvalidArgumentError(absl::StrCat("bad IPv6 address \"", host, "\""));
    }
  } else {
    size_t colon = text.rfind(':');
    if (colon == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("missing port in \"", text, "\""));
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("IPv6 address must be in brackets: \"", text, "\""));
    }
    if (!host.empty() && !IsIpLiteral(host) && !ValidHostName(host)) {
      return absl::InvalidArgumentError(absl::StrCat("bad host name \"", host, "\""));
    }
  }
  auto p = ParsePort(port);
  if (!p.ok()) return p.status();
  hp.host = std::string(host);
  hp.port = *p;
  return hp;
}

namespace {

bool HostHasIpv6() {
  static const bool has = [] {
    base::Fd fd(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    return fd.valid();
  }();
  return has;
}

}  // namespace

absl::StatusOr<std::vector<Address>> Resolve(const HostPort& hp) {
  if (hp.is_unix()) return std::vector<Address>{Address::Unix(hp.unix_path)};
  if (IsIpLiteral(hp.host)) {
    auto a = Address::ParseLiteral(hp.ToString());
    if (!a.ok()) return a.status();
    return std::vector<Address>{*a};
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  addrinfo* res = nullptr;
  std::string port = absl::StrCat(hp.port);
  int rc = getaddrinfo(hp.host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve \"", hp.host, "\": ", gai_strerror(rc)));
  }
  std::vector<Address> out;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    Address a = Address::FromSockaddr(ai->ai_addr, ai->ai_addrlen);
    bool dup = false;
    for (const Address& b : out) dup = dup || b == a;
    if (!dup) out.push_back(a);
  }
  freeaddrinfo(res);
  if (out.empty()) {
    return absl::UnavailableError(absl::StrCat("\"", hp.host, "\" has no addresses"));
  }
  return out;
}

absl::StatusOr<Address> ListenAddress(const HostPort& hp) {
  if (hp.is_any()) {
    if (const char* def = std::getenv("INADDR_DEFAULT"); def != nullptr && *def != '\0') {
      HostPort h{def, hp.port, ""};
      if (absl::string_view(def).find(':') != absl::string_view::npos) h.host = def;
      auto a = Address::ParseLiteral(h.ToString());
      if (!a.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("INADDR_DEFAULT=\"", def, "\" is not an IP address"));
      }
      return a;
    }
    return Address::ParseLiteral(HostHasIpv6() ? absl::StrCat("[::]:", hp.port)
                                               : absl::StrCat("0.0.0.0:", hp.port));
  }
  auto all = Resolve(hp);
  if (!all.ok()) return all.status();
  return all->front();
}

absl::StatusOr<std::vector<Address>> DefaultSourceAddress() {
  const char* def = std::getenv("INADDR_DEFAULT");
  if (def == nullptr || *def == '\0') return std::vector<Address>{};
  HostPort h{def, 0, ""};
  auto a = Address::ParseLiteral(h.ToString());
  if (!a.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("INADDR_DEFAULT=\"", def, "\" is not an IP address"));
  }
  return std::vector<Address>{*a};
}

}  // namespace ferry::net
