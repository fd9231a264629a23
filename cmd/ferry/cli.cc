#include "cmd/ferry/cli.h"

#include <signal.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "cmd/ferry/flags.h"
#include "cmd/ferry/history.h"
#include "cmd/ferry/import.h"
#include "cmd/ferry/pipe.h"
#include "cmd/ferry/version.h"
#include "pkg/base/log.h"
#include "pkg/base/privileges.h"
#include "pkg/config/loader.h"
#include "pkg/metrics/progress.h"
#include "pkg/net/address.h"
#include "pkg/server/server.h"

namespace ferry::cli {
namespace {

constexpr int kUsageError = 2;
constexpr const char* kDefaultAdmin = "127.0.0.1:9901";

constexpr const char* kTopUsage = R"(ferry: a TCP relay.

Usage: ferry COMMAND [FLAGS] [ARGS]

Commands:
  forward LISTEN TARGET...   relay one listen address to its targets
  run --config FILE          run every rule of a config file (YAML or JSON)
  validate --config FILE     check a config file and print every error
  pipe SOURCE DEST           one direction between stdin/stdout and TCP (tcppipe)
  import rinetd FILE         print a rinetd.conf as ferry YAML
  history show|set|reset FILE [ENDPOINT [BYTES]]
                             read and edit a byte-history file
  version                    print the version

Run 'ferry COMMAND --help' for the flags of a command.
)";

constexpr const char* kCommonFlags = R"(
Common flags:
  --log-format text|json     log line format (default text)
  --log-level LEVEL          debug, info, warn or error (default info)
  --workers N                worker threads (default: the config's, else the CPUs allowed)
)";

constexpr const char* kForwardUsage = R"(Usage: ferry forward [FLAGS] LISTEN TARGET [TARGET...]

Relays every connection to LISTEN to the first TARGET that answers (a host
name means every address it resolves to). Addresses: HOST:PORT, [IPv6]:PORT,
:PORT (every interface) or unix:/path.

Flags:
  --name NAME                the rule's name (default forward)
  --allow CIDR               allow only these clients (repeatable)
  --deny CIDR                refuse these clients (repeatable; deny wins)
  --connect-timeout DUR      per connect attempt (default 5s)
  --connect-attempts N       attempts over the endpoints (default 3)
  --idle-timeout DUR         close after no bytes either way (default 15m, 0s = never)
  --half-close-timeout DUR   close a half-closed connection after (default 60s)
  --max-lifetime DUR         close any connection after (default unlimited)
  --max-connections N        concurrent connections (default unlimited)
  --insert-file FILE         write FILE's bytes (at most 65280) to the target first
  --rate BYTES               bytes per second per connection, each way (512K, 10M)
  --proxy-protocol v1|v2     tell the target who the client is with a PROXY header
  --progress                 bytes and rate relayed, on stderr once a second
  --user NAME                drop root for NAME once bound (keeps the right to bind
                             ports below 1024)
  --handoff PATH             take the listening sockets of the ferry serving PATH
                             (an upgrade: nothing refused or reset), then serve
                             ours there for the next one
  --admin ADDR               serve the status page (/), /metrics, /healthz, /readyz and
                             /endpoints on ADDR (default off)
)";

constexpr const char* kRunUsage = R"(Usage: ferry run --config FILE [--user NAME] [--handoff PATH]

Runs every rule of FILE until SIGTERM or SIGINT, then drains (drain.delay,
drain.timeout) and exits 0. FILE is watched (a Kubernetes ConfigMap update
included) and re-read on SIGHUP: a valid change applies without dropping a
connection, an invalid one is logged and the running config stays. SIGUSR1
reopens the access log files. --user drops root once bound. --handoff PATH
takes the listening sockets of the ferry serving PATH (start the new binary
with the same PATH, then SIGTERM the old one: no client is refused or reset),
then serves this ferry's there for the next upgrade. The admin endpoint (status page at /, /metrics,
/healthz, /readyz, /endpoints, and /config with admin.expose_config) listens
on admin.listen: 127.0.0.1:9901 when the file has no admin section, off with
admin: {listen: ""}.
)";

