#include "pkg/balance/balancer.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <new>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

// Counts heap allocations so a test can show Pick() does not allocate.
namespace {
std::atomic<int64_t> g_allocations{0};
}  // namespace

void* operator new(size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t size) { return operator new(size); }
// Out of line so the compiler does not pair an inlined free() with a new
// expression and warn about a mismatch.
__attribute__((noinline)) void operator delete(void* p) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete[](void* p) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete(void* p, size_t) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete[](void* p, size_t) noexcept { std::free(p); }

namespace ferry::balance {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr Strategy kAllStrategies[] = {Strategy::kLeastBytes, Strategy::kRoundRobin,
                                       Strategy::kLeastConnections, Strategy::kRandom,
                                       Strategy::kSourceHash};

// Builders for readable tables.
struct Ep {
  double history = 0;
  int64_t active = 0;
  uint32_t weight = 1;
  bool backup = false;
  bool up = true;
};
EndpointView View(const Ep& e, int index) {
  EndpointView v;
  v.history = e.history;
  v.active = e.active;
  v.weight = e.weight;
  v.backup = e.backup;
  v.up = e.up;
  v.key_hash = EndpointKeyHash(absl::StrCat("10.0.0.", index + 1, ":80"));
  return v;
}
std::vector<EndpointView> Views(const std::vector<Ep>& eps) {
  std::vector<EndpointView> out;
  for (size_t i = 0; i < eps.size(); ++i) out.push_back(View(eps[i], static_cast<int>(i)));
  return out;
}

net::Address Literal(const char* text) {
  auto a = net::Address::ParseLiteral(text);
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? *a : net::Address();
}

// The i-th synthetic client: a distinct IPv4 address in 10.0.0.0/8.
net::Address Client(uint32_t i, uint16_t port = 40000) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl((10u << 24) | (i + 1));
  return net::Address::FromSockaddr(reinterpret_cast<const sockaddr*>(&sin), sizeof(sin));
}

const net::Address& AnyClient() {
  static const net::Address a = Client(0);
  return a;
}

std::vector<int> Picks(Balancer& b, const std::vector<EndpointView>& eps, int n) {
  std::vector<int> out;
  for (int i = 0; i < n; ++i) out.push_back(b.Pick(eps, AnyClient()));
  return out;
}

// ---- names ----

TEST(StrategyTest, NamesRoundTrip) {
  for (Strategy s : kAllStrategies) {
    auto parsed = ParseStrategy(StrategyName(s));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, s);
  }
  EXPECT_EQ(StrategyName(Strategy::kLeastBytes), "least_bytes");
  EXPECT_EQ(StrategyName(Strategy::kSourceHash), "source_hash");
}

