#pragma once

// The PROXY protocol (HAProxy doc/proxy-protocol.txt), versions 1 and 2: a header a proxy writes
// at the start of a TCP stream to tell the next hop who the client really is.
//
// Pure functions: no I/O, no state, safe to call from any thread. The caller (a Session) owns the
// read buffer and the timeout; the protocol must be configured, never guessed, so the parser
// rejects a stream that does not start with a header instead of passing it through.

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "pkg/net/address.h"

namespace ferry::proxy {

enum class ProxyVersion { kV1 = 1, kV2 = 2 };

// A v1 header, CRLF included, is at most this long (spec, section 2.1). A v1 header that has no
// CRLF within this many bytes is an error.
constexpr size_t kMaxProxyV1 = 107;

// The longest header accepted, either version. The spec allows v2 headers up to 16 + 65535
// bytes; ours cap the whole v2 header (16-byte fixed part, addresses and TLVs) at 4096 bytes,
// which holds the largest address block (216 bytes, unix) plus the TLVs real senders use
// (AWS/GCP/Azure endpoint IDs, TLS details). A longer v2 header is an error, so a reader needs at
// most this many bytes of buffer before ParseProxyHeader() decides.
constexpr size_t kMaxProxyHeader = 4096;

// The addresses a PROXY header declares.
struct ProxyHeader {
  ProxyVersion version = ProxyVersion::kV1;
  // No addresses: v1 "UNKNOWN", v2 LOCAL (any family) or v2 PROXY with family UNSPEC. The
  // receiver uses the real connection endpoints, as the spec requires.
  bool local = false;
  // When !local: both IPv4 (v1 TCP4, v2 0x11), both IPv6 (v1 TCP6, v2 0x21; an IPv4-mapped
  // address stays mapped, see Address::Unmapped()) or both unix (v2 0x31; the path up to its
  // first NUL, so an abstract socket name reads as an empty path).
  net::Address source;       // the client, as the sender saw it
  net::Address destination;  // the address the client connected to
};

// The outcome of ParseProxyHeader().
struct ProxyParse {
  enum class State {
    kNeedMore,  // the bytes so far are a proper prefix of a header that may still be valid
    kDone,      // a complete, valid header
    kError,     // these bytes can never start a valid header
  };
  State state = State::kNeedMore;
  size_t consumed = 0;  // with kDone: the header's length; bytes after it are payload
  ProxyHeader header;   // with kDone
  std::string error;    // with kError: what is wrong, e.g. "v1 header without CRLF in 107 bytes"
};

// Parses a PROXY header at the start of `data`, the bytes read from the connection so far.
// Call again with more bytes after kNeedMore; the result for a longer `data` never contradicts an
// earlier kDone or kError. Never reads past `data`; allocates only for an error message.
//
// Strict, as the spec asks of a receiver:
//  - The stream must start with "PROXY " (v1) or the 12-byte v2 signature. Anything else is
//    kError as soon as a byte differs (one byte of "GET / ..." suffices), so a client that waits
//    for the server to speak is not left hanging.
//  - v1: single spaces; TCP4 takes dotted-quad IPv4 without leading zeros, TCP6 takes what
//    inet_pton(AF_INET6) accepts; ports are decimal 0..65535 without sign or leading zeros; the
//    line ends in CRLF within kMaxProxyV1 bytes. "UNKNOWN" may be followed by anything up to the
//    first CRLF. Each field is checked as it arrives: a byte that no valid header could have at
//    that position is kError at once (a field is accepted as a prefix while some completion of it
//    is valid; a prefix that could only complete beyond 107 bytes waits for byte 107).
//  - v2: version nibble 2; command LOCAL (0) or PROXY (1); for PROXY, family TCP4 (0x11),
//    TCP6 (0x21), UNIX stream (0x31) or UNSPEC (0x00); datagram transports and other values are
//    errors. The length must cover the family's addresses (12, 36 or 216 bytes) and keep the
//    header within kMaxProxyHeader. After the addresses come TLVs: they are not interpreted
//    (CRC32C is not verified) but must tile the rest of the block exactly. A unix path must be
//    NUL-terminated within its 108 bytes. LOCAL and UNSPEC skip the block unread, as the spec says
//    ("discard the protocol block including the family").
ProxyParse ParseProxyHeader(absl::Span<const uint8_t> data);
inline ProxyParse ParseProxyHeader(absl::string_view data) {
  return ParseProxyHeader(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
}

// Appends the header announcing a connection from `source` to `destination` (typically the
// client's peer address and the listener's local address) in `version` to `out`.
//  - Both IPv4 (IPv4-mapped IPv6 counts as IPv4): TCP4 / 0x11.
//  - Both IP, at least one IPv6: TCP6 / 0x21, an IPv4 address written IPv4-mapped, so a dual-stack
//    mix keeps both addresses (HAProxy does the same).
//  - v2 with both unix: 0x31 with both paths (each truncated to 107 bytes plus NUL).
//  - Anything else (a unix peer in v1, unix mixed with IP, an empty Address): v1
//    "PROXY UNKNOWN\r\n", v2 LOCAL with family UNSPEC and no addresses. LOCAL rather than PROXY
//    with UNSPEC because the spec makes every receiver accept LOCAL and use the real endpoints,
//    while it lets a receiver reject PROXY/UNSPEC; both say the same thing: no address to report.
// v2 headers carry no TLVs.
void AppendProxyHeader(ProxyVersion version, const net::Address& source,
                       const net::Address& destination, std::string* out);

}  // namespace ferry::proxy
