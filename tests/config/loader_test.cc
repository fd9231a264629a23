#include "pkg/config/loader.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace ferry::config {
namespace {

using ::ferry::config::v1::Config;
using ::ferry::config::v1::Rule;
using ::google::protobuf::TextFormat;
using ::google::protobuf::util::MessageDifferencer;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::IsEmpty;

std::vector<std::string> Strings(const std::vector<Diagnostic>& diagnostics) {
  std::vector<std::string> out;
  for (const Diagnostic& d : diagnostics) out.push_back(d.ToString());
  return out;
}

Config TextProto(const std::string& text) {
  Config config;
  EXPECT_TRUE(TextFormat::ParseFromString(text, &config)) << text;
  return config;
}

// The fields of a valid rule, in YAML flow style, to extend in a case.
constexpr char kRule[] = R"(name: web, listen: ":8080", targets: ["127.0.0.1:80"])";

// A config whose only rule is kRule plus `extra` ("connect_attempts: 101").
std::string RuleWith(const std::string& extra) {
  return "rules: [{" + std::string(kRule) + ", " + extra + "}]\n";
}

std::string WriteTempFile(const std::string& name, const std::string& text) {
  std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

// ---------------------------------------------------------------------------
// Good files.

constexpr char kFullYaml[] = R"(# every field this build implements
workers: 4
drain: { delay: "5s", timeout: "1h30m" }
rules:
  - name: web
    listen: "127.0.0.1:8080"
    targets: ["10.0.0.1:80", {address: "backend.default.svc:8080"}, "unix:/run/app.sock"]
    allow: ["10.0.0.0/8", "fd00::/8"]
    deny: ["10.9.0.0/16"]
    connect_timeout: "500ms"
    connect_attempts: 5
    idle_timeout: "15m"
    half_close_timeout: "60s"
    max_lifetime: "0s"
    max_connections: 1000
    keepalive: { idle: "60s", interval: "10s", count: 6 }
  - name: ssh.v6
    listen: "[::1]:2222"
    targets: ["[fd00::7]:22"]
)";

constexpr char kFullJson[] = R"({
  "workers": 4,
  "drain": {"delay": "5s", "timeout": "1h30m"},
  "rules": [
    {
      "name": "web",
      "listen": "127.0.0.1:8080",
      "targets": ["10.0.0.1:80", {"address": "backend.default.svc:8080"}, "unix:/run/app.sock"],
      "allow": ["10.0.0.0/8", "fd00::/8"],
      "deny": ["10.9.0.0/16"],
      "connect_timeout": "500ms",
      "connect_attempts": 5,
      "idle_timeout": "15m",
      "half_close_timeout": "60s",
      "max_lifetime": "0s",
      "max_connections": 1000,
      "keepalive": {"idle": "60s", "interval": "10s", "count": 6}
    },
    {"name": "ssh.v6", "listen": "[::1]:2222", "targets": ["[fd00::7]:22"]}
  ]
})";

constexpr char kFullProto[] = R"pb(
  workers: 4
  drain {
    delay { seconds: 5 }
    timeout { seconds: 5400 }
  }
  rules {
    name: "web"
    listen: "127.0.0.1:8080"
    targets { address: "10.0.0.1:80" }
    targets { address: "backend.default.svc:8080" }
    targets { address: "unix:/run/app.sock" }
    allow: "10.0.0.0/8"
    allow: "fd00::/8"
    deny: "10.9.0.0/16"
    connect_timeout { nanos: 500000000 }
    connect_attempts: 5
    idle_timeout { seconds: 900 }
    half_close_timeout { seconds: 60 }
    max_lifetime {}
    max_connections: 1000
    keepalive {
      idle { seconds: 60 }
      interval { seconds: 10 }
      count: 6
    }
  }
  rules {
    name: "ssh.v6"
    listen: "[::1]:2222"
    targets { address: "[fd00::7]:22" }
  }
)pb";

TEST(ParseConfigTextTest, YamlMapsEveryImplementedField) {
  Loaded loaded = ParseConfigText(kFullYaml);
  ASSERT_THAT(Strings(loaded.errors), IsEmpty());
  EXPECT_TRUE(MessageDifferencer::Equals(loaded.config, TextProto(kFullProto)))
      << loaded.config.DebugString();
}

TEST(ParseConfigTextTest, JsonAndYamlGiveEqualProtos) {
  Loaded yaml = ParseConfigText(kFullYaml);
  Loaded json = ParseConfigText(kFullJson);
  ASSERT_THAT(Strings(json.errors), IsEmpty());
  EXPECT_TRUE(MessageDifferencer::Equals(yaml.config, json.config)) << json.config.DebugString();
}