constexpr const char* kValidateUsage = R"(Usage: ferry validate --config FILE [--check-files]

Prints every error of FILE with the path of its field and exits 1, or prints
"FILE: ok" and exits 0. --check-files also checks that every file the config
names (insert.file) can be read here.
)";

// Flags seen on the command line, in order; positional arguments apart.
struct Parsed {
  std::multimap<std::string, std::string> flags;
  std::vector<std::string> positional;
  bool help = false;
};

struct FlagSpec {
  bool takes_value;
};

// Parses `args` against `specs` (plus the common flags). Usage errors are one
// line naming the flag.
bool ParseFlags(const std::vector<std::string>& args, size_t start,
                const std::map<std::string, FlagSpec>& specs, Parsed* out, std::string* error) {
  std::map<std::string, FlagSpec> all = specs;
  all["log-format"] = {true};
  all["log-level"] = {true};
  all["workers"] = {true};
  for (size_t i = start; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      for (++i; i < args.size(); ++i) out->positional.push_back(args[i]);
      break;
    }
    if (a == "-h" || a == "--help") {
      out->help = true;
      continue;
    }
    if (a.size() < 2 || a[0] != '-') {
      out->positional.push_back(a);
      continue;
    }
    std::string name = a.substr(a[1] == '-' ? 2 : 1);
    std::optional<std::string> value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    auto it = all.find(name);
    if (it == all.end()) {
      *error = absl::StrCat("unknown flag ", a.substr(0, a.find('=')));
      return false;
    }
    if (it->second.takes_value) {
      if (!value) {
        if (i + 1 >= args.size()) {
          *error = absl::StrCat("flag --", name, " needs a value");
          return false;
        }
        value = args[++i];
      }
    } else if (value) {
      *error = absl::StrCat("flag --", name, " takes no value");
      return false;
    }
    out->flags.emplace(name, value.value_or(""));
  }
  return true;
}

std::optional<std::string> Last(const Parsed& p, const std::string& name) {
  auto range = p.flags.equal_range(name);
  if (range.first == range.second) return std::nullopt;
  return std::prev(range.second)->second;
}

std::vector<std::string> All(const Parsed& p, const std::string& name) {
  std::vector<std::string> out;
  auto range = p.flags.equal_range(name);
  for (auto it = range.first; it != range.second; ++it) out.push_back(it->second);
  return out;
}

class Command {
 public:
  Command(std::ostream& out, std::ostream& err, std::string name)
      : out_(out), err_(err), name_(std::move(name)) {}

  int Usage(const std::string& message) {
    err_ << "ferry " << name_ << ": " << message << "\n";
    return kUsageError;
  }

  // Applies the common flags; returns false (after printing) on a bad value.
  bool ApplyCommon(const Parsed& p, int* workers) {
    base::LogLevel level = base::LogLevel::kInfo;
    base::LogFormat format = base::LogFormat::kText;
    if (auto v = Last(p, "log-level"); v && !base::ParseLogLevel(*v, &level)) {
      Usage(absl::StrCat("bad --log-level \"", *v, "\" (debug, info, warn, error)"));
      return false;
    }
    if (auto v = Last(p, "log-format"); v && !base::ParseLogFormat(*v, &format)) {
      Usage(absl::StrCat("bad --log-format \"", *v, "\" (text, json)"));
      return false;
    }
    base::SetLogOptions(level, format);
    if (auto v = Last(p, "workers")) {
      if (!absl::SimpleAtoi(*v, workers) || *workers < 1 || *workers > 1024) {
        Usage(absl::StrCat("bad --workers \"", *v, "\" (1..1024)"));
        return false;
      }
    }
    return true;
  }

  // Runs a validated config until a signal ends it.
  // What Serve does besides running the config.
  struct ServeOptions {
    server::Server::Options server;
    std::string user;           // --user: drop root to it once bound
    std::string progress_rule;  // --progress: this rule's bytes on stderr
  };

