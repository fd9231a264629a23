// Promise: a config change never drops a live connection. A rule whose
// listen address stays keeps its sockets (nothing refused while reloading)
// and applies new settings to new connections; a removed rule stops
// accepting, its connections drain (up to drain.timeout) and its series
// disappear once they are gone; new rules start with their series at 0; a
// bad config changes nothing and is counted.

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "pkg/config/file_source.h"
#include "tests/testing/admin.h"
#include "tests/testing/child_process.h"
#include "tests/testing/data.h"
#include "tests/testing/relay.h"
#include "tests/testing/sockets.h"
#include "tests/testing/target_server.h"

namespace ferry::testing {
namespace {

// A config: the admin endpoint, then `rules` (YAML list items).
std::string Yaml(const std::string& rules, const std::string& top = "") {
  return absl::StrCat("admin: { listen: \"127.0.0.1:0\" }\n", top, "rules:\n", rules);
}

std::string RuleYaml(const std::string& name, const std::string& listen, const std::string& target,
                     const std::string& fields = "") {
  return absl::StrCat("  - name: ", name, "\n    listen: \"", listen, "\"\n    targets: [\"",
                      target, "\"]\n", fields);
}

// A target that says `tag` first, then echoes until EOF.
std::unique_ptr<TargetServer> TaggedEcho(const std::string& tag) {
  return std::make_unique<TargetServer>("127.0.0.1:0", [tag](int fd) {
    if (!SendAll(fd, tag)) return;
    char buf[16384];
    for (;;) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      if (!SendAll(fd, buf, static_cast<size_t>(n))) return;
    }
    ::shutdown(fd, SHUT_WR);
  });
}

// Reads the tag a TaggedEcho sends first.
std::string ReadTag(int fd, size_t n = 1) {
  std::string tag;
  ReadExactly(fd, n, &tag);
  return tag;
}

std::map<std::string, double> Scrape(Relay& relay) {
  return Samples(HttpGet(*relay.server().admin_address(), "/metrics").body);
}

bool HasRuleSeries(const std::map<std::string, double>& samples, const std::string& rule) {
  for (const auto& [key, value] : samples) {
    if (absl::StrContains(key, absl::StrCat("rule=\"", rule, "\""))) return true;
  }
  return false;
}

TEST(ReloadTest, HundredTransfersAndNewConnectionsSurviveFiftyReloadsOfOtherRules) {
  EchoServer echo("127.0.0.1:0");
  ASSERT_TRUE(echo.ok());
  const std::string main_rule = RuleYaml("main", "127.0.0.1:0", echo.target());
  auto relay = Relay::Start(Yaml(main_rule));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Relay& r = **relay;

  // Each transfer echoes random bytes chunk by chunk and checks every byte
  // that comes back; it goes on until the reloads are over (and at least
  // kMinBytes), so every reload happens in the middle of all 100.
  constexpr int kTransfers = 100;
  constexpr size_t kChunk = 32 * 1024;
  const uint64_t kMinBytes = Scaled(1 << 20, 256 * 1024);
  std::atomic<bool> reloads_done{false};
  std::atomic<int> started{0}, intact{0};
  std::atomic<uint64_t> sent_total{0};
  std::vector<std::string> failures(kTransfers);
  std::vector<std::thread> transfers;
  for (int i = 0; i < kTransfers; ++i) {
    transfers.emplace_back([&, i] {
      Connected c = r.Connect("main", 10000);
      if (!c.fd.valid()) {
        failures[i] = absl::StrCat("connect: ", std::strerror(c.err));
        return;
      }
      ++started;
      RandomStream random(1000 + i);
      std::string chunk(kChunk, '\0'), back;
      uint64_t sent = 0;
      while (sent < kMinBytes || !reloads_done.load()) {
        random.Fill(chunk.data(), kChunk);
        back.clear();
        if (!SendAll(c.fd.get(), chunk) || ReadExactly(c.fd.get(), kChunk, &back).err != 0 ||
            back != chunk) {
          failures[i] = absl::StrCat("echo differs or failed after byte ", sent);
          return;
        }
        sent += kChunk;
        std::this_thread::sleep_for(Millis(5));
      }
      sent_total += sent;
      ::shutdown(c.fd.get(), SHUT_WR);
      std::string rest;
      ReadToEof(c.fd.get(), &rest);
      if (!rest.empty()) {
        failures[i] = "bytes after the echo";
        return;
      }
      ++intact;
    });
  }
  ASSERT_TRUE(WaitUntil([&] { return started.load() == kTransfers; }, Millis(20000)));

  // New connections to the kept listener, all through the reloads.
  std::atomic<bool> stop{false};
  std::atomic<int> probes{0}, refused{0};
  std::thread prober([&] {
    while (!stop.load()) {
      Connected c = r.Connect("main", 5000);
      if (!c.fd.valid() || EchoRoundTrip(c.fd.get(), "p") != "") {
        ++refused;
      }
      ++probes;
      std::this_thread::sleep_for(Millis(2));
    }
  });

  // 50 reloads that add and remove other rules and change main's settings.
  for (int i = 0; i < 50; ++i) {
    std::string rules = RuleYaml("main", "127.0.0.1:0", echo.target(),
                                 absl::StrCat("    idle_timeout: \"", 60 + i, "s\"\n"));
    for (int k = 0; k < i % 4; ++k) {
      absl::StrAppend(&rules, RuleYaml(absl::StrCat("other-", k), "127.0.0.1:0", echo.target()));
    }
    absl::Status s = r.Reload(Yaml(rules));
    ASSERT_TRUE(s.ok()) << "reload " << i << ": " << s;
  }
  EXPECT_EQ(intact.load(), 0) << "a transfer ended before the reloads did";
  reloads_done.store(true);
  stop.store(true);
  prober.join();
  for (auto& t : transfers) t.join();

  for (int i = 0; i < kTransfers; ++i) EXPECT_EQ(failures[i], "") << "transfer " << i;
  EXPECT_EQ(intact.load(), kTransfers);
  EXPECT_GT(probes.load(), 0);
  EXPECT_EQ(refused.load(), 0) << "of " << probes.load() << " connections during the reloads";
  EXPECT_EQ(r.server().reloads("success"), 50u);
  EXPECT_EQ(r.server().reloads("failure"), 0u);
  ASSERT_TRUE(r.WaitIdle());
  server::RuleTotals t = r.totals("main");
  EXPECT_EQ(t.bytes_to_target, sent_total.load() + probes.load());
  EXPECT_EQ(t.bytes_to_client, sent_total.load() + probes.load());
  EXPECT_EQ(t.outcome(proxy::Outcome::kOk), static_cast<uint64_t>(kTransfers + probes.load()))
      << OutcomesString(t);
}

TEST(ReloadTest, ChangedTargetAppliesToNewConnectionsOnly) {
  auto a = TaggedEcho("A");
  auto b = TaggedEcho("B");
  auto relay = Relay::Start(Yaml(RuleYaml("main", "127.0.0.1:0", a->target())));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Relay& r = **relay;
  net::Address before = r.address();

  Connected old_conn = r.Connect();
  ASSERT_TRUE(old_conn.fd.valid());
  ASSERT_EQ(ReadTag(old_conn.fd.get()), "A");

  ASSERT_TRUE(r.Reload(Yaml(RuleYaml("main", "127.0.0.1:0", b->target()))).ok());
  EXPECT_EQ(r.address(), before) << "the listener was kept";
  Connected new_conn = r.Connect();
  ASSERT_TRUE(new_conn.fd.valid());
  EXPECT_EQ(ReadTag(new_conn.fd.get()), "B");
  // The connection from before still talks to A.
  EXPECT_EQ(EchoRoundTrip(old_conn.fd.get(), "still here"), "");
  EXPECT_EQ(a->accepted(), 1);

  // Both endpoints' series exist while the old connection lives; the rule's
  // counters went on across the reload.
  auto m = Scrape(r);
  EXPECT_EQ(m.count(absl::StrCat("ferry_bytes_total{rule=\"main\",endpoint=\"", b->target(),
                                 "\",direction=\"to_target\"}")),
            1u);
}

TEST(ReloadTest, RemovedRuleRefusesNewClientsDrainsItsConnectionsThenItsSeriesGo) {
  auto echo = TaggedEcho("E");
  const std::string main_rule = RuleYaml("main", "127.0.0.1:0", echo->target());
  auto relay = Relay::Start(Yaml(main_rule + RuleYaml("extra", "127.0.0.1:0", echo->target())));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Relay& r = **relay;
  net::Address extra = r.address("extra");
  Connected live = r.Connect("extra");
  ASSERT_TRUE(live.fd.valid());
  ASSERT_EQ(ReadTag(live.fd.get()), "E");

  ASSERT_TRUE(r.Reload(Yaml(main_rule)).ok());
  Connected refused = Connect(extra, 2000);
  EXPECT_FALSE(refused.fd.valid());
  EXPECT_EQ(refused.err, ECONNREFUSED) << std::strerror(refused.err);
  // The live connection goes on, and its rule stays visible while it does.
  EXPECT_EQ(EchoRoundTrip(live.fd.get(), "go on"), "");
  EXPECT_EQ(r.totals("extra").active, 1);
  EXPECT_TRUE(HasRuleSeries(Scrape(r), "extra"));
  EXPECT_FALSE(r.server().BoundAddress("extra").ok());

  // When it ends, the rule is gone from the table and from /metrics.
  live.fd.Reset();
  ASSERT_TRUE(WaitUntil([&] { return !HasRuleSeries(Scrape(r), "extra"); }, Millis(5000)));
  EXPECT_TRUE(HasRuleSeries(Scrape(r), "main"));
}

TEST(ReloadTest, RemovedRuleConnectionsAreClosedAtTheDrainTimeout) {
  auto echo = TaggedEcho("E");
  const std::string top = "drain: { timeout: \"300ms\" }\n";
  const std::string main_rule = RuleYaml("main", "127.0.0.1:0", echo->target());
  auto relay =
      Relay::Start(Yaml(main_rule + RuleYaml("extra", "127.0.0.1:0", echo->target()), top));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Relay& r = **relay;
  Connected live = r.Connect("extra");
  ASSERT_TRUE(live.fd.valid());
  ASSERT_EQ(ReadTag(live.fd.get()), "E");

  ASSERT_TRUE(r.Reload(Yaml(main_rule, top)).ok());
  PeerState s = ProbePeer(live.fd.get(), 5000);
  EXPECT_TRUE(s == PeerState::kEof || s == PeerState::kReset) << PeerStateName(s);
  ASSERT_TRUE(WaitUntil([&] { return !HasRuleSeries(Scrape(r), "extra"); }, Millis(5000)));
}

TEST(ReloadTest, NewRuleAcceptsAndItsSeriesStartAtZero) {
  auto echo = TaggedEcho("E");
  const std::string main_rule = RuleYaml("main", "127.0.0.1:0", echo->target());
  auto relay = Relay::Start(Yaml(main_rule));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Relay& r = **relay;
  EXPECT_FALSE(r.server().BoundAddress("fresh").ok());

  ASSERT_TRUE(r.Reload(Yaml(main_rule + RuleYaml("fresh", "127.0.0.1:0", echo->target()))).ok());
  auto m = Scrape(r);
  EXPECT_EQ(m[R"(ferry_connections_total{rule="fresh",outcome="ok"})"], 0);
  EXPECT_EQ(m[R"(ferry_connections_active{rule="fresh"})"], 0);
  EXPECT_EQ(m.count(R"(ferry_connections_active{rule="fresh"})"), 1u);
  EXPECT_EQ(m[R"(ferry_config_reloads_total{source="file",result="success"})"], 1);

  Connected c = r.Connect("fresh");
  ASSERT_TRUE(c.fd.valid()) << std::strerror(c.err);
  EXPECT_EQ(ReadTag(c.fd.get()), "E");
  EXPECT_EQ(EchoRoundTrip(c.fd.get(), "hello"), "");
}

TEST(ReloadTest, InvalidConfigIsRejectedWithEveryErrorAndTheOldOneKeepsServing) {
  auto echo = TaggedEcho("E");
  const std::string main_rule = RuleYaml("main", "127.0.0.1:0", echo->target());
  auto relay = Relay::Start(Yaml(main_rule));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Relay& r = **relay;
  ASSERT_TRUE(r.Reload(Yaml(main_rule)).ok());  // now it runs a "file" config

  absl::Status s = r.server().ReloadText(Yaml(RuleYaml("main", "127.0.0.1:99999", echo->target()) +
                                              RuleYaml("Bad Name", "127.0.0.1:0", echo->target())),
                                         "file", "deadbeef");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "rules[0].listen")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "rules[1].name")) << s;
  EXPECT_EQ(r.server().reloads("failure"), 1u);

  Connected c = r.Connect();
  ASSERT_TRUE(c.fd.valid());
  EXPECT_EQ(ReadTag(c.fd.get()), "E");
  auto m = Scrape(r);
  EXPECT_EQ(m[R"(ferry_config_reloads_total{source="file",result="failure"})"], 1);
  EXPECT_EQ(m[R"(ferry_config_reloads_total{source="file",result="success"})"], 1);
  // The version shown is still the running one's.
  EXPECT_EQ(m.count(R"(ferry_config_version_info{source="file",version="deadbeef"})"), 0u);
}