TEST(ParseConfigTextTest, PlainStringAndObjectTargetsAreEqual) {
  Loaded plain = ParseConfigText(R"(rules: [{name: a, listen: ":1", targets: ["h:80"]}])");
  Loaded object =
      ParseConfigText(R"(rules: [{name: a, listen: ":1", targets: [{address: "h:80"}]}])");
  ASSERT_THAT(Strings(plain.errors), IsEmpty());
  ASSERT_THAT(Strings(object.errors), IsEmpty());
  EXPECT_TRUE(MessageDifferencer::Equals(plain.config, object.config));
  EXPECT_EQ(plain.config.rules(0).targets(0).address(), "h:80");
}

TEST(ParseConfigTextTest, AbsentFieldsStayUnset) {
  Loaded loaded = ParseConfigText(RuleWith("max_connections: 0"));
  ASSERT_THAT(Strings(loaded.errors), IsEmpty());
  const Config& c = loaded.config;
  EXPECT_EQ(c.workers(), 0u);
  EXPECT_FALSE(c.has_drain());
  EXPECT_FALSE(c.has_admin());
  const Rule& r = c.rules(0);
  EXPECT_FALSE(r.has_connect_timeout());
  EXPECT_FALSE(r.has_idle_timeout());
  EXPECT_FALSE(r.has_keepalive());
  EXPECT_EQ(r.connect_attempts(), 0u);
  EXPECT_EQ(r.targets(0).weight(), 0u);
  EXPECT_FALSE(r.targets(0).backup());
  EXPECT_TRUE(r.allow().empty());
}

TEST(ParseConfigTextTest, ExplicitNullKeepsTheDefault) {
  Loaded loaded = ParseConfigText(std::string("workers: null\ndrain: ~\n") +
                                  RuleWith("idle_timeout: null, allow: ~"));
  ASSERT_THAT(Strings(loaded.errors), IsEmpty());
  EXPECT_EQ(loaded.config.workers(), 0u);
  EXPECT_FALSE(loaded.config.has_drain());
  EXPECT_FALSE(loaded.config.rules(0).has_idle_timeout());
}

TEST(ParseConfigTextTest, PortZeroListenersMayRepeat) {
  Loaded loaded = ParseConfigText(R"(rules:
  - {name: a, listen: "127.0.0.1:0", targets: ["h:1"]}
  - {name: b, listen: "127.0.0.1:0", targets: ["h:1"]}
  - {name: c, listen: "127.0.0.1:80", targets: ["h:1"]}
  - {name: d, listen: "127.0.0.2:80", targets: ["h:1"]}
  - {name: e, listen: ":80", targets: ["h:1"]}
)");
  EXPECT_THAT(Strings(loaded.errors), IsEmpty());
}

struct DurationCase {
  const char* text;
  int64_t seconds;
  int32_t nanos;
};

class DurationTest : public ::testing::TestWithParam<DurationCase> {};

TEST_P(DurationTest, GoStyleStringsConvert) {
  const DurationCase& c = GetParam();
  Loaded loaded = ParseConfigText(std::string("drain: {timeout: \"") + c.text + "\"}\n" +
                                  RuleWith("max_connections: 1"));
  ASSERT_THAT(Strings(loaded.errors), IsEmpty());
  EXPECT_EQ(loaded.config.drain().timeout().seconds(), c.seconds);
  EXPECT_EQ(loaded.config.drain().timeout().nanos(), c.nanos);
}

INSTANTIATE_TEST_SUITE_P(Durations, DurationTest,
                         ::testing::Values(DurationCase{"500ms", 0, 500000000},
                                           DurationCase{"5s", 5, 0}, DurationCase{"10m", 600, 0},
                                           DurationCase{"1h30m", 5400, 0}, DurationCase{"0s", 0, 0},
                                           DurationCase{"0", 0, 0},
                                           DurationCase{"1.5s", 1, 500000000},
                                           DurationCase{"250us", 0, 250000},
                                           DurationCase{"2h45m30.5s", 9930, 500000000}));

TEST(ParseConfigTextTest, QuickstartExampleParses) {
  Loaded loaded = LoadConfigFile(std::string(FERRY_SOURCE_DIR) + "/examples/quickstart.yaml");
  EXPECT_THAT(Strings(loaded.errors), IsEmpty());
  EXPECT_GE(loaded.config.rules_size(), 1);
}

// ---------------------------------------------------------------------------
// Bad files: every kind of error, with its exact text and path.

struct BadCase {
  const char* name;
  std::string text;
  std::vector<std::string> errors;
};

std::ostream& operator<<(std::ostream& os, const BadCase& c) { return os << c.name; }

class BadFileTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadFileTest, ReportsExactErrors) {
  Loaded loaded = ParseConfigText(GetParam().text);
  EXPECT_THAT(Strings(loaded.errors), ElementsAreArray(GetParam().errors)) << GetParam().text;
}