  int Serve(const config::v1::Config& config, int workers, ServeOptions options = {}) {
    options.server.workers = workers;
    server::BlockTerminationSignals();  // before any thread starts
    auto server = server::Server::Create(config, options.server);
    if (!server.ok()) {
      base::Log(base::LogLevel::kError, "cannot start",
                {{"error", std::string(server.status().message())}});
      return 1;
    }
    if (!options.user.empty()) {
      // Bound: root is no longer needed, except to bind a low port at a
      // reload, which the capability kept covers. The threads that bind
      // (control, workers) start after this, so they inherit it.
      if (absl::Status s = base::DropPrivileges(options.user); !s.ok()) {
        base::Log(base::LogLevel::kError, "cannot drop privileges",
                  {{"user", options.user}, {"error", std::string(s.message())}});
        return 1;
      }
      base::Log(base::LogLevel::kInfo, "privileges dropped", {{"user", options.user}});
    }
    std::optional<metrics::ProgressReporter> progress;
    if (!options.progress_rule.empty()) {
      server::Server* s = server->get();
      std::string rule = options.progress_rule;
      progress.emplace(err_, [s, rule] {
        server::RuleTotals t = s->Totals(rule);
        return t.bytes_to_target + t.bytes_to_client;
      });
    }
    (*server)->RunUntilSignal();
    if (progress) progress->Stop();
    return 0;
  }

  std::ostream& out_;
  std::ostream& err_;
  std::string name_;
};