TEST(ReloadTest, FieldsFixedAtStartAreAFailedReloadNamingTheField) {
  auto echo = TaggedEcho("E");
  const std::string main_rule = RuleYaml("main", "127.0.0.1:0", echo->target());
  auto relay = Relay::Start(Yaml(main_rule));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Relay& r = **relay;

  absl::Status s =
      r.Reload(absl::StrCat("admin: { listen: \"127.0.0.1:1\" }\nrules:\n", main_rule));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "admin: cannot change")) << s;
  s = r.Reload(Yaml(main_rule, "workers: 3\n"));
  EXPECT_TRUE(absl::StrContains(s.message(), "workers: cannot change")) << s;
  EXPECT_EQ(r.server().reloads("failure"), 2u);
  Connected c = r.Connect();
  ASSERT_TRUE(c.fd.valid());
  EXPECT_EQ(ReadTag(c.fd.get()), "E");
}

TEST(ReloadTest, PortTakenByAnotherProgramFailsTheReloadAndChangesNothing) {
  auto echo = TaggedEcho("E");
  const std::string main_rule = RuleYaml("main", "127.0.0.1:0", echo->target());
  auto relay = Relay::Start(Yaml(main_rule));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Relay& r = **relay;
  // A listener without SO_REUSEPORT holds the port.
  Listening taken = Listen("127.0.0.1:0");
  ASSERT_TRUE(taken.fd.valid());

  absl::Status s =
      r.Reload(Yaml(RuleYaml("main", "127.0.0.1:0", echo->target(), "    idle_timeout: \"1s\"\n") +
                    RuleYaml("first", "127.0.0.1:0", echo->target()) +
                    RuleYaml("second", taken.address.ToString(), echo->target())));
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "rule \"second\"")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "in use")) << s;
  EXPECT_FALSE(r.server().BoundAddress("first").ok()) << "a half-applied reload";
  EXPECT_EQ(r.server().table()->config.rules(0).has_idle_timeout(), false);
  Connected c = r.Connect();
  ASSERT_TRUE(c.fd.valid());
  EXPECT_EQ(ReadTag(c.fd.get()), "E");
}

