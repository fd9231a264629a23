#include "pkg/balance/balancer.h"

#include <netinet/in.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace ferry::balance {
namespace {

// The splitmix64 finalizer: a bijective mix with full avalanche, so nearby
// inputs (consecutive client IPs) give unrelated outputs.
uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// FNV-1a then Mix64. Hand-written rather than absl::Hash because absl::Hash is
// salted per process, and source_hash must agree across processes.
uint64_t StableHash(const void* data, size_t len, uint64_t seed) {
  uint64_t h = 0xcbf29ce484222325ULL ^ seed;
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < len; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return Mix64(h);
}

// Distinct seeds keep a client IP and an endpoint key with the same bytes
// from hashing alike.
constexpr uint64_t kKeySeed = 0x6b6579;     // "key"
constexpr uint64_t kIpv4Seed = 0x697034;    // "ip4"
constexpr uint64_t kIpv6Seed = 0x697036;    // "ip6"
constexpr uint64_t kNoIpSeed = 0x6e6f6970;  // "noip"

struct Strategies {
  Strategy strategy;
  absl::string_view name;
};
constexpr Strategies kStrategies[] = {
    {Strategy::kLeastBytes, "least_bytes"},
    {Strategy::kRoundRobin, "round_robin"},
    {Strategy::kLeastConnections, "least_connections"},
    {Strategy::kRandom, "random"},
    {Strategy::kSourceHash, "source_hash"},
};

uint32_t Weight(const EndpointView& e) { return e.weight == 0 ? 1 : e.weight; }
int64_t Active(const EndpointView& e) { return e.active > 0 ? e.active : 0; }
double History(const EndpointView& e) {
  return e.history > 0 ? e.history : 0;  // false for NaN too
}

// a.active/a.weight compared with b.active/b.weight, exactly: -1, 0 or 1.
int CompareActive(const EndpointView& a, const EndpointView& b) {
  const __int128 lhs = static_cast<__int128>(Active(a)) * Weight(b);
  const __int128 rhs = static_cast<__int128>(Active(b)) * Weight(a);
  return lhs < rhs ? -1 : (lhs > rhs ? 1 : 0);
}

// The candidate tier (see the class comment); lower is preferred.
int Tier(const EndpointView& e) { return (e.up ? 0 : 2) + (e.backup ? 1 : 0); }

bool Excluded(int index, absl::Span<const int> exclude) {
  for (int x : exclude) {
    if (x == index) return true;
  }
  return false;
}

// Rendezvous score: weight / -ln(u) with u uniform in (0, 1) from the hash.
// The endpoint with the highest score wins, and each wins with probability
// weight / total weight (the exponential-race form of weighted HRW).
double HrwScore(uint64_t client_hash, const EndpointView& e) {
  const uint64_t h = Mix64(client_hash ^ Mix64(e.key_hash + 0x9e3779b97f4a7c15ULL));
  const double u = (static_cast<double>(h >> 11) + 0.5) * 0x1.0p-53;  // never 0 or 1
  return static_cast<double>(Weight(e)) / -std::log(u);
}

uint64_t SystemSeed(const void* salt) {
  uint64_t seed = 0;
  if (::getrandom(&seed, sizeof(seed), GRND_NONBLOCK) == static_cast<ssize_t>(sizeof(seed))) {
    return seed;
  }
  // No entropy yet (early boot): a poor seed still spreads workers apart.
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return Mix64(static_cast<uint64_t>(ts.tv_nsec) ^ (static_cast<uint64_t>(ts.tv_sec) << 30) ^
               reinterpret_cast<uintptr_t>(salt));
}

}  // namespace

absl::string_view StrategyName(Strategy strategy) {
  for (const auto& s : kStrategies) {
    if (s.strategy == strategy) return s.name;
  }
  return "unknown";
}

absl::StatusOr<Strategy> ParseStrategy(absl::string_view name) {
  for (const auto& s : kStrategies) {
    if (s.name == name) return s.strategy;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown balance strategy \"", name,
                   "\" (want least_bytes, round_robin, least_connections, random or source_hash)"));
}

uint64_t EndpointKeyHash(absl::string_view key) {
  return StableHash(key.data(), key.size(), kKeySeed);
}

uint64_t ClientHash(const net::Address& client) {
  const net::Address a = client.Unmapped();
  if (a.family() == AF_INET) {
    const auto* in4 = reinterpret_cast<const sockaddr_in*>(a.sa());
    return StableHash(&in4->sin_addr, sizeof(in4->sin_addr), kIpv4Seed);
  }
  if (a.family() == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(a.sa());
    return StableHash(&in6->sin6_addr, sizeof(in6->sin6_addr), kIpv6Seed);
  }
  return StableHash(nullptr, 0, kNoIpSeed);
}

Balancer::Balancer(Strategy strategy) : Balancer(strategy, SystemSeed(this)) {}

Balancer::Balancer(Strategy strategy, uint64_t seed) : strategy_(strategy), rng_state_(seed) {}

void Balancer::Reset() {
  last_ = -1;
  current_.assign(current_.size(), 0);
}

