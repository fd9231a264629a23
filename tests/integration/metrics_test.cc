// The admin endpoint as a scraper sees it: /metrics read back over HTTP and
// checked against the bytes and connections the test made; /healthz,
// /readyz, /endpoints, /config; no series per client.

#include <netinet/in.h>
#include <sys/socket.h>

#include <map>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/testing/admin.h"
#include "tests/testing/data.h"
#include "tests/testing/relay.h"
#include "tests/testing/sockets.h"
#include "tests/testing/target_server.h"

namespace ferry::testing {
namespace {

class MetricsTest : public ::testing::Test {
 protected:
  void StartRelay(const std::string& rule_fields = "", const std::string& top = "") {
    ASSERT_TRUE(echo_.ok());
    auto relay = Relay::Start(OneRuleYaml("127.0.0.1:0", {echo_.target()}, rule_fields, top));
    ASSERT_TRUE(relay.ok()) << relay.status();
    relay_ = std::move(*relay);
    ASSERT_TRUE(relay_->server().admin_address().has_value());
    admin_ = *relay_->server().admin_address();
  }
  std::map<std::string, double> Scrape() {
    HttpResult r = HttpGet(admin_, "/metrics");
    EXPECT_EQ(r.status, 200);
    return Samples(r.body);
  }
  std::string Key(const std::string& name, const std::string& labels) {
    return absl::StrCat(name, "{", labels, "}");
  }

  EchoServer echo_{"127.0.0.1:0"};
  std::unique_ptr<Relay> relay_;
  net::Address admin_;
};

TEST_F(MetricsTest, EverySeriesOfARuleExistsAtZeroBeforeAnyConnection) {
  StartRelay();
  auto m = Scrape();
  std::string ep = absl::StrCat("rule=\"main\",endpoint=\"", echo_.target(), "\"");
  EXPECT_EQ(m.at(Key("ferry_bytes_total", ep + ",direction=\"to_target\"")), 0);
  EXPECT_EQ(m.at(Key("ferry_bytes_total", ep + ",direction=\"to_client\"")), 0);
  for (const char* o : {"ok", "timeout", "denied", "limit", "proxy_protocol", "no_endpoint",
                        "connect_failed", "error"}) {
    EXPECT_EQ(m.at(Key("ferry_connections_total", absl::StrCat("rule=\"main\",outcome=\"", o, "\""))),
              0)
        << o;
  }
  EXPECT_EQ(m.at(Key("ferry_connections_active", "rule=\"main\"")), 0);
  EXPECT_EQ(m.at(Key("ferry_buffered_bytes", "rule=\"main\"")), 0);
  EXPECT_EQ(m.at(Key("ferry_connect_duration_seconds_count", "rule=\"main\"")), 0);
  for (const char* r : {"emfile", "enfile", "enomem", "other"}) {
    EXPECT_EQ(m.at(Key("ferry_accept_errors_total", absl::StrCat("reason=\"", r, "\""))), 0);
  }
  EXPECT_EQ(m.count(Key("ferry_pump_bytes_total", "mode=\"copy\"")), 1u);
  EXPECT_EQ(m.count(Key("ferry_pump_bytes_total", "mode=\"splice\"")), 1u);
  for (const char* p : {"process_open_fds", "process_max_fds", "process_resident_memory_bytes",
                        "process_start_time_seconds"}) {
    ASSERT_EQ(m.count(p), 1u) << p;
    EXPECT_GT(m.at(p), 0) << p;
  }
  EXPECT_EQ(m.count("process_cpu_seconds_total"), 1u);
  bool build_info = false;
  for (const auto& [k, v] : m) build_info |= absl::StartsWith(k, "ferry_build_info{") && v == 1;
  EXPECT_TRUE(build_info);
}

TEST_F(MetricsTest, ScrapedCountersMatchWhatWasRelayed) {
  StartRelay();
  constexpr uint64_t kBytes = 3 << 20;
  {
    Connected c = relay_->Connect();
    ASSERT_TRUE(c.fd.valid());
    std::string data = RandomBytes(kBytes, 5);
    std::string back;
    std::thread reader([&] { ReadExactly(c.fd.get(), kBytes, &back); });
    ASSERT_TRUE(SendAll(c.fd.get(), data));
    reader.join();
    ASSERT_TRUE(back == data);
  }
  ASSERT_TRUE(relay_->WaitOutcome(proxy::Outcome::kOk, 1));
  auto m = Scrape();
  std::string ep = absl::StrCat("rule=\"main\",endpoint=\"", echo_.target(), "\"");
  EXPECT_EQ(m.at(Key("ferry_bytes_total", ep + ",direction=\"to_target\"")), kBytes);
  EXPECT_EQ(m.at(Key("ferry_bytes_total", ep + ",direction=\"to_client\"")), kBytes);
  EXPECT_EQ(m.at(Key("ferry_connections_total", "rule=\"main\",outcome=\"ok\"")), 1);
  EXPECT_EQ(m.at(Key("ferry_connections_active", "rule=\"main\"")), 0);
  EXPECT_EQ(m.at(Key("ferry_connect_duration_seconds_count", "rule=\"main\"")), 1);
  EXPECT_EQ(m.at(Key("ferry_connect_duration_seconds_bucket", "rule=\"main\",le=\"+Inf\"")), 1);
  EXPECT_EQ(m.at(Key("ferry_pump_bytes_total", "mode=\"copy\"")) +
                m.at(Key("ferry_pump_bytes_total", "mode=\"splice\"")),
            2.0 * kBytes);
}

TEST_F(MetricsTest, TenThousandClientsAddNoSeries) {
  StartRelay();
  size_t before = Scrape().size();
  // Clients from 200 different source addresses and 10,000 source ports.
  for (int i = 0; i < 10'000; ++i) {
    base::Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in src{};
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(0x7f000002 + (i % 200));  // 127.0.0.2 ...
    ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&src), sizeof(src)), 0);
    net::Address relay = relay_->address();
    ASSERT_EQ(::connect(fd.get(), relay.sa(), relay.len()), 0) << i;
  }
  ASSERT_TRUE(relay_->WaitIdle(Millis(20000)));
  auto m = Scrape();
  EXPECT_EQ(m.size(), before);
  for (const auto& [k, v] : m) EXPECT_FALSE(absl::StrContains(k, "127.0.0.2\"")) << k;
}