bool SetDuration(const std::string& flag, const std::string& text, google::protobuf::Duration* d,
                 std::string* error) {
  absl::Duration parsed;
  if (!absl::ParseDuration(text, &parsed) || parsed < absl::ZeroDuration() ||
      parsed == absl::InfiniteDuration()) {
    *error = absl::StrCat("bad --", flag, " \"", text, "\" (a duration such as 500ms, 5s, 1h30m)");
    return false;
  }
  int64_t nanos = absl::ToInt64Nanoseconds(parsed);
  d->set_seconds(nanos / 1'000'000'000);
  d->set_nanos(static_cast<int32_t>(nanos % 1'000'000'000));
  return true;
}

bool SetCount(const std::string& flag, const std::string& text, uint32_t max, uint32_t* value,
              std::string* error) {
  if (!absl::SimpleAtoi(text, value) || *value > max) {
    *error = absl::StrCat("bad --", flag, " \"", text, "\" (0..", max, ")");
    return false;
  }
  return true;
}

int Forward(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Command cmd(out, err, "forward");
  Parsed p;
  std::string error;
  const std::map<std::string, FlagSpec> specs = {
      {"name", {true}},
      {"allow", {true}},
      {"deny", {true}},
      {"connect-timeout", {true}},
      {"connect-attempts", {true}},
      {"idle-timeout", {true}},
      {"half-close-timeout", {true}},
      {"max-lifetime", {true}},
      {"max-connections", {true}},
      {"admin", {true}},
      {"insert-file", {true}},
      {"proxy-protocol", {true}},
      {"progress", {false}},
      {"user", {true}},
      {"rate", {true}},
      {"handoff", {true}},
  };
  if (!ParseFlags(args, 1, specs, &p, &error)) return cmd.Usage(error);
  if (p.help) {
    out << kForwardUsage << kCommonFlags;
    return 0;
  }
  int workers = 0;
  if (!cmd.ApplyCommon(p, &workers)) return kUsageError;
  if (p.positional.size() < 2) return cmd.Usage("needs LISTEN and at least one TARGET");

  config::v1::Config config;
  config::v1::Rule* rule = config.add_rules();
  rule->set_name(Last(p, "name").value_or("forward"));
  if (auto hp = net::ParseHostPort(p.positional[0]); !hp.ok()) {
    return cmd.Usage(
        absl::StrCat("bad listen address \"", p.positional[0], "\": ", hp.status().message()));
  }
  rule->set_listen(p.positional[0]);
  for (size_t i = 1; i < p.positional.size(); ++i) {
    if (auto hp = net::ParseHostPort(p.positional[i]); !hp.ok()) {
      return cmd.Usage(
          absl::StrCat("bad target address \"", p.positional[i], "\": ", hp.status().message()));
    }
    rule->add_targets()->set_address(p.positional[i]);
  }
  for (const auto& c : All(p, "allow")) rule->add_allow(c);
  for (const auto& c : All(p, "deny")) rule->add_deny(c);
  struct DurationFlag {
    const char* flag;
    google::protobuf::Duration* field;
  };
  for (const DurationFlag& f : {
           DurationFlag{"connect-timeout", rule->mutable_connect_timeout()},
           DurationFlag{"idle-timeout", rule->mutable_idle_timeout()},
           DurationFlag{"half-close-timeout", rule->mutable_half_close_timeout()},
           DurationFlag{"max-lifetime", rule->mutable_max_lifetime()},
       }) {
    if (auto v = Last(p, f.flag); v && !SetDuration(f.flag, *v, f.field, &error)) {
      return cmd.Usage(error);
    }
  }
  // mutable_* above marked every duration present: clear the ones not given.
  if (!Last(p, "connect-timeout")) rule->clear_connect_timeout();
  if (!Last(p, "idle-timeout")) rule->clear_idle_timeout();
  if (!Last(p, "half-close-timeout")) rule->clear_half_close_timeout();
  if (!Last(p, "max-lifetime")) rule->clear_max_lifetime();
  uint32_t n = 0;
  if (auto v = Last(p, "connect-attempts")) {
    if (!SetCount("connect-attempts", *v, 100, &n, &error)) return cmd.Usage(error);
    rule->set_connect_attempts(n);
  }
  if (auto v = Last(p, "max-connections")) {
    if (!SetCount("max-connections", *v, 10'000'000, &n, &error)) return cmd.Usage(error);
    rule->set_max_connections(n);
  }
  if (auto v = Last(p, "admin")) config.mutable_admin()->set_listen(*v);
  if (auto v = Last(p, "insert-file")) rule->mutable_insert()->set_file(*v);
  if (auto v = Last(p, "rate")) {
    uint64_t rate = 0;
    if (!ParseRate(*v, &rate)) {
      return cmd.Usage(absl::StrCat("bad --rate \"", *v,
                                    "\" (bytes per second: a positive integer, K, M or G for "
                                    "IEC multiples, e.g. 512K)"));
    }
    rule->mutable_rate_limit()->set_connection_bytes_per_second(rate);
  }
  if (auto v = Last(p, "proxy-protocol")) {
    if (*v == "v1") {
      rule->mutable_proxy_protocol()->set_send(config::v1::ProxyProtocol::VERSION_V1);
    } else if (*v == "v2") {
      rule->mutable_proxy_protocol()->set_send(config::v1::ProxyProtocol::VERSION_V2);
    } else {
      return cmd.Usage(absl::StrCat("bad --proxy-protocol \"", *v, "\" (v1, v2)"));
    }
  }
  std::vector<config::Diagnostic> problems = config::Validate(config);
  if (!problems.empty()) {
    // Map config paths back to what the user typed.
    return cmd.Usage(problems.front().ToString());
  }
  Command::ServeOptions options;
  if (auto v = Last(p, "user")) options.user = *v;
  if (auto v = Last(p, "handoff")) options.server.handoff_path = *v;
  if (Last(p, "progress")) options.progress_rule = rule->name();
  return cmd.Serve(config, workers, options);
}

int Run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Command cmd(out, err, "run");
  Parsed p;
  std::string error;
  if (!ParseFlags(args, 1, {{"config", {true}}, {"user", {true}}, {"handoff", {true}}}, &p,
                  &error)) {
    return cmd.Usage(error);
  }
  if (p.help) {
    out << kRunUsage << kCommonFlags;
    return 0;
  }
  int workers = 0;
  if (!cmd.ApplyCommon(p, &workers)) return kUsageError;
  if (!p.positional.empty())
    return cmd.Usage(absl::StrCat("unexpected argument \"", p.positional[0], "\""));
  auto path = Last(p, "config");
  if (!path) return cmd.Usage("needs --config FILE");
  // Read once: what runs and the version the watcher compares with must be
  // the same bytes.
  std::ifstream file(*path, std::ios::binary);
  if (!file) {
    err << *path << ": cannot read \"" << *path << "\": " << std::strerror(errno) << "\n";
    return 1;
  }
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  config::Loaded loaded = config::ParseConfigText(text);
  if (!loaded.ok()) {
    for (const auto& d : loaded.errors) err << *path << ": " << d.ToString() << "\n";
    return 1;
  }
  Command::ServeOptions options;
  options.server.config_path = *path;
  options.server.config_version = config::ContentHash(text);
  // The admin endpoint is on unless the file says otherwise (admin: {listen: ""}).
  options.server.default_admin = kDefaultAdmin;
  if (auto v = Last(p, "user")) options.user = *v;
  if (auto v = Last(p, "handoff")) options.server.handoff_path = *v;
  return cmd.Serve(loaded.config, workers, options);
}

int Validate(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Command cmd(out, err, "validate");
  Parsed p;
  std::string error;
  if (!ParseFlags(args, 1, {{"config", {true}}, {"check-files", {false}}}, &p, &error)) {
    return cmd.Usage(error);
  }
  if (p.help) {
    out << kValidateUsage;
    return 0;
  }
  int workers = 0;
  if (!cmd.ApplyCommon(p, &workers)) return kUsageError;
  if (!p.positional.empty())
    return cmd.Usage(absl::StrCat("unexpected argument \"", p.positional[0], "\""));
  auto path = Last(p, "config");
  if (!path) return cmd.Usage("needs --config FILE");
  config::Loaded loaded = config::LoadConfigFile(*path);
  if (loaded.ok() && Last(p, "check-files")) {
    // Files the config names must be readable where it will run.
    for (int i = 0; i < loaded.config.rules_size(); ++i) {
      const std::string& file = loaded.config.rules(i).insert().file();
      if (file.empty()) continue;
      if (std::FILE* f = std::fopen(file.c_str(), "rb")) {
        std::fclose(f);
      } else {
        loaded.errors.push_back(
            {absl::StrCat("rules[", i, "].insert.file"),
             absl::StrCat("cannot read \"", file, "\": ", std::strerror(errno))});
      }
    }
  }
  if (!loaded.ok()) {
    for (const auto& d : loaded.errors) err << *path << ": " << d.ToString() << "\n";
    return 1;
  }
  out << *path << ": ok\n";
  return 0;
}

}  // namespace

int Main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  // A peer that resets while splice() writes to it must not kill the process.
  signal(SIGPIPE, SIG_IGN);
  if (args.empty()) {
    err << kTopUsage;
    return kUsageError;
  }
  const std::string& command = args[0];
  if (command == "-h" || command == "--help" || command == "help") {
    out << kTopUsage;
    return 0;
  }
  if (command == "version" || command == "--version") {
    out << "ferry " << FERRY_VERSION << " (revision " << FERRY_REVISION << ")\n";
    return 0;
  }
  if (command == "forward") return Forward(args, out, err);
  if (command == "run") return Run(args, out, err);
  if (command == "validate") return Validate(args, out, err);
  if (command == "pipe") return Pipe(args, out, err);
  if (command == "import") return Import(args, out, err);
  if (command == "history") return History(args, out, err);
  if (command[0] == '-') {
    err << "ferry: unknown flag " << command << " (flags follow the command)\n";
    return kUsageError;
  }
  err << "ferry: unknown command \"" << command << "\"; run 'ferry --help'\n";
  return kUsageError;
}

}  // namespace ferry::cli