TEST(StrategyTest, UnknownNameIsNamedInError) {
  for (const char* bad : {"", "leastbytes", "LEAST_BYTES", "round-robin"}) {
    auto parsed = ParseStrategy(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(parsed.status().message(),
                HasSubstr(absl::StrCat("unknown balance strategy \"", bad, "\"")));
    EXPECT_THAT(parsed.status().message(), HasSubstr("least_connections"));
  }
}

// ---- rules shared by every strategy ----

TEST(BalancerTest, EmptySetReturnsMinusOne) {
  for (Strategy s : kAllStrategies) {
    Balancer b(s, 1);
    EXPECT_EQ(b.Pick({}, AnyClient()), -1) << StrategyName(s);
    const int tried[] = {0};
    EXPECT_EQ(b.Pick({}, AnyClient(), tried), -1) << StrategyName(s);
  }
}

TEST(BalancerTest, EveryEndpointExcludedReturnsMinusOne) {
  const auto eps = Views({{}, {.backup = true}, {.up = false}});
  const int tried[] = {2, 0, 1};
  for (Strategy s : kAllStrategies) {
    Balancer b(s, 1);
    EXPECT_EQ(b.Pick(eps, AnyClient(), tried), -1) << StrategyName(s);
  }
}

// Which endpoints a strategy may pick, over many picks and clients: exactly
// the candidates of the preferred tier, whatever the strategy.
struct CandidateCase {
  const char* name;
  std::vector<Ep> eps;
  std::vector<int> exclude;
  std::set<int> want;
};

TEST(BalancerTest, CandidatesByHealthBackupAndExclusion) {
  const Ep up{}, down{.up = false}, backup{.backup = true},
      down_backup{.backup = true, .up = false};
  const std::vector<CandidateCase> cases = {
      {"all up", {up, up, up}, {}, {0, 1, 2}},
      {"ejected skipped", {up, down, up}, {}, {0, 2}},
      {"backup unused while a non-backup is up", {backup, up, up}, {}, {1, 2}},
      {"backup unused with one non-backup up", {down, backup, up, down}, {}, {2}},
      {"backups when no non-backup is up", {down, backup, down, backup}, {}, {1, 3}},
      {"ejected backup skipped", {down, backup, down_backup}, {}, {1}},
      {"nothing up: all non-backups as if up", {down, down_backup, down}, {}, {0, 2}},
      {"nothing up, only backups: all of them", {down_backup, down_backup}, {}, {0, 1}},
      {"excluded skipped", {up, up, up}, {1}, {0, 2}},
      {"non-backups tried: backups next", {up, up, backup, down}, {0, 1}, {2}},
      {"up ones tried: ejected next", {up, down, down}, {0}, {1, 2}},
      {"all but an ejected backup tried", {up, down, backup, down_backup}, {0, 1, 2}, {3}},
      {"out-of-range exclusions ignored", {up, up}, {-1, 2, 99}, {0, 1}},
  };
  for (Strategy s : kAllStrategies) {
    for (const auto& c : cases) {
      Balancer b(s, 7);
      const auto eps = Views(c.eps);
      std::set<int> got;
      for (uint32_t i = 0; i < 300; ++i) got.insert(b.Pick(eps, Client(i), c.exclude));
      EXPECT_EQ(got, c.want) << StrategyName(s) << ": " << c.name;
    }
  }
}

TEST(BalancerTest, PickDoesNotAllocate) {
  const auto eps = Views({{.history = 5, .weight = 2},
                          {.history = 5, .active = 1},
                          {.backup = true},
                          {.history = 9, .up = false},
                          {.history = 1, .weight = 3}});
  const int tried[] = {4};
  const net::Address client = Literal("[2001:db8::7]:1234");
  {  // The counter sees allocations at all.
    const int64_t before = g_allocations.load();
    std::vector<int> v;
    v.push_back(1);
    EXPECT_GT(g_allocations.load() - before, 0);
    EXPECT_EQ(v.size(), 1u);
  }
  for (Strategy s : kAllStrategies) {
    Balancer b(s, 3);
    b.Pick(eps, client);  // round_robin sizes its counters once per endpoint count
    const int64_t before = g_allocations.load();
    int misses = 0;
    for (int i = 0; i < 1000; ++i) {
      if (b.Pick(eps, client, tried) < 0) ++misses;
      if (b.Pick(eps, client) < 0) ++misses;
    }
    EXPECT_EQ(g_allocations.load() - before, 0) << StrategyName(s);
    EXPECT_EQ(misses, 0) << StrategyName(s);
  }
}

// ---- least_bytes ----

struct PickCase {
  const char* name;
  std::vector<Ep> eps;
  std::vector<int> exclude;
  int want;
};

TEST(LeastBytesTest, FirstPickTable) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<PickCase> cases = {
      {"smallest history", {{.history = 300}, {.history = 100}, {.history = 200}}, {}, 1},
      {"history divided by weight", {{.history = 300, .weight = 3}, {.history = 200}}, {}, 0},
      {"weight 0 counts as 1", {{.history = 100, .weight = 0}, {.history = 150}}, {}, 0},
      {"history beats active", {{.history = 100, .active = 50}, {.history = 200}}, {}, 0},
      {"equal history: fewer active",
       {{.history = 100, .active = 5},
        {.history = 100, .active = 2},
        {.history = 100, .active = 3}},
       {},
       1},
      {"equal history per weight: fewer active per weight",
       {{.history = 100, .active = 1}, {.history = 200, .active = 1, .weight = 2}},
       {},
       1},
      {"full tie: first", {{.history = 5}, {.history = 5}, {.history = 5}}, {}, 0},
      {"ejected skipped", {{.history = 0, .up = false}, {.history = 100}}, {}, 1},
      {"backup unused while a non-backup is up", {{.history = 1000}, {.backup = true}}, {}, 0},
      {"least history among backups",
       {{.up = false}, {.history = 500, .backup = true}, {.history = 100, .backup = true}},
       {},
       2},
      {"nothing up: least history among non-backups",
       {{.backup = true, .up = false},
        {.history = 300, .up = false},
        {.history = 200, .up = false}},
       {},
       2},
      {"excluded skipped", {{.history = 0}, {.history = 100}, {.history = 200}}, {0}, 1},
      {"NaN history counts as 0", {{.history = 10}, {.history = nan}}, {}, 1},
      {"negative history counts as 0", {{.history = 10}, {.history = -5}}, {}, 1},
      {"negative active counts as 0",
       {{.history = 1, .active = 0}, {.history = 1, .active = -9}},
       {},
       0},
  };
  for (const auto& c : cases) {
    Balancer b(Strategy::kLeastBytes, 1);
    EXPECT_EQ(b.Pick(Views(c.eps), AnyClient(), c.exclude), c.want) << c.name;
  }
}