const BadCase kBadFiles[] = {
    // insert and delay.
    {"InsertBadBase64", RuleWith("insert: {base64: \"not*base64\"}"),
     {"rules[0].insert.base64: not valid base64"}},
    {"InsertEmpty", RuleWith("insert: {}"),
     {"rules[0].insert: needs one of file, text or base64"}},
    {"InsertTooBig", RuleWith("insert: {text: \"" + std::string(65281, 'x') + "\"}"),
     {"rules[0].insert: 65281 bytes, more than the maximum of 65280"}},
    {"DelayNegative", RuleWith("delay: \"-1s\""),
     {R"(rules[0].delay: negative duration "-1s")"}},
    // The file as a whole.
    {"YamlSyntax", "rules: [\n", {"line 2, column 1: end of sequence flow not found"}},
    {"YamlBadIndent",
     "rules:\n  - name: a\n   listen: b\n",
     {"line 3, column 4: end of sequence not found"}},
    {"JsonSyntax", R"({"rules": [})", {"line 1, column 12: illegal flow end"}},
    {"TwoDocuments", "workers: 1\n---\nworkers: 2\n", {"expected one YAML document, found 2"}},
    {"TopLevelList", "- a\n", {"expected a mapping of config fields, got a list"}},
    {"TopLevelScalar", "hello\n", {"expected a mapping of config fields, got \"hello\""}},
    {"EmptyFile", "", {"rules: at least one rule is required"}},
    {"OnlyComments", "# nothing\n", {"rules: at least one rule is required"}},

    // Keys.
    {"UnknownTopLevelKey",
     "wrkers: 2\n" + RuleWith("max_connections: 1"),
     {"wrkers: unknown field"}},
    {"UnknownRuleKey", RuleWith("lisen: x"), {"rules[0].lisen: unknown field"}},
    {"UnknownNestedKey",
     "drain: {dely: 1s}\n" + RuleWith("max_connections: 1"),
     {"drain.dely: unknown field"}},
    {"CamelCaseKeyIsUnknown", RuleWith("idleTimeout: 1s"), {"rules[0].idleTimeout: unknown field"}},
    {"DuplicateKey",
     "rules:\n  - name: web\n    listen: \":1\"\n    targets: [\"h:1\"]\n    listen: \":2\"\n",
     {"rules[0].listen: duplicate key (first on line 3)"}},
    {"DuplicateTopLevelKey",
     "workers: 1\nworkers: 2\n" + RuleWith("max_connections: 1"),
     {"workers: duplicate key (first on line 1)"}},
    {"DuplicateJsonKey",
     R"({"workers": 1, "workers": 1,)"
     R"( "rules": [{"name": "a", "listen": ":1", "targets": ["h:1"]}]})",
     {"workers: duplicate key (first on line 1)"}},

    // Fields the schema has but this build does not implement.
    {"HubNotImplemented",
     "rendezvous: {hub: {tunnel_listen: \":7000\"}}\n" + RuleWith("max_connections: 1"),
     {"rendezvous: not implemented in this build"}},
    {"EmptyDnsNotImplemented",
     "dns:\n" + RuleWith("max_connections: 1"),
     {"dns: not implemented in this build"}},
    {"AdminListenMustBeIp",
     "admin: {listen: \"unix:/run/admin.sock\"}\n" + RuleWith("max_connections: 1"),
     {R"(admin.listen: must be IP:PORT, [IPv6]:PORT or :PORT, not "unix:/run/admin.sock")"}},
    {"AdminListenBadPort",
     "admin: {listen: \"127.0.0.1:99999\"}\n" + RuleWith("max_connections: 1"),
     {"admin.listen: port 99999 out of range"}},
    {"DnsNotImplemented",
     "dns: {servers: []}\n" + RuleWith("max_connections: 1"),
     {"dns: not implemented in this build"}},
    {"RendezvousNotImplemented",
     "rendezvous: {}\n" + RuleWith("max_connections: 1"),
     {"rendezvous: not implemented in this build"}},
    {"BalanceNotImplemented",
     RuleWith("balance: least_bytes"),
     {"rules[0].balance: not implemented in this build"}},
    {"ProxyProtocolAcceptNeedsTrusted",
     RuleWith("proxy_protocol: {accept: true}"),
     {"rules[0].proxy_protocol.trusted: required with accept: the CIDRs of the proxies whose "
      "header is believed"}},
    {"ProxyProtocolTrustedWithoutAccept",
     RuleWith("proxy_protocol: {send: v1, trusted: [\"10.0.0.0/8\"]}"),
     {"rules[0].proxy_protocol.trusted: only means something with accept: true"}},
    {"ProxyProtocolBadTrustedCidr",
     RuleWith("proxy_protocol: {accept: true, trusted: [\"10.0.0.0/33\"]}"),
     {"rules[0].proxy_protocol.trusted[0]: bad prefix length 33"}},
    {"ProxyProtocolBadVersion",
     RuleWith("proxy_protocol: {send: v3}"),
     {"rules[0].proxy_protocol.send: unknown value \"v3\" (allowed: v1, v2)"}},
    {"ProxyProtocolZeroTimeout",
     RuleWith("proxy_protocol: {accept: true, trusted: [\"127.0.0.1\"], timeout: 0s}"),
     {"rules[0].proxy_protocol.timeout: must be more than 0s"}},
    {"AllowTargetsWithoutRedirect",
     RuleWith("allow_targets: [\"10.0.0.0/8\"]"),
     {"rules[0].allow_targets: only means something with transparent: redirect"}},
    {"RedirectBadAllowTarget",
     R"(rules: [{name: a, listen: ":1", transparent: redirect, allow_targets: ["10.0.0.0/40"]}])",
     {"rules[0].allow_targets[0]: bad prefix length 40"}},
    {"CloseUnknown",
     RuleWith("close: full"),
     {"rules[0].close: unknown value \"full\" (allowed: half, lazy)"}},
    {"AccessLogUnknownFormat",
     RuleWith("access_log: {format: apache}"),
     {"rules[0].access_log.format: unknown value \"apache\" (allowed: none, text, json, clf)"}},
    {"TargetWeightNotImplemented",
     R"(rules: [{name: a, listen: ":1", targets: ["h:1", {address: "h:2", weight: 2}]}])",
     {"rules[0].targets[1].weight: not implemented in this build"}},
    {"TargetBackupNotImplemented",
     R"(rules: [{name: a, listen: ":1", targets: [{address: "h:2", backup: false}]}])",
     {"rules[0].targets[0].backup: not implemented in this build"}},

    // Durations.
    {"DurationGarbage",
     "drain: {timeout: 5x}\n" + RuleWith("max_connections: 1"),
     {R"(drain.timeout: invalid duration "5x" (write e.g. "500ms", "5s", "10m", "1h30m"))"}},
    {"DurationWithoutUnit",
     RuleWith("idle_timeout: 5"),
     {R"(rules[0].idle_timeout: invalid duration "5" (write e.g. "500ms", "5s", "10m", "1h30m"))"}},
    {"DurationInfinite",
     RuleWith("max_lifetime: inf"),
     {R"(rules[0].max_lifetime: invalid duration "inf")"
      R"( (write e.g. "500ms", "5s", "10m", "1h30m"))"}},
    {"DurationNegative",
     "drain: {delay: -5s}\n" + RuleWith("max_connections: 1"),
     {R"(drain.delay: negative duration "-5s")"}},
    {"DurationNotScalar",
     RuleWith("connect_timeout: [5s]"),
     {R"(rules[0].connect_timeout: expected a duration such as "5s", got a list)"}},

    // Integers.
    {"IntegerFloat",
     "workers: 1.5\n" + RuleWith("max_connections: 1"),
     {R"(workers: expected an integer, got "1.5")"}},
    {"IntegerQuoted",
     "workers: \"4\"\n" + RuleWith("max_connections: 1"),
     {R"(workers: expected an integer, got "4")"}},
    {"IntegerHex",
     RuleWith("max_connections: 0x10"),
     {R"(rules[0].max_connections: expected an integer, got "0x10")"}},
    {"IntegerBoolean",
     RuleWith("max_connections: true"),
     {R"(rules[0].max_connections: expected an integer, got "true")"}},
    {"IntegerList",
     RuleWith("max_connections: [1]"),
     {"rules[0].max_connections: expected an integer, got a list"}},
    {"UnsignedNegative",
     "workers: -1\n" + RuleWith("max_connections: 1"),
     {"workers: -1 out of range (0..4294967295)"}},
    {"Uint32TooBig",
     RuleWith("max_connections: 4294967296"),
     {"rules[0].max_connections: 4294967296 out of range (0..4294967295)"}},
    {"IntegerBeyondUint64",
     RuleWith("max_connections: 99999999999999999999"),
     {"rules[0].max_connections: 99999999999999999999 out of range (0..4294967295)"}},

    // Type mismatches.
    {"RulesNotList", "rules: {name: web}\n", {"rules: expected a list"}},
    {"RuleNotMapping", "rules: [web]\n", {"rules[0]: expected a mapping"}},
    {"DrainNotMapping",
     "drain: 5s\n" + RuleWith("max_connections: 1"),
     {"drain: expected a mapping"}},
    {"ListenNotString",
     R"(rules: [{name: a, listen: [":1"], targets: ["h:1"]}])",
     {"rules[0].listen: expected a string, got a list"}},
    {"TargetsNotList",
     R"(rules: [{name: a, listen: ":1", targets: "h:1"}])",
     {"rules[0].targets: expected a list"}},
    {"TargetNotStringOrMapping",
     R"(rules: [{name: a, listen: ":1", targets: [["h:1"]]}])",
     {"rules[0].targets[0]: expected a string or a mapping"}},
    {"AllowNotList", RuleWith("allow: 10.0.0.0/8"), {"rules[0].allow: expected a list"}},
    {"AllowElementNotString",
     RuleWith("allow: [{a: b}]"),
     {"rules[0].allow[0]: expected a string, got a mapping"}},

    // Semantics (Validate).
    {"NoRules", "rules: []\n", {"rules: at least one rule is required"}},
    {"NameMissing", R"(rules: [{listen: ":1", targets: ["h:1"]}])", {"rules[0].name: required"}},
    {"NameUppercase",
     R"(rules: [{name: Web, listen: ":1", targets: ["h:1"]}])",
     {R"(rules[0].name: invalid name "Web": must start with a-z or 0-9 (names match )"
      R"([a-z0-9][a-z0-9_.-]{0,62}))"}},
    {"NameBadCharacter",
     R"(rules: [{name: "web/1", listen: ":1", targets: ["h:1"]}])",
     {R"(rules[0].name: invalid name "web/1": "/" is not allowed (names match )"
      R"([a-z0-9][a-z0-9_.-]{0,62}))"}},
    {"NameTooLong",
     R"(rules: [{name: )" + std::string(64, 'a') + R"(, listen: ":1", targets: ["h:1"]}])",
     {R"(rules[0].name: invalid name ")" + std::string(64, 'a') +
      R"(": longer than 63 characters (names match [a-z0-9][a-z0-9_.-]{0,62}))"}},
    {"DuplicateName",
     R"(rules:
  - {name: api, listen: ":1", targets: ["h:1"]}
  - {name: web, listen: ":2", targets: ["h:1"]}
  - {name: db, listen: ":3", targets: ["h:1"]}
  - {name: web, listen: ":4", targets: ["h:1"]}
)",
     {R"(rules[3].name: duplicate name "web" (also rules[1]))"}},
    {"ListenMissing", R"(rules: [{name: a, targets: ["h:1"]}])", {"rules[0].listen: required"}},
    {"ListenPortOutOfRange",
     R"(rules:
  - {name: a, listen: ":1", targets: ["h:1"]}
  - {name: b, listen: ":2", targets: ["h:1"]}
  - {name: c, listen: "0.0.0.0:70000", targets: ["h:1"]}
)",
     {"rules[2].listen: port 70000 out of range"}},
    {"ListenMissingPort",
     R"(rules: [{name: a, listen: "127.0.0.1", targets: ["h:1"]}])",
     {R"(rules[0].listen: missing port in "127.0.0.1")"}},
    {"ListenHostName",
     R"(rules: [{name: a, listen: "example.com:80", targets: ["h:1"]}])",
     {R"(rules[0].listen: host "example.com" is not an IP address (listen on ":PORT", IP:PORT, )"
      R"([IPv6]:PORT or unix:/path))"}},
    {"ListenDuplicate",
     R"(rules:
  - {name: a, listen: "127.0.0.1:80", targets: ["h:1"]}
  - {name: b, listen: "127.0.0.1:80", targets: ["h:1"]}
)",
     {R"(rules[1].listen: address "127.0.0.1:80" already used by rules[0])"}},
    {"ListenWildcardsOverlap",
     R"(rules:
  - {name: a, listen: ":80", targets: ["h:1"]}
  - {name: b, listen: "0.0.0.0:80", targets: ["h:1"]}
  - {name: c, listen: "[::]:80", targets: ["h:1"]}
)",
     {R"(rules[1].listen: address "0.0.0.0:80" overlaps rules[0].listen ":80")",
      R"(rules[2].listen: address "[::]:80" overlaps rules[0].listen ":80")"}},
    {"ListenMappedIpv4Overlaps",
     R"(rules:
  - {name: a, listen: "127.0.0.1:80", targets: ["h:1"]}
  - {name: b, listen: "[::ffff:127.0.0.1]:80", targets: ["h:1"]}
)",
     {R"(rules[1].listen: address "[::ffff:127.0.0.1]:80" overlaps rules[0].listen )"
      R"("127.0.0.1:80")"}},
    {"ListenUnixDuplicate",
     R"(rules:
  - {name: a, listen: "unix:/run/a.sock", targets: ["h:1"]}
  - {name: b, listen: "unix:/run/a.sock", targets: ["h:1"]}
)",
     {R"(rules[1].listen: address "unix:/run/a.sock" already used by rules[0])"}},
    {"TargetsMissing",
     R"(rules: [{name: a, listen: ":1"}])",
     {"rules[0].targets: at least one target is required"}},
    {"TargetsEmpty",
     R"(rules: [{name: a, listen: ":1", targets: []}])",
     {"rules[0].targets: at least one target is required"}},
    {"TargetMissingPort",
     R"(rules: [{name: a, listen: ":1", targets: ["h:1", "backend"]}])",
     {R"(rules[0].targets[1]: missing port in "backend")"}},
    {"TargetObjectPortOutOfRange",
     R"(rules: [{name: a, listen: ":1", targets: [{address: "h:99999"}]}])",
     {"rules[0].targets[0]: port 99999 out of range"}},
    {"TargetObjectEmpty",
     R"(rules: [{name: a, listen: ":1", targets: [{}]}])",
     {"rules[0].targets[0]: empty address"}},
    {"TargetMissingHost",
     R"(rules: [{name: a, listen: ":1", targets: [":80"]}])",
     {R"(rules[0].targets[0]: missing host in ":80")"}},
    {"TargetPortZero",
     R"(rules: [{name: a, listen: ":1", targets: ["h:0"]}])",
     {"rules[0].targets[0]: port 0 is not a valid target port"}},
    {"AllowBadPrefixLength",
     RuleWith(R"(allow: ["10.0.0.0/8", "10.0.0.0/33"])"),
     {"rules[0].allow[1]: bad prefix length 33"}},
    {"DenyBadAddress",
     RuleWith(R"(deny: ["bogus"])"),
     {R"(rules[0].deny[0]: bad address "bogus" in CIDR)"}},
    {"ConnectTimeoutTooLong",
     RuleWith("connect_timeout: 2h"),
     {"rules[0].connect_timeout: 2h exceeds the maximum of 1h"}},
    {"ConnectAttemptsTooMany",
     RuleWith("connect_attempts: 101"),
     {"rules[0].connect_attempts: 101 out of range (0..100)"}},
    {"WorkersTooMany",
     "workers: 1025\n" + RuleWith("max_connections: 1"),
     {"workers: 1025 out of range (0..1024)"}},
    {"KeepaliveCountTooBig",
     RuleWith("keepalive: {count: 128}"),
     {"rules[0].keepalive.count: 128 out of range (0..127)"}},
    {"KeepaliveIdleBelowOneSecond",
     RuleWith("keepalive: {idle: 500ms}"),
     {"rules[0].keepalive.idle: 500ms is below the minimum of 1s (0s = the kernel default)"}},
    {"KeepaliveIntervalTooLong",
     RuleWith("keepalive: {interval: 10h}"),
     {"rules[0].keepalive.interval: 10h exceeds the maximum of 32767s"}},

    // A field whose value failed to map is reported once, not again as missing.
    {"MappingErrorHidesRequired",
     R"(rules: [{name: [a], listen: ":1", targets: {}}])",
     {"rules[0].name: expected a string, got a list", "rules[0].targets: expected a list"}},

    // Several errors at once: all of them, mapping errors first, then semantic ones.
    {"ManyErrors",
     R"(workers: 1.5
dns: {servers: []}
drain: {delay: soon}
rules:
  - name: web
    listen: ":8080"
    lisen: ":8081"
    targets: ["backend", {address: "10.0.0.7:80", weight: 2}]
    allow: ["10.0.0.0/33"]
    connect_attempts: 1000
  - name: web
    listen: ":70000"
    targets: []
    keepalive: {idle: "-1s", count: 200}
  - name: Api
    listen: ":8080"
    targets: ["api:80"]
    balance: random
)",
     {
         R"(workers: expected an integer, got "1.5")",
         "dns: not implemented in this build",
         R"(drain.delay: invalid duration "soon" (write e.g. "500ms", "5s", "10m", "1h30m"))",
         "rules[0].lisen: unknown field",
         "rules[0].targets[1].weight: not implemented in this build",
         R"(rules[1].keepalive.idle: negative duration "-1s")",
         "rules[2].balance: not implemented in this build",
         R"(rules[0].targets[0]: missing port in "backend")",
         "rules[0].allow[0]: bad prefix length 33",
         "rules[0].connect_attempts: 1000 out of range (0..100)",
         R"(rules[1].name: duplicate name "web" (also rules[0]))",
         "rules[1].listen: port 70000 out of range",
         "rules[1].targets: at least one target is required",
         "rules[1].keepalive.count: 200 out of range (0..127)",
         R"(rules[2].name: invalid name "Api": must start with a-z or 0-9 (names match )"
         R"([a-z0-9][a-z0-9_.-]{0,62}))",
         R"(rules[2].listen: address ":8080" already used by rules[0])",
     }},
};

