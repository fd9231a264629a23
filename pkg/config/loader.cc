#include "pkg/config/loader.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <string_view>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/message.h"
#include "pkg/base/fd.h"
#include "pkg/net/address.h"
#include "pkg/net/cidr.h"
#include "yaml-cpp/yaml.h"

namespace ferry::config {
namespace {

namespace pb = ::google::protobuf;
using ::ferry::config::v1::Config;
using ::ferry::config::v1::Keepalive;
using ::ferry::config::v1::Rule;

// ---------------------------------------------------------------------------
// The fields this build implements, as paths with list indices left empty.
// A listed path implements its whole subtree ("rules[].keepalive" covers idle,
// interval and count); its parents ("rules", "rules[].targets") are implicitly
// allowed so the listed field can be reached. Any other field present in a
// file, or set in a config from the service, is "not implemented in this
// build". To implement a field: add its path here, check it in Validate below,
// and add a good and a bad case to tests/config/loader_test.cc.
constexpr absl::string_view kImplementedPaths[] = {
    "admin.listen",
    "admin.expose_config",
    "workers",
    "drain.delay",
    "drain.timeout",
    "rules[].name",
    "rules[].listen",
    "rules[].targets[].address",  // not weight, backup
    "rules[].allow",
    "rules[].deny",
    "rules[].connect_timeout",
    "rules[].connect_attempts",
    "rules[].idle_timeout",
    "rules[].half_close_timeout",
    "rules[].max_lifetime",
    "rules[].max_connections",
    "rules[].keepalive",  // idle, interval, count
    "rules[].delay",
    "rules[].insert",  // file, text, base64
    "rules[].rate_limit",
    "rules[].max_connections_per_source",
    "rules[].close",
    "rules[].proxy_protocol",  // send, accept, trusted, timeout
    "rules[].transparent",
    "rules[].allow_targets",
    "rules[].access_log",  // format, path
};

// Messages that may be written as a plain scalar meaning {<field>: scalar}.
constexpr std::pair<absl::string_view, absl::string_view> kScalarShorthands[] = {
    {"ferry.config.v1.Target", "address"},
};

bool HasScalarShorthand(const pb::Descriptor& type) {
  for (const auto& shorthand : kScalarShorthands) {
    if (type.full_name() == shorthand.first) return true;
  }
  return false;
}

constexpr absl::string_view kDurationType = "google.protobuf.Duration";
// google.protobuf.Duration's documented range: +-10000 years.
constexpr int64_t kMaxDurationSeconds = 315576000000;
constexpr size_t kMaxFileBytes = 64 << 20;

// Validate's limits.
constexpr uint32_t kMaxWorkers = 1024;
constexpr uint32_t kMaxConnectAttempts = 100;
constexpr uint32_t kMaxKeepaliveCount = 127;     // TCP_KEEPCNT
constexpr int64_t kMaxKeepaliveSeconds = 32767;  // TCP_KEEPIDLE, TCP_KEEPINTVL
constexpr absl::Duration kMaxConnectTimeout = absl::Hours(1);
constexpr size_t kMaxNameLength = 63;
// One copy buffer (64 KiB) less room for a PROXY protocol header before it.
constexpr size_t kMaxInsertBytes = 64 * 1024 - 256;

// True if `child` is strictly below `parent` ("rules" -> "rules[].name").
bool IsBelow(absl::string_view parent, absl::string_view child) {
  return child.size() > parent.size() && absl::StartsWith(child, parent) &&
         (child[parent.size()] == '.' || child[parent.size()] == '[');
}

std::string ChildPath(absl::string_view path, absl::string_view key) {
  return path.empty() ? std::string(key) : absl::StrCat(path, ".", key);
}

std::string IndexPath(absl::string_view path, size_t i) { return absl::StrCat(path, "[", i, "]"); }

// "rules[2].targets[0].address" -> "rules[].targets[].address".
std::string Pattern(absl::string_view path) {
  std::string out;
  out.reserve(path.size());
  bool in_index = false;
  for (char c : path) {
    if (c == '[') in_index = true;
    if (c == ']') in_index = false;
    if (!in_index || c == '[') out.push_back(c);
  }
  return out;
}

std::string Quote(absl::string_view s) { return absl::StrCat("\"", absl::CHexEscape(s), "\""); }

std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "null";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    default:
      return Quote(node.Scalar());
  }
}