TEST(LeastBytesTest, ExactTiesRotate) {
  Balancer b(Strategy::kLeastBytes, 1);
  EXPECT_THAT(Picks(b, Views({{.history = 7}, {.history = 7}, {.history = 7}}), 7),
              ElementsAre(0, 1, 2, 0, 1, 2, 0));
}

TEST(LeastBytesTest, TiesRotateOnlyAmongThoseStillTiedOnActive) {
  Balancer b(Strategy::kLeastBytes, 1);
  const auto eps = Views({{.history = 100, .active = 1},
                          {.history = 100},
                          {.history = 200},
                          {.history = 100},
                          {.history = 100, .up = false}});
  EXPECT_THAT(Picks(b, eps, 5), ElementsAre(1, 3, 1, 3, 1));
}

TEST(LeastBytesTest, FairByBytesPerWeight) {
  // Each connection adds the same bytes: picks follow weight.
  Balancer b(Strategy::kLeastBytes, 1);
  auto eps = Views({{.weight = 1}, {.weight = 1}, {.weight = 2}, {.weight = 4}});
  std::vector<int> count(eps.size());
  for (int i = 0; i < 10000; ++i) {
    const int p = b.Pick(eps, AnyClient());
    ASSERT_GE(p, 0);
    ++count[p];
    eps[p].history += 1000;
  }
  EXPECT_THAT(count, ElementsAre(1250, 1250, 2500, 5000));
}

// ---- round_robin ----

TEST(RoundRobinTest, RotatesInIndexOrder) {
  Balancer b(Strategy::kRoundRobin, 1);
  EXPECT_THAT(Picks(b, Views({{}, {}, {}}), 7), ElementsAre(0, 1, 2, 0, 1, 2, 0));
}

TEST(RoundRobinTest, IgnoresHistoryAndActive) {
  Balancer b(Strategy::kRoundRobin, 1);
  EXPECT_THAT(Picks(b, Views({{.history = 1e9, .active = 100}, {}}), 4), ElementsAre(0, 1, 0, 1));
}

TEST(RoundRobinTest, SkipsEjectedAndExcluded) {
  Balancer b(Strategy::kRoundRobin, 1);
  const auto eps = Views({{}, {.up = false}, {}, {}});
  EXPECT_THAT(Picks(b, eps, 6), ElementsAre(0, 2, 3, 0, 2, 3));
  const int tried[] = {2};
  std::vector<int> got;
  for (int i = 0; i < 4; ++i) got.push_back(b.Pick(eps, AnyClient(), tried));
  EXPECT_THAT(got, ElementsAre(0, 3, 0, 3));
}

TEST(RoundRobinTest, SmoothWeightedSequence) {
  // nginx's example: weights 5, 1, 1 give a a b a c a a, not a a a a a b c.
  Balancer b(Strategy::kRoundRobin, 1);
  EXPECT_THAT(Picks(b, Views({{.weight = 5}, {.weight = 1}, {.weight = 1}}), 14),
              ElementsAre(0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0));
}

TEST(RoundRobinTest, FairByWeightOver10000Picks) {
  Balancer b(Strategy::kRoundRobin, 1);
  const auto eps = Views({{.weight = 1}, {.weight = 2}, {.weight = 3}, {.weight = 4}});
  std::vector<int> count(eps.size());
  for (int p : Picks(b, eps, 10000)) ++count[p];
  EXPECT_THAT(count, ElementsAre(1000, 2000, 3000, 4000));
}

TEST(RoundRobinTest, ResetRestartsTheRotation) {
  Balancer b(Strategy::kRoundRobin, 1);
  const auto eps = Views({{}, {}, {}});
  EXPECT_THAT(Picks(b, eps, 2), ElementsAre(0, 1));
  b.Reset();
  EXPECT_THAT(Picks(b, eps, 2), ElementsAre(0, 1));
}