INSTANTIATE_TEST_SUITE_P(Errors, BadFileTest, ::testing::ValuesIn(kBadFiles),
                         [](const ::testing::TestParamInfo<BadCase>& info) {
                           return std::string(info.param.name);
                         });

// ---------------------------------------------------------------------------
// The mapping of field kinds no implemented field uses yet (enums, booleans,
// 64-bit integers, oneofs), through ParseTextOnto, which skips the
// implemented-field check and Validate.

TEST(ParseTextOntoTest, MapsEnumsBooleansAndOneofs) {
  Rule rule;
  std::vector<Diagnostic> errors = ParseTextOnto(R"(
name: web
transparent: redirect
balance: least_connections
close: lazy
insert: {base64: "aGk="}
rate_limit: {connection_bytes_per_second: 18446744073709551615}
proxy_protocol: {send: v2, accept: true, trusted: ["10.0.0.0/8"], timeout: 3s}
access_log: {format: json, path: stdout}
history: {scope: fleet}
targets: [{address: "h:1", weight: 2, backup: True}]
)",
                                                 rule);
  ASSERT_THAT(Strings(errors), IsEmpty());
  EXPECT_EQ(rule.transparent(), Rule::TRANSPARENT_REDIRECT);
  EXPECT_EQ(rule.balance(), Rule::BALANCE_LEAST_CONNECTIONS);
  EXPECT_EQ(rule.close(), Rule::CLOSE_LAZY);
  EXPECT_EQ(rule.insert().base64(), "aGk=");
  EXPECT_EQ(rule.rate_limit().connection_bytes_per_second(), 18446744073709551615u);
  EXPECT_EQ(rule.proxy_protocol().send(), v1::ProxyProtocol::VERSION_V2);
  EXPECT_TRUE(rule.proxy_protocol().accept());
  EXPECT_EQ(rule.proxy_protocol().timeout().seconds(), 3);
  EXPECT_EQ(rule.access_log().format(), v1::AccessLog::FORMAT_JSON);
  EXPECT_EQ(rule.history().scope(), v1::History::SCOPE_FLEET);
  EXPECT_EQ(rule.targets(0).weight(), 2u);
  EXPECT_TRUE(rule.targets(0).backup());
}

