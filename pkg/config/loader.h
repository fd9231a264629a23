#pragma once

// The config file loader: YAML or JSON text -> ferry.config.v1.Config, plus the
// semantic checks (Validate) shared with configs that come from the config
// service. Pure functions with no I/O except LoadConfigFile; safe to call from
// any thread.
//
// Mapping (DESIGN.md "Config file"): keys are the proto field names
// (snake_case); unknown keys, duplicate keys and keys of fields this build does
// not implement are errors; durations are Go-style strings ("500ms", "1h30m");
// enum values are lowercase without their prefix ("least_bytes"); integers are
// YAML integers; a target may be a plain "HOST:PORT" string. An explicit null
// leaves a field at its default. Every error is collected, each with the path
// of the field it is about.

#include <string>
#include <string_view>
#include <vector>

#include "google/protobuf/message.h"
#include "proto/ferry/config/v1/config.pb.h"

namespace ferry::config {

// One problem in a config, e.g. {"rules[2].listen", "port 70000 out of range"}.
struct Diagnostic {
  // Where: "workers", "rules[2].listen", "rules[0].targets[1]". Empty for an
  // error about the whole file (unreadable, YAML syntax).
  std::string path;
  // What, without the path.
  std::string message;

  // "rules[2].listen: port 70000 out of range", or just the message when the
  // path is empty.
  std::string ToString() const;

  bool operator==(const Diagnostic& other) const {
    return path == other.path && message == other.message;
  }
  bool operator!=(const Diagnostic& other) const { return !(*this == other); }
};

// The result of loading a config. `config` is only meaningful (and only safe to
// run) when `errors` is empty; it then holds every field the file set and
// leaves the others at their defaults.
struct Loaded {
  ferry::config::v1::Config config;
  std::vector<Diagnostic> errors;

  bool ok() const { return errors.empty(); }
};

// Parses YAML or JSON text onto the proto, then runs Validate. Collects every
// error: mapping errors first (in file order), then the semantic ones (in
// field order), leaving out semantic errors about a field whose mapping
// already failed. A YAML syntax error is a single Diagnostic with an empty
// path: "line L, column C: <yaml-cpp message>" (1-based).
Loaded ParseConfigText(std::string_view text);

// Reads `path` and parses it with ParseConfigText. A missing or unreadable
// file is one Diagnostic with an empty path: "cannot read \"FILE\": <strerror>".
Loaded LoadConfigFile(const std::string& path);

// The semantic checks: required fields, names, addresses, CIDRs, ranges,
// uniqueness, and that no field this build does not implement is set. Returns
// every problem found (empty = valid).
std::vector<Diagnostic> Validate(const ferry::config::v1::Config& config);

// The diagnostics' ToString(), one per line (no trailing newline).
std::string Join(const std::vector<Diagnostic>& diagnostics);

// Maps YAML or JSON text onto any message by its schema alone, with the same
// conversions and errors as ParseConfigText but without the implemented-field
// check and without Validate. For tools that only carry configs (and tests of
// the mapping of fields this build does not run yet). `message` may hold
// values already; fields in the text overwrite (lists: append to) them.
std::vector<Diagnostic> ParseTextOnto(std::string_view text, google::protobuf::Message& message);

// True if this build implements the field at `pattern`, a path with list
// indices left empty: "rules[].listen", "drain.delay". A parent of an
// implemented field ("rules", "drain") is implemented too.
bool IsImplemented(std::string_view pattern);

}  // namespace ferry::config