int Balancer::Pick(absl::Span<const EndpointView> endpoints, const net::Address& client,
                   absl::Span<const int> exclude) {
  if (endpoints.empty() ||
      endpoints.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return -1;
  }
  int tier = 4;
  for (size_t i = 0; i < endpoints.size() && tier > 0; ++i) {
    const int t = Tier(endpoints[i]);
    if (t < tier && !Excluded(static_cast<int>(i), exclude)) tier = t;
  }
  if (tier == 4) return -1;  // every endpoint excluded

  switch (strategy_) {
    case Strategy::kLeastBytes:
      return PickLeast(endpoints, exclude, tier, /*by_history=*/true);
    case Strategy::kLeastConnections:
      return PickLeast(endpoints, exclude, tier, /*by_history=*/false);
    case Strategy::kRoundRobin:
      return PickRoundRobin(endpoints, exclude, tier);
    case Strategy::kRandom:
      return PickRandom(endpoints, exclude, tier);
    case Strategy::kSourceHash:
      return PickSourceHash(endpoints, exclude, tier, client);
  }
  return PickLeast(endpoints, exclude, tier, /*by_history=*/true);
}

int Balancer::PickLeast(absl::Span<const EndpointView> endpoints, absl::Span<const int> exclude,
                        int tier, bool by_history) {
  const int n = static_cast<int>(endpoints.size());
  // Distance from the index after the last pick: among ties the smallest wins,
  // which rotates through tied endpoints on repeated picks.
  const int start = last_ < 0 ? 0 : (last_ + 1) % n;
  int best = -1;
  double best_load = 0;
  int best_dist = 0;
  for (int i = 0; i < n; ++i) {
    const EndpointView& e = endpoints[i];
    if (Tier(e) != tier || Excluded(i, exclude)) continue;
    const double load = by_history ? History(e) / Weight(e) : 0;
    const int dist = i >= start ? i - start : i + n - start;
    if (best < 0) {
      best = i, best_load = load, best_dist = dist;
      continue;
    }
    if (load != best_load) {
      if (load < best_load) best = i, best_load = load, best_dist = dist;
      continue;
    }
    const int by_active = CompareActive(e, endpoints[best]);
    if (by_active < 0 || (by_active == 0 && dist < best_dist)) {
      best = i, best_load = load, best_dist = dist;
    }
  }
  last_ = best;
  return best;
}

int Balancer::PickRoundRobin(absl::Span<const EndpointView> endpoints,
                             absl::Span<const int> exclude, int tier) {
  const int n = static_cast<int>(endpoints.size());
  if (current_.size() != endpoints.size()) current_.assign(endpoints.size(), 0);
  // nginx's smooth weighted round robin over this pick's candidates: each
  // gains its weight, the highest wins and pays back the total.
  int best = -1;
  int64_t total = 0;
  for (int i = 0; i < n; ++i) {
    const EndpointView& e = endpoints[i];
    if (Tier(e) != tier || Excluded(i, exclude)) continue;
    current_[i] += Weight(e);
    total += Weight(e);
    if (best < 0 || current_[i] > current_[best]) best = i;
  }
  if (best < 0) return -1;  // Pick() found a candidate in `tier`; kept for safety
  current_[best] -= total;
  last_ = best;
  return best;
}

int Balancer::PickRandom(absl::Span<const EndpointView> endpoints, absl::Span<const int> exclude,
                         int tier) {
  const int n = static_cast<int>(endpoints.size());
  uint64_t total = 0;
  for (int i = 0; i < n; ++i) {
    if (Tier(endpoints[i]) == tier && !Excluded(i, exclude)) total += Weight(endpoints[i]);
  }
  // The endpoint at weighted position `r` among candidates other than `skip`.
  auto at = [&](uint64_t r, int skip) {
    int last = -1;
    for (int i = 0; i < n; ++i) {
      if (i == skip || Tier(endpoints[i]) != tier || Excluded(i, exclude)) continue;
      const uint64_t w = Weight(endpoints[i]);
      if (r < w) return i;
      r -= w;
      last = i;
    }
    return last;
  };
  if (total == 0) return -1;  // Pick() found a candidate in `tier`; kept for safety
  const int first = at(Uniform(total), -1);
  const uint64_t rest = total - Weight(endpoints[first]);
  if (rest == 0) {
    last_ = first;
    return first;  // the only candidate
  }
  const int second = at(Uniform(rest), first);
  const int best = CompareActive(endpoints[second], endpoints[first]) < 0 ? second : first;
  last_ = best;
  return best;
}

int Balancer::PickSourceHash(absl::Span<const EndpointView> endpoints,
                             absl::Span<const int> exclude, int tier, const net::Address& client) {
  const int n = static_cast<int>(endpoints.size());
  const uint64_t client_hash = ClientHash(client);
  int best = -1;
  double best_score = 0;
  for (int i = 0; i < n; ++i) {
    const EndpointView& e = endpoints[i];
    if (Tier(e) != tier || Excluded(i, exclude)) continue;
    const double score = HrwScore(client_hash, e);
    // Equal scores mean equal key hashes (a duplicate key): prefer the lower
    // key hash, then the lower index, so the answer does not depend on order
    // for distinct keys.
    if (best < 0 || score > best_score ||
        (score == best_score && e.key_hash < endpoints[best].key_hash)) {
      best = i, best_score = score;
    }
  }
  last_ = best;
  return best;
}

uint64_t Balancer::NextRandom() {
  rng_state_ += 0x9e3779b97f4a7c15ULL;  // splitmix64
  return Mix64(rng_state_);
}

uint64_t Balancer::Uniform(uint64_t bound) {
  // Lemire's multiply-shift with rejection: unbiased for any bound.
  const uint64_t threshold = (0 - bound) % bound;
  while (true) {
    const unsigned __int128 m = static_cast<unsigned __int128>(NextRandom()) * bound;
    if (static_cast<uint64_t>(m) >= threshold) return static_cast<uint64_t>(m >> 64);
  }
}

}  // namespace ferry::balance
