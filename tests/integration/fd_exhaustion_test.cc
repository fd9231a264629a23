// Promise: running out of file descriptors degrades service and never
// crashes or spins. The real binary runs with RLIMIT_NOFILE 64 (set in the
// child before exec) and gets more clients than it has fds for; it must stay
// alive, use next to no CPU while starved, and relay again once fds free up.
//
// Where the limit bites depends on the parity of the free fds (each relayed
// connection takes two): with an even count the last fd goes to an upstream
// socket and accept() itself fails with EMFILE; with an odd count accept()
// gets the last fd and the upstream socket() fails. With one worker the test
// sets the parity it wants (lowering the soft limit by one with prlimit() when
// needed), so both paths are covered deterministically; a third test runs two
// workers, whose accepts race, with the plain limit of 64.

#include <signal.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testing/child_process.h"
#include "tests/testing/proc.h"
#include "tests/testing/relay.h"
#include "tests/testing/sockets.h"
#include "tests/testing/target_server.h"

namespace ferry::testing {
namespace {

constexpr int kFdLimit = 64;

class FdExhaustionTest : public ::testing::Test {
 protected:
  enum class Parity { kAny, kEven, kOdd };

  // Starts ferry with `workers` workers and kFdLimit fds, and leaves it an
  // even or odd number of them free (kAny: as it comes).
  void StartFerry(int workers, Parity parity) {
    ASSERT_TRUE(echo_.ok());
    std::string binary = FerryBinary();
    ASSERT_FALSE(binary.empty()) << "FERRY_BINARY is not set";
    std::string config = dir_.Write(
        "ferry.yaml", OneRuleYaml("127.0.0.1:0", {echo_.target()}, "    connect_attempts: 1\n",
                                  // No admin server: its fds would blur the fd budget.
                                  "admin: { listen: \"\" }\n"));
    ChildProcess::Options options;
    options.max_fds = kFdLimit;
    auto child = ChildProcess::Start(
        binary, {"run", "--config", config, "--workers", absl::StrCat(workers)}, options);
    ASSERT_TRUE(child.ok()) << child.status();
    ferry_ = std::move(*child);
    auto address = WaitListening(*ferry_, "main");
    ASSERT_TRUE(address.ok()) << address.status();
    address_ = *address;
    // The fds that take slots under the limit (fds are allocated lowest first).
    const int idle_fds = CountOpenFds(ferry_->pid(), kFdLimit);
    ASSERT_GT(idle_fds, 0);
    // One whole connection first, while fds are plenty. Besides checking the
    // relay works, this matters in sanitizer builds: UBSan checks a type the
    // first time it sees it with a pipe() (IsAccessibleMemoryRange), which
    // fails without fds and is then reported as a bogus "invalid vptr".
    {
      Connected c = Connect(address_, 2000, 3000);
      ASSERT_TRUE(c.fd.valid()) << std::strerror(c.err);
      ASSERT_EQ(EchoRoundTrip(c.fd.get(), "warm up"), "");
    }
    ASSERT_TRUE(
        WaitUntil([&] { return CountOpenFds(ferry_->pid(), kFdLimit) == idle_fds; }, Millis(3000)))
        << "the warm-up connection's fds were not released";
    int limit = kFdLimit;
    int used = idle_fds;
    if (parity != Parity::kAny && (limit - used) % 2 != (parity == Parity::kEven ? 0 : 1)) {
      --limit;
      rlimit r{static_cast<rlim_t>(limit), static_cast<rlim_t>(kFdLimit)};
      ASSERT_EQ(::prlimit(ferry_->pid(), RLIMIT_NOFILE, &r, nullptr), 0) << std::strerror(errno);
      used = CountOpenFds(ferry_->pid(), limit);
    }
    capacity_ = (limit - used) / 2;
    ASSERT_GT(capacity_, 2) << used << " fds used at start";
  }

  // Fills every fd ferry has with relayed connections, checking each relays.
  void FillToCapacity() {
    for (int i = 0; i < capacity_; ++i) {
      Connected c = Connect(address_, 2000, 3000);
      ASSERT_TRUE(c.fd.valid()) << "client " << i << ": " << std::strerror(c.err);
      ASSERT_EQ(EchoRoundTrip(c.fd.get(), absl::StrCat("client ", i)), "")
          << "client " << i << " of capacity " << capacity_;
      relayed_.push_back(std::move(c.fd));
    }
  }

  // CPU ticks ferry burns over one second of starvation.
  int64_t CpuTicksOverOneSecond() {
    int64_t before = CpuTicks(ferry_->pid());
    std::this_thread::sleep_for(Millis(1000));
    int64_t after = CpuTicks(ferry_->pid());
    return before < 0 || after < 0 ? -1 : after - before;
  }

  void ExpectRelaysAgainThenExitsZero() {
    bool relayed = WaitUntil(
        [&] {
          Connected c = Connect(address_, 1000, 1000);
          return c.fd.valid() && EchoRoundTrip(c.fd.get(), "after") == "";
        },
        Millis(5000), Millis(50));
    EXPECT_TRUE(relayed) << "no new connection relays after the clients closed";
    ASSERT_TRUE(ferry_->Signal(SIGTERM));
    ASSERT_TRUE(ferry_->WaitExit(Millis(5000)).has_value()) << "no exit after SIGTERM";
    EXPECT_EQ(ferry_->exit_code(), 0) << ferry_->Stderr();
  }