// A plain (unquoted) scalar, or one tagged explicitly with a core schema tag
// other than !!str. JSON numbers and booleans are plain.
bool IsPlain(const YAML::Node& node) {
  const std::string& tag = node.Tag();
  return tag == "?" ||
         (absl::StartsWith(tag, "tag:yaml.org,2002:") && tag != "tag:yaml.org,2002:str");
}

absl::Duration ToAbsl(const pb::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

std::string FormatDuration(const pb::Duration& d) { return absl::FormatDuration(ToAbsl(d)); }

// The enum value names a file uses: BALANCE_LEAST_BYTES -> "least_bytes". The
// prefix is the zero value's name without "UNSPECIFIED".
std::string FileEnumName(const pb::EnumValueDescriptor& value) {
  const pb::EnumDescriptor& type = *value.type();
  std::string prefix;
  if (const pb::EnumValueDescriptor* zero = type.FindValueByNumber(0)) {
    absl::string_view z = zero->name();
    if (absl::ConsumeSuffix(&z, "UNSPECIFIED")) prefix = std::string(z);
  }
  absl::string_view name = value.name();
  absl::ConsumePrefix(&name, prefix);
  return absl::AsciiStrToLower(name);
}

// ---------------------------------------------------------------------------
// YAML -> proto by reflection. Appends every problem to `errors`; a field whose
// value is bad is left unset (or, for a list element, empty).
class Mapper {
 public:
  // With `check_implemented`, paths are relative to a Config and a key of a
  // field this build does not implement is an error (and is not mapped).
  Mapper(std::vector<Diagnostic>& errors, bool check_implemented)
      : errors_(errors), check_implemented_(check_implemented) {}

  // `node` is a mapping (or a scalar shorthand) for `msg`.
  void MapMessage(const YAML::Node& node, const std::string& path, pb::Message& msg) {
    const pb::Descriptor& type = *msg.GetDescriptor();
    const bool has_shorthand = HasScalarShorthand(type);
    if (node.IsScalar() && has_shorthand) {
      for (const auto& [message, field] : kScalarShorthands) {
        if (type.full_name() != message) continue;
        const pb::FieldDescriptor* f = type.FindFieldByName(std::string(field));
        if (check_implemented_ && !IsImplemented(Pattern(ChildPath(path, field)))) {
          Error(path, "not implemented in this build");
        } else {
          MapValue(node, path, *f, msg);
        }
        return;
      }
    }
    if (!node.IsMap()) {
      Error(path, has_shorthand ? "expected a string or a mapping" : "expected a mapping");
      return;
    }
    std::map<std::string, int> first_line;  // key -> 1-based line
    std::map<const pb::OneofDescriptor*, const pb::FieldDescriptor*> oneof_set;
    for (const auto& entry : node) {
      const YAML::Node& key = entry.first;
      if (!key.IsScalar()) {
        Error(path, absl::StrCat("expected a field name, got ", Describe(key)));
        continue;
      }
      const std::string& name = key.Scalar();
      std::string child = ChildPath(path, name);
      auto [it, inserted] = first_line.emplace(name, key.Mark().line + 1);
      if (!inserted) {
        Error(child, absl::StrCat("duplicate key (first on line ", it->second, ")"));
        continue;
      }
      const pb::FieldDescriptor* f = type.FindFieldByName(name);
      if (f == nullptr) {
        Error(child, "unknown field");
        continue;
      }
      if (check_implemented_ && !IsImplemented(Pattern(child))) {
        Error(child, "not implemented in this build");
        continue;
      }
      if (const pb::OneofDescriptor* oneof = f->real_containing_oneof()) {
        auto [o, first] = oneof_set.emplace(oneof, f);
        if (!first) {
          std::vector<std::string> names;
          for (int i = 0; i < oneof->field_count(); ++i) names.push_back(oneof->field(i)->name());
          Error(child, absl::StrCat("only one of ", absl::StrJoin(names, ", "), " may be set (",
                                    o->second->name(), " is)"));
          continue;
        }
      }
      MapField(entry.second, child, *f, msg);
    }
  }

 private:
  void Error(std::string path, std::string message) {
    errors_.push_back(Diagnostic{std::move(path), std::move(message)});
  }

  void MapField(const YAML::Node& node, const std::string& path, const pb::FieldDescriptor& f,
                pb::Message& msg) {
    if (node.IsNull()) return;  // An explicit null keeps the default.
    if (!f.is_repeated()) {
      MapValue(node, path, f, msg);
      return;
    }
    if (!node.IsSequence()) {
      Error(path, "expected a list");
      return;
    }
    size_t i = 0;
    for (const YAML::Node& element : node) MapValue(element, IndexPath(path, i++), f, msg);
  }

  // Converts one value (a singular field or one list element) and sets or adds it.
  void MapValue(const YAML::Node& node, const std::string& path, const pb::FieldDescriptor& f,
                pb::Message& msg) {
    const pb::Reflection& r = *msg.GetReflection();
    const bool add = f.is_repeated();
    switch (f.cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_MESSAGE: {
        if (f.message_type()->full_name() == kDurationType) {
          std::optional<pb::Duration> d = ParseDurationNode(node, path);
          if (!d) return;
          (add ? r.AddMessage(&msg, &f) : r.MutableMessage(&msg, &f))->CopyFrom(*d);
          return;
        }
        pb::Message* sub = add ? r.AddMessage(&msg, &f) : r.MutableMessage(&msg, &f);
        if (!node.IsNull()) MapMessage(node, path, *sub);  // A null list element is {}.
        return;
      }
      case pb::FieldDescriptor::CPPTYPE_STRING:
        if (!node.IsScalar()) {
          Error(path, absl::StrCat("expected a string, got ", Describe(node)));
          return;
        }
        add ? r.AddString(&msg, &f, node.Scalar()) : r.SetString(&msg, &f, node.Scalar());
        return;
      case pb::FieldDescriptor::CPPTYPE_BOOL: {
        std::optional<bool> b = ParseBoolNode(node, path);
        if (b) add ? r.AddBool(&msg, &f, *b) : r.SetBool(&msg, &f, *b);
        return;
      }
      case pb::FieldDescriptor::CPPTYPE_INT32: {
        std::optional<int64_t> v = ParseSigned(node, path, std::numeric_limits<int32_t>::min(),
                                               std::numeric_limits<int32_t>::max());
        if (v) add ? r.AddInt32(&msg, &f, *v) : r.SetInt32(&msg, &f, *v);
        return;
      }
      case pb::FieldDescriptor::CPPTYPE_INT64: {
        std::optional<int64_t> v = ParseSigned(node, path, std::numeric_limits<int64_t>::min(),
                                               std::numeric_limits<int64_t>::max());
        if (v) add ? r.AddInt64(&msg, &f, *v) : r.SetInt64(&msg, &f, *v);
        return;
      }
      case pb::FieldDescriptor::CPPTYPE_UINT32: {
        std::optional<uint64_t> v = ParseUnsigned(node, path, std::numeric_limits<uint32_t>::max());
        if (v) add ? r.AddUInt32(&msg, &f, *v) : r.SetUInt32(&msg, &f, *v);
        return;
      }
      case pb::FieldDescriptor::CPPTYPE_UINT64: {
        std::optional<uint64_t> v = ParseUnsigned(node, path, std::numeric_limits<uint64_t>::max());
        if (v) add ? r.AddUInt64(&msg, &f, *v) : r.SetUInt64(&msg, &f, *v);
        return;
      }
      case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      case pb::FieldDescriptor::CPPTYPE_FLOAT: {
        double v;
        if (!node.IsScalar() || !IsPlain(node) || !absl::SimpleAtod(node.Scalar(), &v)) {
          Error(path, absl::StrCat("expected a number, got ", Describe(node)));
          return;
        }
        if (f.cpp_type() == pb::FieldDescriptor::CPPTYPE_DOUBLE) {
          add ? r.AddDouble(&msg, &f, v) : r.SetDouble(&msg, &f, v);
        } else {
          add ? r.AddFloat(&msg, &f, v) : r.SetFloat(&msg, &f, v);
        }
        return;
      }
      case pb::FieldDescriptor::CPPTYPE_ENUM: {
        const pb::EnumValueDescriptor* v = ParseEnumNode(node, path, *f.enum_type());
        if (v) add ? r.AddEnum(&msg, &f, v) : r.SetEnum(&msg, &f, v);
        return;
      }
    }
  }

  std::optional<bool> ParseBoolNode(const YAML::Node& node, const std::string& path) {
    if (node.IsScalar() && IsPlain(node)) {
      const std::string& s = node.Scalar();
      if (s == "true" || s == "True" || s == "TRUE") return true;
      if (s == "false" || s == "False" || s == "FALSE") return false;
    }
    Error(path, absl::StrCat("expected true or false, got ", Describe(node)));
    return std::nullopt;
  }

  // A plain decimal integer: optional sign, digits. Returns the sign and the
  // magnitude, or nullopt after reporting; `range` is for the message.
  std::optional<std::pair<bool, uint64_t>> ParseInteger(const YAML::Node& node,
                                                        const std::string& path,
                                                        const std::string& range) {
    absl::string_view s = node.IsScalar() ? absl::string_view(node.Scalar()) : absl::string_view();
    bool negative = false;
    absl::string_view digits = s;
    if (absl::ConsumePrefix(&digits, "-")) {
      negative = true;
    } else {
      absl::ConsumePrefix(&digits, "+");
    }
    bool all_digits = !digits.empty();
    for (char c : digits) all_digits = all_digits && absl::ascii_isdigit(c);
    if (!node.IsScalar() || !IsPlain(node) || !all_digits) {
      Error(path, absl::StrCat("expected an integer, got ", Describe(node)));
      return std::nullopt;
    }
    uint64_t magnitude;
    if (!absl::SimpleAtoi(digits, &magnitude)) {
      Error(path, absl::StrCat(s, " out of range ", range));
      return std::nullopt;
    }
    return std::make_pair(negative && magnitude != 0, magnitude);
  }

  std::optional<uint64_t> ParseUnsigned(const YAML::Node& node, const std::string& path,
                                        uint64_t max) {
    std::string range = absl::StrCat("(0..", max, ")");
    auto v = ParseInteger(node, path, range);
    if (!v) return std::nullopt;
    auto [negative, magnitude] = *v;
    if (negative || magnitude > max) {
      Error(path, absl::StrCat(node.Scalar(), " out of range ", range));
      return std::nullopt;
    }
    return magnitude;
  }

  std::optional<int64_t> ParseSigned(const YAML::Node& node, const std::string& path, int64_t min,
                                     int64_t max) {
    std::string range = absl::StrCat("(", min, "..", max, ")");
    auto v = ParseInteger(node, path, range);
    if (!v) return std::nullopt;
    auto [negative, magnitude] = *v;
    // -min as uint64_t without overflowing int64_t.
    const uint64_t limit =
        negative ? uint64_t{0} - static_cast<uint64_t>(min) : static_cast<uint64_t>(max);
    if (magnitude > limit) {
      Error(path, absl::StrCat(node.Scalar(), " out of range ", range));
      return std::nullopt;
    }
    return negative ? static_cast<int64_t>(uint64_t{0} - magnitude)
                    : static_cast<int64_t>(magnitude);
  }

  // Go-style: "500ms", "5s", "10m", "1h30m", "1.5s", "0". Not negative.
  std::optional<pb::Duration> ParseDurationNode(const YAML::Node& node, const std::string& path) {
    absl::Duration d;
    if (!node.IsScalar()) {
      Error(path, absl::StrCat("expected a duration such as \"5s\", got ", Describe(node)));
      return std::nullopt;
    }
    if (!absl::ParseDuration(node.Scalar(), &d) || d == absl::InfiniteDuration() ||
        d == -absl::InfiniteDuration()) {
      Error(path, absl::StrCat("invalid duration ", Describe(node),
                               " (write e.g. \"500ms\", \"5s\", \"10m\", \"1h30m\")"));
      return std::nullopt;
    }
    if (d < absl::ZeroDuration()) {
      Error(path, absl::StrCat("negative duration ", Quote(node.Scalar())));
      return std::nullopt;
    }
    if (d > absl::Seconds(kMaxDurationSeconds)) {
      Error(path, absl::StrCat("duration ", Quote(node.Scalar()), " out of range"));
      return std::nullopt;
    }
    pb::Duration out;
    absl::Duration rem;
    out.set_seconds(absl::IDivDuration(d, absl::Seconds(1), &rem));
    out.set_nanos(static_cast<int32_t>(absl::IDivDuration(rem, absl::Nanoseconds(1), &rem)));
    return out;
  }

  const pb::EnumValueDescriptor* ParseEnumNode(const YAML::Node& node, const std::string& path,
                                               const pb::EnumDescriptor& type) {
    std::vector<std::string> allowed;
    for (int i = 0; i < type.value_count(); ++i) {
      const pb::EnumValueDescriptor* v = type.value(i);
      if (v->number() == 0) continue;
      std::string name = FileEnumName(*v);
      if (node.IsScalar() && node.Scalar() == name) return v;
      allowed.push_back(std::move(name));
    }
    const std::string list = absl::StrJoin(allowed, ", ");
    if (node.IsScalar()) {
      Error(path, absl::StrCat("unknown value ", Describe(node), " (allowed: ", list, ")"));
    } else {
      Error(path, absl::StrCat("expected one of ", list, ", got ", Describe(node)));
    }
    return nullptr;
  }

  std::vector<Diagnostic>& errors_;
  const bool check_implemented_;
};

// ---------------------------------------------------------------------------
// Semantic checks on a proto, wherever it came from.

// Where a listener binds, for finding two rules on one address.
struct ListenKey {
  bool is_unix = false;
  std::string unix_path;
  bool wildcard = false;  // ":PORT", "0.0.0.0:PORT", "[::]:PORT" (all overlap)
  std::string ip;         // canonical, IPv4-mapped IPv6 unmapped
  uint16_t port = 0;

  bool Overlaps(const ListenKey& o) const {
    if (is_unix || o.is_unix) return is_unix && o.is_unix && unix_path == o.unix_path;
    if (port == 0 || port != o.port) return false;  // port 0: each bind picks its own
    return wildcard ? o.wildcard : (!o.wildcard && ip == o.ip);
  }
};

class Validator {
 public:
  std::vector<Diagnostic> Run(const Config& config) {
    CheckImplemented(config, "");
    if (config.workers() > kMaxWorkers) {
      Error("workers", absl::StrCat(config.workers(), " out of range (0..", kMaxWorkers, ")"));
    }
    if (config.has_drain()) {
      if (config.drain().has_delay()) CheckDuration(config.drain().delay(), "drain.delay");
      if (config.drain().has_timeout()) CheckDuration(config.drain().timeout(), "drain.timeout");
    }
    if (!config.admin().listen().empty()) {
      absl::StatusOr<net::HostPort> hp = net::ParseHostPort(config.admin().listen());
      if (!hp.ok()) {
        Error("admin.listen", std::string(hp.status().message()));
      } else if (hp->is_unix() || (!hp->host.empty() && !net::IsIpLiteral(hp->host))) {
        Error("admin.listen", absl::StrCat("must be IP:PORT, [IPv6]:PORT or :PORT, not ",
                                           Quote(config.admin().listen())));
      }
    }
    if (config.rules_size() == 0) Error("rules", "at least one rule is required");
    for (int i = 0; i < config.rules_size(); ++i) CheckRule(config.rules(i), i);
    return std::move(errors_);
  }

 private:
  void Error(std::string path, std::string message) {
    errors_.push_back(Diagnostic{std::move(path), std::move(message)});
  }

  // Every field set in `msg` must be one this build implements.
  void CheckImplemented(const pb::Message& msg, const std::string& path) {
    std::vector<const pb::FieldDescriptor*> fields;
    msg.GetReflection()->ListFields(msg, &fields);
    for (const pb::FieldDescriptor* f : fields) {
      std::string child = ChildPath(path, f->name());
      if (!IsImplemented(Pattern(child))) {
        Error(child, "not implemented in this build");
        continue;
      }
      if (f->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE ||
          f->message_type()->full_name() == kDurationType) {
        continue;
      }
      const pb::Reflection& r = *msg.GetReflection();
      if (f->is_repeated()) {
        for (int i = 0; i < r.FieldSize(msg, f); ++i) {
          CheckImplemented(r.GetRepeatedMessage(msg, f, i), IndexPath(child, i));
        }
      } else {
        CheckImplemented(r.GetMessage(msg, f), child);
      }
    }
  }

  // A well-formed, non-negative Duration. Returns false after reporting.
  bool CheckDuration(const pb::Duration& d, const std::string& path) {
    const bool well_formed = d.seconds() >= -kMaxDurationSeconds &&
                             d.seconds() <= kMaxDurationSeconds && d.nanos() > -1000000000 &&
                             d.nanos() < 1000000000 && !(d.seconds() > 0 && d.nanos() < 0) &&
                             !(d.seconds() < 0 && d.nanos() > 0);
    if (!well_formed) {
      Error(path,
            absl::StrCat("invalid duration (seconds ", d.seconds(), ", nanos ", d.nanos(), ")"));
      return false;
    }
    if (d.seconds() < 0 || d.nanos() < 0) {
      Error(path, absl::StrCat("negative duration ", FormatDuration(d)));
      return false;
    }
    return true;
  }

  void CheckName(const std::string& name, const std::string& path) {
    if (name.empty()) {
      Error(path, "required");
      return;
    }
    std::string problem;
    if (name.size() > kMaxNameLength) {
      problem = absl::StrCat("longer than ", kMaxNameLength, " characters");
    } else if (!absl::ascii_islower(name[0]) && !absl::ascii_isdigit(name[0])) {
      problem = "must start with a-z or 0-9";
    } else {
      for (char c : name) {
        if (absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '_' || c == '.' || c == '-') {
          continue;
        }
        problem = absl::StrCat(Quote(std::string(1, c)), " is not allowed");
        break;
      }
    }
    if (!problem.empty()) {
      Error(path, absl::StrCat("invalid name ", Quote(name), ": ", problem,
                               " (names match [a-z0-9][a-z0-9_.-]{0,62})"));
    }
  }

  void CheckListen(const std::string& listen, const std::string& path, int rule) {
    if (listen.empty()) {
      Error(path, "required");
      return;
    }
    absl::StatusOr<net::HostPort> hp = net::ParseHostPort(listen);
    if (!hp.ok()) {
      Error(path, std::string(hp.status().message()));
      return;
    }
    ListenKey key;
    if (hp->is_unix()) {
      key.is_unix = true;
      key.unix_path = hp->unix_path;
    } else if (hp->host.empty()) {
      key.wildcard = true;
    } else if (!net::IsIpLiteral(hp->host)) {
      Error(path, absl::StrCat("host ", Quote(hp->host), " is not an IP address (listen on ",
                               "\":PORT\", IP:PORT, [IPv6]:PORT or unix:/path)"));
      return;
    } else {
      absl::StatusOr<net::Address> addr = net::Address::ParseLiteral(hp->ToString());
      if (!addr.ok()) {
        Error(path, std::string(addr.status().message()));
        return;
      }
      key.ip = addr->Unmapped().HostString();
      key.wildcard = key.ip == "0.0.0.0" || key.ip == "::";
    }
    key.port = hp->port;
    for (const auto& [other, other_rule, other_listen] : listens_) {
      if (other_listen == listen && key.Overlaps(other)) {
        Error(path,
              absl::StrCat("address ", Quote(listen), " already used by rules[", other_rule, "]"));
        return;
      }
    }
    for (const auto& [other, other_rule, other_listen] : listens_) {
      if (key.Overlaps(other)) {
        Error(path, absl::StrCat("address ", Quote(listen), " overlaps rules[", other_rule,
                                 "].listen ", Quote(other_listen)));
        return;
      }
    }
    listens_.emplace_back(std::move(key), rule, listen);
  }

  void CheckCidrs(const pb::RepeatedPtrField<std::string>& cidrs, const std::string& path) {
    for (int i = 0; i < cidrs.size(); ++i) {
      absl::StatusOr<net::Cidr> cidr = net::Cidr::Parse(cidrs[i]);
      if (!cidr.ok()) Error(IndexPath(path, i), std::string(cidr.status().message()));
    }
  }

  void CheckKeepalive(const Keepalive& k, const std::string& path) {
    auto check_seconds = [&](const pb::Duration& d, const std::string& p) {
      if (!CheckDuration(d, p) || ToAbsl(d) == absl::ZeroDuration()) return;
      if (ToAbsl(d) < absl::Seconds(1)) {
        Error(p, absl::StrCat(FormatDuration(d),
                              " is below the minimum of 1s (0s = the kernel default)"));
      } else if (ToAbsl(d) > absl::Seconds(kMaxKeepaliveSeconds)) {
        Error(p, absl::StrCat(FormatDuration(d), " exceeds the maximum of ", kMaxKeepaliveSeconds,
                              "s"));
      }
    };
    if (k.has_idle()) check_seconds(k.idle(), ChildPath(path, "idle"));
    if (k.has_interval()) check_seconds(k.interval(), ChildPath(path, "interval"));
    if (k.count() > kMaxKeepaliveCount) {
      Error(ChildPath(path, "count"),
            absl::StrCat(k.count(), " out of range (0..", kMaxKeepaliveCount, ")"));
    }
  }

  void CheckRule(const Rule& rule, int i) {
    const std::string path = IndexPath("rules", i);
    const std::string name_path = ChildPath(path, "name");
    CheckName(rule.name(), name_path);
    if (!rule.name().empty()) {
      auto [it, inserted] = names_.emplace(rule.name(), i);
      if (!inserted) {
        Error(name_path, absl::StrCat("duplicate name ", Quote(rule.name()), " (also rules[",
                                      it->second, "])"));
      }
    }
    CheckListen(rule.listen(), ChildPath(path, "listen"), i);

    const std::string targets_path = ChildPath(path, "targets");
    if (rule.targets_size() == 0 && rule.transparent() != Rule::TRANSPARENT_REDIRECT) {
      Error(targets_path, "at least one target is required");
    }
    for (int j = 0; j < rule.targets_size(); ++j) {
      // A target is identified by its address, so errors name the target itself:
      // the path then reads the same for "HOST:PORT" and {address: ...}.
      const std::string target_path = IndexPath(targets_path, j);
      absl::StatusOr<net::HostPort> hp = net::ParseHostPort(rule.targets(j).address());
      if (!hp.ok()) {
        Error(target_path, std::string(hp.status().message()));
      } else if (!hp->is_unix() && hp->host.empty()) {
        Error(target_path, absl::StrCat("missing host in ", Quote(rule.targets(j).address())));
      } else if (!hp->is_unix() && hp->port == 0) {
        Error(target_path, "port 0 is not a valid target port");
      }
    }

    CheckCidrs(rule.allow(), ChildPath(path, "allow"));
    CheckCidrs(rule.deny(), ChildPath(path, "deny"));

    if (rule.has_connect_timeout()) {
      const std::string p = ChildPath(path, "connect_timeout");
      if (CheckDuration(rule.connect_timeout(), p) &&
          ToAbsl(rule.connect_timeout()) > kMaxConnectTimeout) {
        Error(p, absl::StrCat(FormatDuration(rule.connect_timeout()), " exceeds the maximum of ",
                              absl::FormatDuration(kMaxConnectTimeout)));
      }
    }
    if (rule.connect_attempts() > kMaxConnectAttempts) {
      Error(ChildPath(path, "connect_attempts"),
            absl::StrCat(rule.connect_attempts(), " out of range (0..", kMaxConnectAttempts, ")"));
    }
    if (rule.has_idle_timeout()) {
      CheckDuration(rule.idle_timeout(), ChildPath(path, "idle_timeout"));
    }
    if (rule.has_half_close_timeout()) {
      CheckDuration(rule.half_close_timeout(), ChildPath(path, "half_close_timeout"));
    }
    if (rule.has_max_lifetime()) {
      CheckDuration(rule.max_lifetime(), ChildPath(path, "max_lifetime"));
    }
    if (rule.has_keepalive()) CheckKeepalive(rule.keepalive(), ChildPath(path, "keepalive"));
    if (rule.has_delay()) {
      const std::string p = ChildPath(path, "delay");
      if (CheckDuration(rule.delay(), p) && ToAbsl(rule.delay()) > kMaxConnectTimeout) {
        Error(p, absl::StrCat(FormatDuration(rule.delay()), " exceeds the maximum of ",
                              absl::FormatDuration(kMaxConnectTimeout)));
      }
    }
    if (rule.has_insert()) CheckInsert(rule.insert(), ChildPath(path, "insert"));
    if (rule.has_proxy_protocol()) {
      const v1::ProxyProtocol& pp = rule.proxy_protocol();
      const std::string p = ChildPath(path, "proxy_protocol");
      CheckCidrs(pp.trusted(), ChildPath(p, "trusted"));
      if (pp.accept() && pp.trusted().empty()) {
        Error(ChildPath(p, "trusted"),
              "required with accept: the CIDRs of the proxies whose header is believed");
      }
      if (!pp.accept() && !pp.trusted().empty()) {
        Error(ChildPath(p, "trusted"), "only means something with accept: true");
      }
      if (pp.has_timeout()) {
        const std::string tp = ChildPath(p, "timeout");
        if (CheckDuration(pp.timeout(), tp) && ToAbsl(pp.timeout()) <= absl::ZeroDuration()) {
          Error(tp, "must be more than 0s");
        }
      }
    }
    if (rule.transparent() == Rule::TRANSPARENT_REDIRECT) {
      if (rule.targets_size() == 0 && rule.allow_targets_size() == 0) {
        Error(ChildPath(path, "allow_targets"),
              "transparent: redirect needs targets or allow_targets: the destinations it may "
              "reach (it is never an open relay)");
      }
      CheckCidrs(rule.allow_targets(), ChildPath(path, "allow_targets"));
      absl::StatusOr<net::HostPort> hp = net::ParseHostPort(rule.listen());
      if (hp.ok() && hp->is_unix()) {
        Error(ChildPath(path, "transparent"), "redirect needs a TCP listener, not a unix socket");
      }
    } else if (rule.allow_targets_size() > 0) {
      Error(ChildPath(path, "allow_targets"), "only means something with transparent: redirect");
    }
  }

  // The bytes an insert names must fit one copy buffer: they are written to
  // the target before anything the client sends.
  void CheckInsert(const v1::Insert& insert, const std::string& path) {
    std::string bytes;
    switch (insert.source_case()) {
      case v1::Insert::kText:
        bytes = insert.text();
        break;
      case v1::Insert::kBase64:
        if (!absl::Base64Unescape(insert.base64(), &bytes)) {
          Error(ChildPath(path, "base64"), "not valid base64");
          return;
        }
        break;
      case v1::Insert::kFile:
        if (insert.file().empty()) Error(ChildPath(path, "file"), "empty file name");
        return;  // read (and sized) when the rule is built
      case v1::Insert::SOURCE_NOT_SET:
        Error(path, "needs one of file, text or base64");
        return;
    }
    if (bytes.size() > kMaxInsertBytes) {
      Error(path, absl::StrCat(bytes.size(), " bytes, more than the maximum of ", kMaxInsertBytes));
    }
  }

  std::vector<Diagnostic> errors_;
  std::map<std::string, int> names_;                              // rule name -> first index
  std::vector<std::tuple<ListenKey, int, std::string>> listens_;  // key, rule index, text
};

// True if `path` is `error_path` or below it.
bool Covers(const std::string& error_path, const std::string& path) {
  return !error_path.empty() && (path == error_path || IsBelow(error_path, path));
}

// Parses `text` and maps it onto `message`, appending to `errors`. Returns
// false if the text as a whole is unusable (YAML syntax, not a mapping), when
// checking its meaning would only add noise.
bool MapText(std::string_view text, pb::Message& message, bool check_implemented,
             std::vector<Diagnostic>& errors) {
  // yaml-cpp reports errors by throwing; nothing is thrown past this function.
  try {
    std::vector<YAML::Node> docs = YAML::LoadAll(std::string(text));
    if (docs.size() > 1) {
      errors.push_back({"", absl::StrCat("expected one YAML document, found ", docs.size())});
      return false;
    }
    if (docs.empty() || docs[0].IsNull()) return true;  // An empty file: every field unset.
    if (!docs[0].IsMap()) {
      errors.push_back(
          {"", absl::StrCat("expected a mapping of config fields, got ", Describe(docs[0]))});
      return false;
    }
    Mapper(errors, check_implemented).MapMessage(docs[0], "", message);
    return true;
  } catch (const YAML::ParserException& e) {
    errors.push_back(
        {"", absl::StrCat("line ", e.mark.line + 1, ", column ", e.mark.column + 1, ": ", e.msg)});
  } catch (const YAML::Exception& e) {
    errors.push_back({"", e.what()});
  }
  return false;
}

}  // namespace

