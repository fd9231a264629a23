// rate_limit: a limited transfer runs at its limit (measured over 5 s, both
// directions at once, through the splice path and the copy path) and still
// delivers every byte before the FIN; a rule's limit is shared by its
// connections on every worker.

#include <sys/socket.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testing/data.h"
#include "tests/testing/relay.h"
#include "tests/testing/sockets.h"
#include "tests/testing/target_server.h"

namespace ferry::testing {
namespace {

constexpr double kSeconds = 5;

struct Direction {
  Transfer sent, got;
};

// A relay with `fields` on its one rule and a target: Run() sends `bytes`
// each way at once over one connection, each side half-closing after its
// bytes and reading the other's to EOF.
struct LimitedPair {
  explicit LimitedPair(const std::string& fields)
      : target(
            "127.0.0.1:0",
            [this](int fd) {
              std::thread writer([&] {
                down.sent = SendRandom(fd, bytes, 2, 16 * 1024);
                ::shutdown(fd, SHUT_WR);
              });
              up.got = ReceiveAndHash(fd);
              writer.join();
            },
            30000) {
    auto r = Relay::Start(OneRuleYaml("127.0.0.1:0", {target.target()}, fields));
    if (r.ok()) relay = std::move(*r);
    status = r.status();
  }
  // Runs one connection both ways; returns its seconds.
  double Run(uint64_t n) {
    bytes = n;
    Connected c = relay->Connect("main", 30000);
    if (!c.fd.valid()) return -1;
    int64_t start = NowMs();
    std::thread writer([&] {
      up.sent = SendRandom(c.fd.get(), bytes, 1, 16 * 1024);
      ::shutdown(c.fd.get(), SHUT_WR);
    });
    down.got = ReceiveAndHash(c.fd.get());
    writer.join();
    target.WaitFinished(1, Millis(30000));
    return static_cast<double>(NowMs() - start) / 1000;
  }

  uint64_t bytes = 0;
  Direction up, down;
  TargetServer target;
  std::unique_ptr<Relay> relay;
  absl::Status status;
};

void ExpectIntact(const Direction& d, uint64_t bytes, const char* name) {
  EXPECT_EQ(d.sent.bytes, bytes) << name;
  EXPECT_EQ(d.got.bytes, bytes) << name;
  EXPECT_TRUE(d.got.eof) << name << ": the FIN came before the bytes ended";
  EXPECT_EQ(d.got.sha256, d.sent.sha256) << name;
}

TEST(RateLimitTest, ConnectionLimitHoldsWithinTenPercentOverFiveSecondsBothWays) {
  // 1 MiB/s reads big chunks (the splice path); 64 KiB/s small ones (copy).
  for (uint64_t rate : {uint64_t{1} << 20, uint64_t{64} << 10}) {
    SCOPED_TRACE(absl::StrCat(rate, " bytes/s"));
    LimitedPair pair(absl::StrCat("    rate_limit: { connection_bytes_per_second: ", rate, " }\n"));
    ASSERT_TRUE(pair.status.ok()) << pair.status;
    const uint64_t bytes = static_cast<uint64_t>(rate * kSeconds);
    double seconds = pair.Run(bytes);
    ASSERT_GT(seconds, 0);
    ExpectIntact(pair.up, bytes, "client to target");
    ExpectIntact(pair.down, bytes, "target to client");
    double measured = static_cast<double>(bytes) / seconds;
    EXPECT_NEAR(measured / static_cast<double>(rate), 1.0, 0.10)
        << "measured " << measured << " bytes/s over " << seconds << " s";
    if (rate >= (1 << 20)) {
      EXPECT_GT(
          (*pair.relay).loop_totals().pump_bytes[static_cast<int>(metrics::PumpMode::kSplice)], 0u)
          << "the limited transfer never used splice";
    }
  }
}

TEST(RateLimitTest, RuleLimitIsSharedByItsConnectionsAcrossWorkers) {
  constexpr uint64_t kRate = 1 << 20;
  constexpr int kConnections = 4;
  const uint64_t per_connection = static_cast<uint64_t>(kRate * kSeconds) / kConnections;
  EchoServer echo("127.0.0.1:0");
  ASSERT_TRUE(echo.ok());
  auto relay = Relay::Start(
      OneRuleYaml("127.0.0.1:0", {echo.target()},
                  absl::StrCat("    rate_limit: { rule_bytes_per_second: ", kRate, " }\n")));
  ASSERT_TRUE(relay.ok()) << relay.status();
  // Each connection sends its share to the echo server and reads it back;
  // every byte passes the limit twice (once each way), in separate buckets.
  std::vector<std::thread> clients;
  std::vector<Transfer> sent(kConnections), got(kConnections);
  int64_t start = NowMs();
  for (int i = 0; i < kConnections; ++i) {
    clients.emplace_back([&, i] {
      Connected c = (*relay)->Connect("main", 30000);
      if (!c.fd.valid()) return;
      std::thread writer([&] {
        sent[i] = SendRandom(c.fd.get(), per_connection, 10 + i, 16 * 1024);
        ::shutdown(c.fd.get(), SHUT_WR);
      });
      got[i] = ReceiveAndHash(c.fd.get());
      writer.join();
    });
  }
  for (auto& t : clients) t.join();
  double seconds = static_cast<double>(NowMs() - start) / 1000;
  for (int i = 0; i < kConnections; ++i) {
    EXPECT_EQ(got[i].bytes, per_connection) << i;
    EXPECT_EQ(got[i].sha256, sent[i].sha256) << i;
  }
  double measured = static_cast<double>(per_connection * kConnections) / seconds;
  EXPECT_NEAR(measured / kRate, 1.0, 0.10) << "measured " << measured << " bytes/s";
}

}  // namespace
}  // namespace ferry::testing