TEST(RoundRobinTest, EndpointSetChangingSizeStaysFair) {
  Balancer b(Strategy::kRoundRobin, 1);
  Picks(b, Views({{.weight = 9}, {}}), 3);
  std::vector<int> count(4);
  for (int p : Picks(b, Views({{}, {}, {}, {}}), 400)) ++count[p];
  EXPECT_THAT(count, ElementsAre(100, 100, 100, 100));
}

// ---- least_connections ----

TEST(LeastConnectionsTest, FirstPickTable) {
  const std::vector<PickCase> cases = {
      {"fewest active", {{.active = 4}, {.active = 2}, {.active = 3}}, {}, 1},
      {"active divided by weight", {{.active = 4, .weight = 2}, {.active = 3}}, {}, 0},
      {"weight 0 counts as 1", {{.active = 2, .weight = 0}, {.active = 1}}, {}, 1},
      {"history ignored", {{.history = 1e12}, {.active = 1}}, {}, 0},
      {"ejected skipped", {{.up = false}, {.active = 10}}, {}, 1},
      {"backup unused while a non-backup is up", {{.backup = true}, {.active = 100}}, {}, 1},
      {"excluded skipped", {{}, {.active = 1}, {.active = 2}}, {0}, 1},
  };
  for (const auto& c : cases) {
    Balancer b(Strategy::kLeastConnections, 1);
    EXPECT_EQ(b.Pick(Views(c.eps), AnyClient(), c.exclude), c.want) << c.name;
  }
}

TEST(LeastConnectionsTest, TiesRotate) {
  Balancer b(Strategy::kLeastConnections, 1);
  const auto eps = Views({{.active = 2}, {.active = 1}, {.active = 1}, {.active = 2, .weight = 2}});
  EXPECT_THAT(Picks(b, eps, 6), ElementsAre(1, 2, 3, 1, 2, 3));
}

TEST(LeastConnectionsTest, FairByWeightOver10000Picks) {
  // Connections that never close: active follows weight.
  Balancer b(Strategy::kLeastConnections, 1);
  auto eps = Views({{.weight = 1}, {.weight = 3}, {.weight = 1}});
  std::vector<int> count(eps.size());
  for (int i = 0; i < 10000; ++i) {
    const int p = b.Pick(eps, AnyClient());
    ASSERT_GE(p, 0);
    ++count[p];
    ++eps[p].active;
  }
  EXPECT_THAT(count, ElementsAre(2000, 6000, 2000));
}

// ---- random ----

TEST(RandomTest, SameSeedSameSequence) {
  const auto eps = Views({{}, {}, {}, {}, {}});
  Balancer a(Strategy::kRandom, 42), b(Strategy::kRandom, 42), c(Strategy::kRandom, 43);
  const auto pa = Picks(a, eps, 100);
  EXPECT_EQ(pa, Picks(b, eps, 100));
  EXPECT_NE(pa, Picks(c, eps, 100));
}

TEST(RandomTest, TwoChoicesNeverPickTheMostLoaded) {
  // Of the 6 equally likely pairs, endpoint 0 is in 3, endpoint 1 wins 2
  // ({1,2}, {1,3}), endpoint 2 wins 1, endpoint 3 none.
  Balancer b(Strategy::kRandom, 9);
  const auto eps = Views({{.active = 0}, {.active = 1}, {.active = 2}, {.active = 3}});
  std::vector<int> count(eps.size());
  for (int p : Picks(b, eps, 10000)) ++count[p];
  EXPECT_EQ(count[3], 0);
  EXPECT_NEAR(count[0], 5000, 300);
  EXPECT_NEAR(count[1], 3333, 300);
  EXPECT_NEAR(count[2], 1667, 300);
}

TEST(RandomTest, ComparesActivePerWeight) {
  // Two candidates are always both drawn; 2/4 < 1/1 every time.
  Balancer b(Strategy::kRandom, 5);
  for (int p : Picks(b, Views({{.active = 2, .weight = 4}, {.active = 1}}), 200)) {
    ASSERT_EQ(p, 0);
  }
}

TEST(RandomTest, SingleCandidateAlwaysPicked) {
  Balancer b(Strategy::kRandom, 5);
  for (int p : Picks(b, Views({{.up = false}, {.active = 9}, {.backup = true}}), 100)) {
    ASSERT_EQ(p, 1);
  }
}