TEST(ParseTextOntoTest, DoesNotCheckImplementedFields) {
  Config config;
  EXPECT_THAT(Strings(ParseTextOnto("admin: {listen: \":9901\", expose_config: false}", config)),
              IsEmpty());
  EXPECT_EQ(config.admin().listen(), ":9901");
}

TEST(ParseTextOntoTest, ReportsBadEnumsBooleansAndOneofs) {
  Rule rule;
  EXPECT_THAT(Strings(ParseTextOnto(R"(
balance: fastest
close: HALF
transparent: unspecified
proxy_protocol: {send: 3, accept: yes}
access_log: {format: [json]}
insert: {file: /a, text: b}
rate_limit: {rule_bytes_per_second: 18446744073709551616}
)",
                                    rule)),
              ElementsAre(R"(balance: unknown value "fastest" (allowed: least_bytes, round_robin, )"
                          R"(least_connections, random, source_hash))",
                          R"(close: unknown value "HALF" (allowed: half, lazy))",
                          R"(transparent: unknown value "unspecified" (allowed: none, redirect))",
                          R"(proxy_protocol.send: unknown value "3" (allowed: v1, v2))",
                          R"(proxy_protocol.accept: expected true or false, got "yes")",
                          "access_log.format: expected one of none, text, json, clf, got a list",
                          "insert.text: only one of file, text, base64 may be set (file is)",
                          "rate_limit.rule_bytes_per_second: 18446744073709551616 out of range "
                          "(0..18446744073709551615)"));
}