TEST(ReloadTest, MovedListenerServesTheNewAddressAndDrainsTheOld) {
  auto echo = TaggedEcho("E");
  auto relay = Relay::Start(Yaml(RuleYaml("main", "127.0.0.1:0", echo->target())));
  ASSERT_TRUE(relay.ok()) << relay.status();
  Relay& r = **relay;
  net::Address old_address = r.address();
  Connected live = r.Connect();
  ASSERT_TRUE(live.fd.valid());
  ASSERT_EQ(ReadTag(live.fd.get()), "E");

  ASSERT_TRUE(r.Reload(Yaml(RuleYaml("main", "127.0.0.2:0", echo->target()))).ok());
  EXPECT_EQ(r.address().HostString(), "127.0.0.2");
  Connected moved = r.Connect();
  ASSERT_TRUE(moved.fd.valid()) << std::strerror(moved.err);
  EXPECT_EQ(ReadTag(moved.fd.get()), "E");
  EXPECT_EQ(Connect(old_address, 2000).err, ECONNREFUSED);
  EXPECT_EQ(EchoRoundTrip(live.fd.get(), "old"), "");
  // One rule, one set of counters: both connections count as main's.
  EXPECT_EQ(r.totals().active, 2);
}

}  // namespace
}  // namespace ferry::testing