TEST(RandomTest, FairOver10000PicksWhenEquallyLoaded) {
  Balancer b(Strategy::kRandom, 11);
  const auto eps = Views({{}, {}, {}, {}});
  std::vector<int> count(eps.size());
  for (int p : Picks(b, eps, 10000)) ++count[p];
  for (int c : count) EXPECT_NEAR(c, 2500, 250);
}

TEST(RandomTest, DrawsByWeightWhenEquallyLoaded) {
  Balancer b(Strategy::kRandom, 13);
  const auto eps = Views({{.weight = 1}, {.weight = 3}});
  std::vector<int> count(eps.size());
  for (int p : Picks(b, eps, 10000)) ++count[p];
  EXPECT_NEAR(count[0], 2500, 250);
  EXPECT_NEAR(count[1], 7500, 250);
}

// ---- source_hash ----

// Endpoints keyed "10.1.0.K:80" for each K in `keys`, with optional weights.
std::vector<EndpointView> Keyed(const std::vector<int>& keys, const std::vector<uint32_t>& w = {}) {
  std::vector<EndpointView> out;
  for (size_t i = 0; i < keys.size(); ++i) {
    EndpointView v;
    v.key_hash = EndpointKeyHash(absl::StrCat("10.1.0.", keys[i], ":80"));
    if (i < w.size()) v.weight = w[i];
    out.push_back(v);
  }
  return out;
}

// Each client's endpoint, as its key number (not its index).
std::vector<int> Assign(const std::vector<int>& keys, const std::vector<EndpointView>& eps,
                        int clients = 10000) {
  Balancer b(Strategy::kSourceHash, 1);
  std::vector<int> out;
  out.reserve(clients);
  for (int i = 0; i < clients; ++i) {
    const int p = b.Pick(eps, Client(i));
    out.push_back(p < 0 ? -1 : keys[p]);
  }
  return out;
}

TEST(SourceHashTest, ClientSticksAcrossCallsAndPorts) {
  Balancer b(Strategy::kSourceHash, 1);
  const auto eps = Keyed({1, 2, 3, 4, 5, 6, 7});
  for (uint32_t c = 0; c < 50; ++c) {
    const int first = b.Pick(eps, Client(c, 1000));
    for (uint16_t port = 1001; port < 1020; ++port) {
      ASSERT_EQ(b.Pick(eps, Client(c, port)), first) << "client " << c << " port " << port;
    }
  }
}

TEST(SourceHashTest, ClientsSpreadAcrossEndpoints) {
  Balancer b(Strategy::kSourceHash, 1);
  const auto eps = Keyed({1, 2, 3, 4, 5, 6, 7});
  std::set<int> seen;
  for (uint32_t c = 0; c < 200; ++c) seen.insert(b.Pick(eps, Client(c)));
  EXPECT_EQ(seen.size(), eps.size());
}

TEST(SourceHashTest, MappedIpv6HashesLikeIpv4) {
  EXPECT_EQ(ClientHash(Literal("[::ffff:10.1.2.3]:5")), ClientHash(Literal("10.1.2.3:6")));
  EXPECT_NE(ClientHash(Literal("10.1.2.3:6")), ClientHash(Literal("10.1.2.4:6")));
  EXPECT_NE(ClientHash(Literal("[2001:db8::1]:6")), ClientHash(Literal("[2001:db8::2]:6")));
}

TEST(SourceHashTest, ClientsWithoutIpShareOneValue) {
  const uint64_t h = ClientHash(net::Address::Unix("/run/a.sock"));
  EXPECT_EQ(ClientHash(net::Address::Unix("/run/b.sock")), h);
  EXPECT_EQ(ClientHash(net::Address()), h);
  Balancer b(Strategy::kSourceHash, 1);
  const auto eps = Keyed({1, 2, 3, 4, 5});
  const int p = b.Pick(eps, net::Address::Unix("/run/a.sock"));
  ASSERT_GE(p, 0);
  EXPECT_EQ(b.Pick(eps, net::Address::Unix("/tmp/other")), p);
  EXPECT_EQ(b.Pick(eps, net::Address()), p);
}