  EchoServer echo_{"127.0.0.1:0"};
  TempDir dir_;
  std::unique_ptr<ChildProcess> ferry_;  // killed by pid at the end if still running
  net::Address address_;
  int capacity_ = 0;
  std::vector<base::Fd> relayed_;
};

TEST_F(FdExhaustionTest, AcceptAtFdLimitPausesWithoutSpinningThenServesTheBacklog) {
  ASSERT_NO_FATAL_FAILURE(StartFerry(/*workers=*/1, Parity::kEven));
  ASSERT_NO_FATAL_FAILURE(FillToCapacity());
  // More clients than fds: the kernel completes their handshakes; ferry's
  // accept() fails with EMFILE and must back off, not spin.
  constexpr int kExtra = 40;
  std::vector<base::Fd> waiting;
  for (int i = 0; i < kExtra; ++i) {
    Connected c = Connect(address_, 2000, 3000);
    ASSERT_TRUE(c.fd.valid()) << std::strerror(c.err);
    waiting.push_back(std::move(c.fd));
  }
  EXPECT_TRUE(ferry_->WaitForStderr("accept paused", Millis(3000))) << ferry_->Stderr();
  EXPECT_EQ(ProbePeer(waiting.front().get(), 200), PeerState::kTimeout)
      << "a client over the limit should wait in the backlog";
  int64_t ticks = CpuTicksOverOneSecond();
  ASSERT_GE(ticks, 0);
  EXPECT_TRUE(ferry_->Running()) << ferry_->Stderr();
  EXPECT_LE(ticks, TicksPerSecond() / 5)
      << "ferry used " << ticks << " of " << TicksPerSecond() << " ticks while starved";

  // Freeing fds lets ferry accept the clients that waited, each relayed.
  relayed_.clear();
  for (int i = 0; i < kExtra; ++i) {
    ASSERT_EQ(EchoRoundTrip(waiting[i].get(), absl::StrCat("waited ", i)), "")
        << "waiting client " << i;
    waiting[i].Reset();
  }
  ExpectRelaysAgainThenExitsZero();
}

TEST_F(FdExhaustionTest, UpstreamSocketAtFdLimitEndsClientWithoutSpinningAndRecovers) {
  ASSERT_NO_FATAL_FAILURE(StartFerry(/*workers=*/1, Parity::kOdd));
  ASSERT_NO_FATAL_FAILURE(FillToCapacity());
  // accept() gets the last fd, the upstream socket() cannot: the client is
  // ended (connect_failed), never left hanging, and the loop does not spin.
  constexpr int kExtra = 40;
  std::vector<base::Fd> extra;
  for (int i = 0; i < kExtra; ++i) {
    Connected c = Connect(address_, 2000, 3000);
    ASSERT_TRUE(c.fd.valid()) << std::strerror(c.err);
    extra.push_back(std::move(c.fd));
  }
  Deadline deadline(Millis(3000));
  int ended = 0;
  for (int i = 0; i < kExtra; ++i) {
    PeerState seen = ProbePeer(extra[i].get(), deadline.RemainingMs());
    if (seen == PeerState::kEof || seen == PeerState::kReset) ++ended;
  }
  EXPECT_EQ(ended, kExtra) << "clients over the limit were left hanging";
  int64_t ticks = CpuTicksOverOneSecond();
  ASSERT_GE(ticks, 0);
  EXPECT_TRUE(ferry_->Running()) << ferry_->Stderr();
  EXPECT_LE(ticks, TicksPerSecond() / 5)
      << "ferry used " << ticks << " of " << TicksPerSecond() << " ticks while starved";
  // The connections it holds still relay.
  EXPECT_EQ(EchoRoundTrip(relayed_.front().get(), "still"), "");
  extra.clear();
  relayed_.clear();
  ExpectRelaysAgainThenExitsZero();
}

// Two workers accept in parallel, so which syscall meets the limit is a race;
// whatever it is, no client may be left hanging once fds are free again, and
// the process must neither die nor spin.
TEST_F(FdExhaustionTest, TwoWorkersOverFdLimitStayAliveIdleAndRecover) {
  ASSERT_NO_FATAL_FAILURE(StartFerry(/*workers=*/2, Parity::kAny));
  std::vector<base::Fd> clients;
  const int kClients = capacity_ + 40;  // more than ferry has fds for
  for (int i = 0; i < kClients; ++i) {
    Connected c = Connect(address_, 2000, 2000);
    ASSERT_TRUE(c.fd.valid()) << "client " << i << ": " << std::strerror(c.err);
    // Each either relays now or waits: send something for when it does.
    ASSERT_TRUE(SendAll(c.fd.get(), absl::StrCat("client ", i, ";")));
    clients.push_back(std::move(c.fd));
  }
  int64_t ticks = CpuTicksOverOneSecond();
  ASSERT_GE(ticks, 0);
  EXPECT_TRUE(ferry_->Running()) << ferry_->Stderr();
  EXPECT_LE(ticks, TicksPerSecond() / 5)
      << "ferry used " << ticks << " of " << TicksPerSecond() << " ticks while starved";
  // Closing clients one by one frees fds: every client still open is then
  // either relayed (its bytes come back) or was ended; none hangs.
  int relayed = 0, ended = 0;
  for (int i = 0; i < kClients; ++i) {
    std::string expected = absl::StrCat("client ", i, ";"), got;
    ReadResult r = ReadExactly(clients[i].get(), expected.size(), &got);
    if (r.bytes == expected.size() && got == expected) {
      ++relayed;
    } else if (r.eof || r.err == ECONNRESET) {
      ++ended;
    } else {
      ADD_FAILURE() << "client " << i << " hangs: " << std::strerror(r.err);
      break;
    }
    clients[i].Reset();
  }
  EXPECT_GE(relayed, capacity_);
  EXPECT_EQ(relayed + ended, kClients);
  ExpectRelaysAgainThenExitsZero();
}

}  // namespace
}  // namespace ferry::testing
