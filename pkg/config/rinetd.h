#pragma once

// Translation of a rinetd.conf into a ferry config (`ferry import rinetd
// FILE`). Pure functions of the text (the only outside input is the
// service-name lookup, see ResolveServicePort); safe to call from any thread.
//
// Both syntaxes are read: rinetd 0.62 (Debian's old package) and the 0.70+
// grammar (IPv6 addresses, `/tcp` `/udp` ports, `[timeout=N,src=ADDR]`
// options, trailing comments), plus `pidfile`, `buffersize`, `dns-refresh`
// and `include` from later forks.
//
// Meaning kept:
//  - `BINDADDR BINDPORT CONNECTADDR CONNECTPORT` becomes a rule listening on
//    BINDADDR:BINDPORT with one target; service names become port numbers.
//  - rinetd refuses a client unless it matches the global allow patterns (when
//    there are any) AND the rule's own allow patterns (when there are any), and
//    refuses it if it matches any global or rule deny pattern. ferry has one
//    allow list (empty = all) and one deny list per rule, deny winning, so a
//    rule's allow list is the intersection of the two allow lists and its deny
//    list is their union. An allow list that ends up matching nobody becomes
//    a deny of everything.
//  - A pattern (`*` and `?` over the address text) becomes the exact set of
//    CIDRs it matches when that set is small (192.168.1.* -> 192.168.1.0/24;
//    192.168.1.1? -> three CIDRs). When it is not (10.*.3.* is 256 ranges),
//    an allow pattern is left out of its list, which only narrows access and
//    is reported; a deny pattern cannot be left out without admitting clients
//    rinetd refuses, so every rule it applies to is left out and reported.
//  - `logfile` gives every rule an access_log (`logcommon`: format clf).
// Anything not translated is a Diagnostic with the path "line N"; the YAML
// then still holds everything that could be translated safely.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "pkg/config/loader.h"

namespace ferry::config {

// The result of ImportRinetd.
struct RinetdImport {
  // The ferry config as YAML, with a comment naming the source line of each
  // rule. Always loadable with ParseTextOnto.
  std::string yaml;
  // What could not be translated, in line order. `path` is "line N", or empty
  // for the whole file ("no forwarding rules").
  std::vector<Diagnostic> problems;
  // Forwarding rules written to `yaml`, and those left out (UDP, bad lines,
  // ACLs that cannot be kept).
  int rules_written = 0;
  int rules_left_out = 0;
  // True if a rule was left out because one of its deny patterns has no exact
  // CIDR form (writing it without that deny would admit clients rinetd
  // refuses).
  bool unsafe = false;

  bool ok() const { return problems.empty(); }
};

// Translates the text of a rinetd.conf. `source_name` (a file name) is only
// used in the header comment of the YAML.
RinetdImport ImportRinetd(absl::string_view text, absl::string_view source_name);

// A TCP port written as rinetd accepts it: a number ("8080") or a service name
// ("http", "postgresql"). Names come from a built-in table of common services
// first (a container may have no /etc/services), then from the system's
// services database. nullopt for an unknown name or a number out of 1..65535.
std::optional<uint16_t> ResolveServicePort(absl::string_view text);

}  // namespace ferry::config