// ---------------------------------------------------------------------------
// Validate on protos that did not come from a file (the config service).

TEST(LoaderTest, InsertAndDelayMapOntoTheRule) {
  Loaded loaded = ParseConfigText(RuleWith("delay: \"250ms\", insert: {base64: \"aGVsbG8=\"}"));
  ASSERT_TRUE(loaded.ok()) << Join(loaded.errors);
  EXPECT_EQ(loaded.config.rules(0).delay().nanos(), 250'000'000);
  EXPECT_EQ(loaded.config.rules(0).insert().base64(), "aGVsbG8=");
  Loaded text = ParseConfigText(RuleWith("insert: {text: \"PING\\r\\n\"}"));
  ASSERT_TRUE(text.ok()) << Join(text.errors);
  EXPECT_EQ(text.config.rules(0).insert().text(), "PING\r\n");
}

TEST(ValidateTest, AcceptsAValidConfig) {
  EXPECT_THAT(Strings(Validate(TextProto(kFullProto))), IsEmpty());
}

TEST(ValidateTest, RejectsSetFieldsThisBuildDoesNotImplement) {
  Config config = TextProto(R"pb(
    dns { servers: "127.0.0.1:53" }
    rules {
      name: "web"
      listen: ":80"
      targets { address: "h:1" weight: 3 }
      balance: BALANCE_RANDOM
      source_addresses: "127.0.0.2"
    }
  )pb");
  EXPECT_THAT(Strings(Validate(config)),
              ElementsAre("dns: not implemented in this build",
                          "rules[0].targets[0].weight: not implemented in this build",
                          "rules[0].balance: not implemented in this build",
                          "rules[0].source_addresses: not implemented in this build"));
}