TEST_F(MetricsTest, HealthReadinessAndEndpoints) {
  StartRelay();
  EXPECT_EQ(HttpGet(admin_, "/healthz").status, 200);
  EXPECT_EQ(HttpGet(admin_, "/readyz").status, 200);
  HttpResult e = HttpGet(admin_, "/endpoints");
  EXPECT_EQ(e.status, 200);
  EXPECT_TRUE(absl::StrContains(e.body, "\"name\":\"main\"")) << e.body;
  EXPECT_TRUE(absl::StrContains(e.body, absl::StrCat("\"address\":\"", echo_.target(), "\"")))
      << e.body;
  EXPECT_EQ(HttpGet(admin_, "/config").status, 404);  // not exposed by default
  EXPECT_EQ(HttpGet(admin_, "/nope").status, 404);
}

TEST_F(MetricsTest, ReadyzTurnsUnavailableWhenDrainStarts) {
  StartRelay("", "drain: { delay: \"2s\", timeout: \"2s\" }\n");
  ASSERT_EQ(HttpGet(admin_, "/readyz").status, 200);
  relay_->server().Drain();
  EXPECT_TRUE(WaitUntil([&] { return HttpGet(admin_, "/readyz").status == 503; }, Millis(1000)));
  EXPECT_EQ(HttpGet(admin_, "/healthz").status, 200);  // alive while draining
}

TEST_F(MetricsTest, ConfigIsServedOnlyWhenExposed) {
  StartRelay("", "admin: { listen: \"127.0.0.1:0\", expose_config: true }\n");
  HttpResult c = HttpGet(admin_, "/config");
  EXPECT_EQ(c.status, 200);
  EXPECT_TRUE(absl::StrContains(c.body, "\"listen\": \"127.0.0.1:0\"")) << c.body;
}

TEST(AdminTest, BusyAdminPortIsAStartupErrorNamingIt) {
  Listening taken = Listen("127.0.0.1:0");
  ASSERT_TRUE(taken.fd.valid());
  auto relay = Relay::Start(OneRuleYaml("127.0.0.1:0", {"127.0.0.1:9"}, "",
                                        absl::StrCat("admin: { listen: \"",
                                                     taken.address.ToString(), "\" }\n")));
  ASSERT_FALSE(relay.ok());
  EXPECT_TRUE(absl::StrContains(relay.status().message(), taken.address.ToString()))
      << relay.status();
}

}  // namespace
}  // namespace ferry::testing