namespace ferry::testing {
namespace {

// The address in the last `key` ... `address=ADDR` log line of `ferry`.
absl::StatusOr<net::Address> LoggedAddress(ChildProcess& ferry, const std::string& key) {
  if (!ferry.WaitForStderr(key, Millis(10000))) {
    return absl::NotFoundError(absl::StrCat("no \"", key, "\" in:\n", ferry.Stderr()));
  }
  std::string err = ferry.Stderr();
  size_t at = err.rfind(key);
  size_t begin = err.find("address=", at) + 8;
  size_t end = err.find_first_of(" \n", begin);
  return net::Address::ParseLiteral(err.substr(begin, end - begin));
}

// A directory laid out like a Kubernetes ConfigMap volume, updated the way
// kubelet updates it: a new ..TIMESTAMP dir, a ..data_tmp symlink to it
// renamed over ..data, the old dir removed.
class ConfigMapDir {
 public:
  explicit ConfigMapDir(const std::string& content) { Swap(content); }
  std::string path() const { return dir_.File("config.yaml"); }
  void Swap(const std::string& content) {
    std::string ts = absl::StrCat("..2026_11_22_03_00_00.", ++generation_);
    std::string ts_dir = dir_.File(ts);
    ASSERT_EQ(::mkdir(ts_dir.c_str(), 0755), 0);
    dir_.Write(ts + "/config.yaml", content);
    ASSERT_EQ(::symlink(ts.c_str(), dir_.File("..data_tmp").c_str()), 0);
    ASSERT_EQ(::rename(dir_.File("..data_tmp").c_str(), dir_.File("..data").c_str()), 0);
    if (generation_ == 1) {
      ASSERT_EQ(::symlink("..data/config.yaml", path().c_str()), 0);
    } else {
      std::string old = dir_.File(absl::StrCat("..2026_11_22_03_00_00.", generation_ - 1));
      ASSERT_EQ(::unlink((old + "/config.yaml").c_str()), 0);
      ASSERT_EQ(::rmdir(old.c_str()), 0);
    }
  }