std::string Diagnostic::ToString() const {
  return path.empty() ? message : absl::StrCat(path, ": ", message);
}

std::string Join(const std::vector<Diagnostic>& diagnostics) {
  return absl::StrJoin(diagnostics, "\n",
                       [](std::string* out, const Diagnostic& d) { out->append(d.ToString()); });
}

bool IsImplemented(std::string_view pattern_text) {
  const absl::string_view pattern(pattern_text.data(), pattern_text.size());
  for (absl::string_view p : kImplementedPaths) {
    if (p == pattern || IsBelow(pattern, p) || IsBelow(p, pattern)) return true;
  }
  return false;
}

std::vector<Diagnostic> Validate(const Config& config) { return Validator().Run(config); }

std::vector<Diagnostic> ParseTextOnto(std::string_view text, pb::Message& message) {
  std::vector<Diagnostic> errors;
  MapText(text, message, /*check_implemented=*/false, errors);
  return errors;
}

Loaded ParseConfigText(std::string_view text) {
  Loaded out;
  if (!MapText(text, out.config, /*check_implemented=*/true, out.errors)) return out;
  // A field that failed to map is unset; say so once, not again as "required".
  const size_t mapping_errors = out.errors.size();
  for (Diagnostic& d : Validate(out.config)) {
    bool covered = false;
    for (size_t i = 0; i < mapping_errors && !covered; ++i) {
      covered = Covers(out.errors[i].path, d.path);
    }
    if (!covered) out.errors.push_back(std::move(d));
  }
  return out;
}

Loaded LoadConfigFile(const std::string& path) {
  auto fail = [&](std::string why) {
    Loaded out;
    out.errors.push_back({"", absl::StrCat("cannot read ", Quote(path), ": ", why)});
    return out;
  };
  base::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return fail(std::strerror(errno));
  std::string text;
  char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(std::strerror(errno));
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxFileBytes) {
      return fail(absl::StrCat("larger than ", kMaxFileBytes >> 20, " MiB"));
    }
  }
  return ParseConfigText(text);
}

}  // namespace ferry::config
