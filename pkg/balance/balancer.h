#pragma once

// Endpoint selection for a rule's targets: which endpoint a new connection (or
// a connect retry) goes to. Pure logic: no sockets, no clocks, no threads; the
// caller supplies each endpoint's byte history, live connection count and
// health as plain values.

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "pkg/net/address.h"

namespace ferry::balance {

// The `balance` setting of a rule.
enum class Strategy {
  kLeastBytes,        // least decayed byte history per unit of weight (the default)
  kRoundRobin,        // smooth weighted round robin
  kLeastConnections,  // fewest live connections per unit of weight
  kRandom,            // power of two choices by live connections per unit of weight
  kSourceHash,        // weighted rendezvous hashing of the client IP
};

// The config spelling: "least_bytes", "round_robin", "least_connections",
// "random", "source_hash".
absl::string_view StrategyName(Strategy strategy);

// The inverse of StrategyName(). An unknown name is InvalidArgument naming it
// and listing the accepted names.
absl::StatusOr<Strategy> ParseStrategy(absl::string_view name);

// What Pick() sees of one endpoint. A value the caller fills from its endpoint
// set, byte history and health state; Pick() only reads it.
struct EndpointView {
  // Decayed bytes transferred (least_bytes). Negative or NaN counts as 0.
  double history = 0;
  // Live connections (least_bytes ties, least_connections, random). Negative
  // counts as 0.
  int64_t active = 0;
  // Relative capacity: history and active are compared divided by it, round
  // robin and source_hash give it a proportional share. 0 counts as 1.
  uint32_t weight = 1;
  // A backup is used only while no non-backup endpoint is up.
  bool backup = false;
  // False while the endpoint is ejected after failures.
  bool up = true;
  // EndpointKeyHash() of the endpoint key ("IP:PORT", "[IPv6]:PORT",
  // "unix:/path"), computed once when the endpoint set is built. Only
  // source_hash reads it; it must be set for that strategy, because hashing
  // the key rather than the index keeps clients in place when a DNS answer
  // comes back reordered.
  uint64_t key_hash = 0;
};

// A hash of an endpoint key for EndpointView::key_hash. Stable across
// processes, restarts and builds, so every ferry in a fleet maps a client IP
// to the same endpoint.
uint64_t EndpointKeyHash(absl::string_view key);

// The hash source_hash uses for a client: its IP only (not the port), with an
// IPv4-mapped IPv6 address hashing like the IPv4 one. Clients without an IP
// (unix sockets) all hash to one fixed value. Stable like EndpointKeyHash().
uint64_t ClientHash(const net::Address& client);

// Per-worker selection state for one rule: the round-robin position, the
// smooth weighted round-robin counters and the random generator. Owned by the
// worker loop that runs the rule's sessions; not thread-safe, so each worker
// holds its own Balancer per rule and calls it only from its loop thread.
//
// Candidates. Every endpoint falls in the first matching tier:
//   1. up, not backup
//   2. up, backup
//   3. down, not backup
//   4. down, backup
// Pick() chooses, by the strategy, among the non-excluded endpoints of the
// lowest tier that has any. So backups serve only while no non-backup endpoint
// is up, and when nothing is up every endpoint is still tried ("never refuse
// while any might answer"), backups last. An excluded endpoint does not count,
// so a connect retry that has tried every up non-backup endpoint falls through
// to the backups, then to ejected endpoints.
//
// Strategies (ties are exact equality of the compared quantities):
//   least_bytes        smallest history/weight; ties go to fewer active/weight,
//                      then round robin among those still tied.
//   least_connections  fewest active/weight; ties round robin.
//   round_robin        smooth weighted round robin (as in nginx): each
//                      candidate gets its weight's share of picks, spread out
//                      rather than in bursts; equal weights rotate in index
//                      order.
//   random             two distinct candidates drawn with probability
//                      proportional to weight; the one with fewer active/weight
//                      wins (the first drawn on a tie). Reproducible for a seed.
//   source_hash        rendezvous (highest random weight) hashing of
//                      ClientHash(client) with each key_hash, weighted.
//
// Why rendezvous hashing for source_hash: it needs no ring to build or keep in
// step with the endpoint set, gives each endpoint a share proportional to its
// weight, and moves the fewest clients possible. When an endpoint leaves only
// its clients move; when one joins only clients that now rank it first move,
// about weight/total of them. Its per-candidate ranking also gives a stable
// fallback: a client whose endpoint is ejected or excluded goes to its
// second-ranked endpoint, and returns when the first is back. The cost, one
// hash and one logarithm per endpoint, is O(n) like the other strategies.
//
// Round-robin state (the rotation point and the weighted counters) is kept by
// index. A new endpoint set with a different size resets it; call Reset() when
// the set changes otherwise. Stale state only shifts the next few picks.
class Balancer {
 public:
  // Seeds the random generator from the system (random only).
  explicit Balancer(Strategy strategy);
  // A fixed seed makes random reproducible (tests).
  Balancer(Strategy strategy, uint64_t seed);

  Balancer(const Balancer&) = delete;
  Balancer& operator=(const Balancer&) = delete;
  Balancer(Balancer&&) = default;
  Balancer& operator=(Balancer&&) = default;

  Strategy strategy() const { return strategy_; }

  // The index in `endpoints` for a new connection, or -1 when `endpoints` is
  // empty or every one of them is in `exclude`. `exclude` lists the indices
  // already tried for this connection (a retry); indices out of range are
  // ignored. `client` matters only for source_hash. O(endpoints.size() *
  // (1 + exclude.size())); allocates only when the endpoint count grows
  // (round_robin's counters).
  int Pick(absl::Span<const EndpointView> endpoints, const net::Address& client,
           absl::Span<const int> exclude = {});

  // Forgets the rotation point and the weighted round-robin counters.
  void Reset();

 private:
  int PickLeast(absl::Span<const EndpointView> endpoints, absl::Span<const int> exclude, int tier,
                bool by_history);
  int PickRoundRobin(absl::Span<const EndpointView> endpoints, absl::Span<const int> exclude,
                     int tier);
  int PickRandom(absl::Span<const EndpointView> endpoints, absl::Span<const int> exclude, int tier);
  int PickSourceHash(absl::Span<const EndpointView> endpoints, absl::Span<const int> exclude,
                     int tier, const net::Address& client);
  uint64_t NextRandom();
  // Uniform in [0, bound); bound > 0.
  uint64_t Uniform(uint64_t bound);

  Strategy strategy_;
  uint64_t rng_state_;
  // The index picked last; ties rotate to the next tied index after it.
  int last_ = -1;
  // Smooth weighted round-robin counters, one per endpoint index.
  std::vector<int64_t> current_;
};

}  // namespace ferry::balance