TEST(ValidateTest, RejectsNegativeAndMalformedDurations) {
  Config config = TextProto(R"pb(
    drain {
      delay { seconds: -5 }
      timeout { seconds: 1 nanos: -1 }
    }
    rules {
      name: "web"
      listen: ":80"
      targets { address: "h:1" }
      idle_timeout { nanos: -500000000 }
      half_close_timeout { seconds: 1 nanos: 1000000000 }
    }
  )pb");
  EXPECT_THAT(Strings(Validate(config)),
              ElementsAre("drain.delay: negative duration -5s",
                          "drain.timeout: invalid duration (seconds 1, nanos -1)",
                          "rules[0].idle_timeout: negative duration -500ms",
                          "rules[0].half_close_timeout: invalid duration (seconds 1, nanos "
                          "1000000000)"));
}

TEST(ValidateTest, RedirectRulesNeedTargetsOrAllowTargetsNeverAnOpenRelay) {
  Config config = TextProto(R"pb(
    rules { name: "tp" listen: ":80" transparent: TRANSPARENT_REDIRECT }
    rules {
      name: "ok"
      listen: ":81"
      transparent: TRANSPARENT_REDIRECT
      allow_targets: "10.0.0.0/8"
    }
    rules {
      name: "unix"
      listen: "unix:/tmp/x.sock"
      transparent: TRANSPARENT_REDIRECT
      targets { address: "h:1" }
    }
  )pb");
  EXPECT_THAT(Strings(Validate(config)),
              ElementsAre("rules[0].allow_targets: transparent: redirect needs targets or "
                          "allow_targets: the destinations it may reach (it is never an open "
                          "relay)",
                          "rules[2].transparent: redirect needs a TCP listener, not a unix socket"));
}