TEST(SourceHashTest, KeyHashIsStable) {
  // Every ferry in a fleet, across restarts, must agree on this value.
  EXPECT_EQ(EndpointKeyHash("10.0.0.1:80"), EndpointKeyHash(std::string("10.0.0.1:") + "80"));
  EXPECT_EQ(EndpointKeyHash("10.0.0.1:80"), 0xfcb75258c760bfd6ULL);
  EXPECT_NE(EndpointKeyHash("10.0.0.1:80"), EndpointKeyHash("10.0.0.1:81"));
}

TEST(SourceHashTest, EvenDistributionOver10000Clients) {
  const std::vector<int> keys = {1, 2, 3, 4, 5};
  std::map<int, int> count;
  for (int k : Assign(keys, Keyed(keys))) ++count[k];
  ASSERT_EQ(count.size(), keys.size());
  for (const auto& [key, n] : count) EXPECT_NEAR(n, 2000, 200) << "endpoint " << key;
}

TEST(SourceHashTest, DistributionFollowsWeight) {
  const std::vector<int> keys = {1, 2, 3};
  std::map<int, int> count;
  for (int k : Assign(keys, Keyed(keys, {1, 1, 2}))) ++count[k];
  EXPECT_NEAR(count[1], 2500, 250);
  EXPECT_NEAR(count[2], 2500, 250);
  EXPECT_NEAR(count[3], 5000, 500);
}

TEST(SourceHashTest, ReorderedSetMovesNobody) {
  const std::vector<int> keys = {1, 2, 3, 4, 5};
  std::vector<int> reversed(keys.rbegin(), keys.rend());
  EXPECT_EQ(Assign(keys, Keyed(keys)), Assign(reversed, Keyed(reversed)));
}

TEST(SourceHashTest, RemovingAnEndpointMovesOnlyItsClients) {
  const std::vector<int> keys = {1, 2, 3, 4, 5};
  const std::vector<int> fewer = {1, 2, 4, 5};
  const auto before = Assign(keys, Keyed(keys));
  const auto after = Assign(fewer, Keyed(fewer));
  int on_removed = 0;
  for (size_t i = 0; i < before.size(); ++i) {
    if (before[i] == 3) {
      ++on_removed;
      EXPECT_NE(after[i], 3);
    } else {
      ASSERT_EQ(after[i], before[i]) << "client " << i << " moved";
    }
  }
  EXPECT_NEAR(on_removed, 2000, 200);
}

TEST(SourceHashTest, AddingAnEndpointMovesAboutOneInNPlusOne) {
  const std::vector<int> keys = {1, 2, 3, 4, 5};
  const std::vector<int> more = {1, 2, 3, 4, 5, 6};
  const auto before = Assign(keys, Keyed(keys));
  const auto after = Assign(more, Keyed(more));
  int moved = 0;
  for (size_t i = 0; i < before.size(); ++i) {
    if (after[i] == before[i]) continue;
    ++moved;
    ASSERT_EQ(after[i], 6) << "client " << i << " moved between old endpoints";
  }
  EXPECT_NEAR(moved, 10000 / 6, 170);
}

TEST(SourceHashTest, EjectedEndpointsClientsMoveAndReturn) {
  const std::vector<int> keys = {1, 2, 3, 4};
  auto eps = Keyed(keys);
  const auto before = Assign(keys, eps);
  eps[1].up = false;  // key 2
  const auto during = Assign(keys, eps);
  eps[1].up = true;
  EXPECT_EQ(Assign(keys, eps), before);
  for (size_t i = 0; i < before.size(); ++i) {
    if (before[i] == 2) {
      EXPECT_NE(during[i], 2);
    } else {
      ASSERT_EQ(during[i], before[i]) << "client " << i << " moved";
    }
  }
}

TEST(SourceHashTest, RetryGoesToTheClientsNextRankedEndpoint) {
  // The endpoint a retry excluding the first choice lands on is the one the
  // client would get with the first choice ejected: stable, not arbitrary.
  const std::vector<int> keys = {1, 2, 3, 4, 5};
  Balancer b(Strategy::kSourceHash, 1);
  for (uint32_t c = 0; c < 100; ++c) {
    auto eps = Keyed(keys);
    const int first = b.Pick(eps, Client(c));
    const int tried[] = {first};
    const int retry = b.Pick(eps, Client(c), tried);
    ASSERT_NE(retry, first);
    EXPECT_EQ(b.Pick(eps, Client(c), tried), retry);
    eps[first].up = false;
    EXPECT_EQ(b.Pick(eps, Client(c)), retry);
  }
}

}  // namespace
}  // namespace ferry::balance