 private:
  TempDir dir_;
  int generation_ = 0;
};

TEST(ReloadRunTest, ConfigMapSwapsInvalidFilesAndSighupThroughTheRealBinary) {
  auto echo = TaggedEcho("E");
  const std::string main_rule = RuleYaml("main", "127.0.0.1:0", echo->target());
  const std::string second = RuleYaml("second", "127.0.0.1:0", echo->target());
  ConfigMapDir dir(Yaml(main_rule));
  auto child =
      ChildProcess::Start(FerryBinary(), {"run", "--config", dir.path(), "--workers", "2"});
  ASSERT_TRUE(child.ok()) << child.status();
  ChildProcess& ferry = **child;
  auto main_address = WaitListening(ferry, "main");
  ASSERT_TRUE(main_address.ok()) << main_address.status();
  auto admin = LoggedAddress(ferry, "msg=\"admin listening\"");
  ASSERT_TRUE(admin.ok()) << admin.status();
  Connected live = Connect(*main_address);
  ASSERT_EQ(ReadTag(live.fd.get()), "E");

  // A kubelet update adds a rule.
  const std::string with_second = Yaml(main_rule + second);
  dir.Swap(with_second);
  auto second_address = LoggedAddress(ferry, "msg=\"listening\" rule=second");
  ASSERT_TRUE(second_address.ok()) << second_address.status();
  Connected c = Connect(*second_address);
  ASSERT_TRUE(c.fd.valid()) << std::strerror(c.err);
  EXPECT_EQ(ReadTag(c.fd.get()), "E");
  auto m = Samples(HttpGet(*admin, "/metrics").body);
  EXPECT_EQ(m[R"(ferry_config_reloads_total{source="file",result="success"})"], 1);
  EXPECT_EQ(m[absl::StrCat(R"(ferry_config_version_info{source="file",version=")",
                           config::ContentHash(with_second), "\"}")],
            1);

  // An invalid update is refused with its path; everything keeps running.
  dir.Swap(Yaml(main_rule + RuleYaml("second", "127.0.0.1:70000", echo->target())));
  ASSERT_TRUE(ferry.WaitForStderr("config reload failed", Millis(10000))) << ferry.Stderr();
  EXPECT_TRUE(absl::StrContains(ferry.Stderr(), "path=rules[1].listen")) << ferry.Stderr();
  m = Samples(HttpGet(*admin, "/metrics").body);
  EXPECT_EQ(m[R"(ferry_config_reloads_total{source="file",result="failure"})"], 1);
  EXPECT_EQ(EchoRoundTrip(live.fd.get(), "still"), "");
  Connected c2 = Connect(*second_address);
  EXPECT_EQ(ReadTag(c2.fd.get()), "E");

  // Fixed again; then SIGHUP applies the file even though it did not change.
  dir.Swap(with_second);
  ASSERT_TRUE(WaitUntil(
      [&] {
        return Samples(
                   HttpGet(*admin, "/metrics")
                       .body)[R"(ferry_config_reloads_total{source="file",result="success"})"] == 2;
      },
      Millis(10000)));
  ASSERT_TRUE(ferry.Signal(SIGHUP));
  ASSERT_TRUE(ferry.WaitForStderr("trigger=signal", Millis(10000))) << ferry.Stderr();
  ASSERT_TRUE(WaitUntil(
      [&] {
        return Samples(
                   HttpGet(*admin, "/metrics")
                       .body)[R"(ferry_config_reloads_total{source="file",result="success"})"] == 3;
      },
      Millis(10000)));
  EXPECT_EQ(EchoRoundTrip(live.fd.get(), "through it all"), "");

  live.fd.Reset();
  c.fd.Reset();
  c2.fd.Reset();
  ASSERT_TRUE(ferry.Signal(SIGTERM));
  ASSERT_TRUE(ferry.WaitExit(Millis(5000)).has_value());
  EXPECT_EQ(ferry.exit_code(), 0) << ferry.Stderr();
}

}  // namespace
}  // namespace ferry::testing