// ---------------------------------------------------------------------------
// Files, formatting, the implemented-field table.

TEST(LoadConfigFileTest, MissingFileIsOneFileLevelError) {
  Loaded loaded = LoadConfigFile("/nonexistent/ferry.yaml");
  ASSERT_EQ(loaded.errors.size(), 1u);
  EXPECT_EQ(loaded.errors[0].path, "");
  EXPECT_EQ(loaded.errors[0].message,
            "cannot read \"/nonexistent/ferry.yaml\": No such file or directory");
}

TEST(LoadConfigFileTest, DirectoryIsUnreadable) {
  Loaded loaded = LoadConfigFile(::testing::TempDir());
  EXPECT_THAT(Strings(loaded.errors),
              ElementsAre("cannot read \"" + ::testing::TempDir() + "\": Is a directory"));
}

TEST(LoadConfigFileTest, ReadsAndParsesAFile) {
  std::string path = WriteTempFile("loader_test_good.yaml", kFullYaml);
  Loaded loaded = LoadConfigFile(path);
  EXPECT_THAT(Strings(loaded.errors), IsEmpty());
  EXPECT_TRUE(MessageDifferencer::Equals(loaded.config, TextProto(kFullProto)));
  std::remove(path.c_str());
}

TEST(LoadConfigFileTest, ReportsErrorsInAFile) {
  std::string path = WriteTempFile("loader_test_bad.yaml", RuleWith("connect_attempts: 101"));
  EXPECT_THAT(Strings(LoadConfigFile(path).errors),
              ElementsAre("rules[0].connect_attempts: 101 out of range (0..100)"));
  std::remove(path.c_str());
}

TEST(DiagnosticTest, ToStringOmitsAnEmptyPath) {
  EXPECT_EQ((Diagnostic{"rules[2].listen", "port 70000 out of range"}).ToString(),
            "rules[2].listen: port 70000 out of range");
  EXPECT_EQ((Diagnostic{"", "cannot read \"x\": No such file or directory"}).ToString(),
            "cannot read \"x\": No such file or directory");
}

TEST(DiagnosticTest, JoinPutsOnePerLine) {
  EXPECT_EQ(Join({{"a", "x"}, {"", "y"}, {"b[1].c", "z"}}), "a: x\ny\nb[1].c: z");
  EXPECT_EQ(Join({}), "");
}

TEST(IsImplementedTest, ListedPathsTheirParentsAndChildren) {
  EXPECT_TRUE(IsImplemented("workers"));
  EXPECT_TRUE(IsImplemented("rules"));
  EXPECT_TRUE(IsImplemented("rules[].listen"));
  EXPECT_TRUE(IsImplemented("rules[].targets"));
  EXPECT_TRUE(IsImplemented("rules[].targets[].address"));
  EXPECT_TRUE(IsImplemented("rules[].keepalive.count"));
  EXPECT_TRUE(IsImplemented("drain"));
  EXPECT_FALSE(IsImplemented("rules[].targets[].weight"));
  EXPECT_FALSE(IsImplemented("rules[].balance"));
  EXPECT_FALSE(IsImplemented("rules[].listener"));
  EXPECT_TRUE(IsImplemented("admin.listen"));
  EXPECT_FALSE(IsImplemented("dns"));
  EXPECT_FALSE(IsImplemented("rendezvous.hub"));
}

}  // namespace
}  // namespace ferry::config
