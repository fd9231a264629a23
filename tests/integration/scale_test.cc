// Promise: a flood of connections is relayed correctly and leaves nothing
// behind: 1,000 concurrent connections each get exactly their own bytes
// back, and after 10,000 more the process holds the fds it held before.

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testing/data.h"
#include "tests/testing/proc.h"
#include "tests/testing/relay.h"
#include "tests/testing/sockets.h"
#include "tests/testing/target_server.h"

namespace ferry::testing {
namespace {

void RaiseFdLimit() {
  rlimit r;
  ::getrlimit(RLIMIT_NOFILE, &r);
  r.rlim_cur = r.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &r);
}

struct ManyResult {
  int verified = 0;
  int failed = 0;
  std::string first_error;
};

// Opens `n` connections to `address` at once, without a thread each: every
// connection sends its own `size` bytes (seeded by its index) and must read
// exactly those back through an echo target. Driven by poll() until all are
// verified or `timeout` passes. The sockets are kept open in `keep` if given
// (to hold the connections concurrent), else closed.
ManyResult EchoMany(const net::Address& address, int n, size_t size, uint64_t seed, Millis timeout,
                    std::vector<base::Fd>* keep = nullptr) {
  struct Conn {
    base::Fd fd;
    std::string out;
    std::string in;
    size_t sent = 0;
    bool connected = false;
    bool done = false;
  };
  ManyResult result;
  std::vector<Conn> conns(n);
  auto fail = [&](Conn& c, const std::string& why) {
    if (result.first_error.empty()) result.first_error = why;
    ++result.failed;
    c.done = true;
    c.fd.Reset();
  };
  for (int i = 0; i < n; ++i) {
    Conn& c = conns[i];
    c.out = absl::StrCat("#", i, ":", RandomBytes(size, seed + i));
    c.fd = base::Fd(::socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!c.fd.valid()) {
      fail(c, absl::StrCat("socket: ", std::strerror(errno)));
      continue;
    }
    if (::connect(c.fd.get(), address.sa(), address.len()) == 0) {
      c.connected = true;
    } else if (errno != EINPROGRESS) {
      fail(c, absl::StrCat("connect: ", std::strerror(errno)));
    }
  }
  Deadline deadline(timeout);
  std::vector<pollfd> fds;
  std::vector<int> index;
  char buf[16 * 1024];
  while (result.verified + result.failed < n && !deadline.Expired()) {
    fds.clear();
    index.clear();
    for (int i = 0; i < n; ++i) {
      Conn& c = conns[i];
      if (c.done) continue;
      short events = POLLIN;
      if (!c.connected || c.sent < c.out.size()) events |= POLLOUT;
      fds.push_back({c.fd.get(), events, 0});
      index.push_back(i);
    }
    int ready = ::poll(fds.data(), fds.size(), std::min(deadline.RemainingMs(), 1000));
    if (ready <= 0) continue;
    for (size_t k = 0; k < fds.size(); ++k) {
      if (fds[k].revents == 0) continue;
      Conn& c = conns[index[k]];
      if (!c.connected) {
        int err = 0;
        socklen_t len = sizeof(err);
        ::getsockopt(c.fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
          fail(c, absl::StrCat("connect: ", std::strerror(err)));
          continue;
        }
        c.connected = true;
      }
      while (c.sent < c.out.size()) {
        ssize_t w = ::send(c.fd.get(), c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
        if (w <= 0) break;
        c.sent += static_cast<size_t>(w);
      }
      for (;;) {
        ssize_t r = ::recv(c.fd.get(), buf, sizeof(buf), 0);
        if (r > 0) {
          c.in.append(buf, static_cast<size_t>(r));
          continue;
        }
        if (r == 0) {
          fail(c, absl::StrCat("connection ", index[k], ": EOF after ", c.in.size(), " of ",
                               c.out.size(), " bytes"));
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          fail(c, absl::StrCat("connection ", index[k], ": ", std::strerror(errno)));
        }
        break;
      }
      if (c.done) continue;
      if (c.in.size() > c.out.size()) {
        fail(c, absl::StrCat("connection ", index[k], ": more bytes back than sent"));
      } else if (c.in.size() == c.out.size()) {
        if (c.in != c.out) {
          fail(c, absl::StrCat("connection ", index[k], ": got bytes that are not its own"));
        } else {
          c.done = true;
          ++result.verified;
        }
      }
    }
  }
  if (result.verified + result.failed < n && result.first_error.empty()) {
    result.first_error = absl::StrCat(n - result.verified - result.failed, " timed out");
  }
  for (Conn& c : conns) {
    if (keep != nullptr && c.fd.valid()) {
      keep->push_back(std::move(c.fd));
    }
  }
  return result;  // conns close what is left
}

TEST(ScaleTest, ThousandConcurrentConnectionsEachEchoTheirOwnData) {
  RaiseFdLimit();
  constexpr int kConnections = 1000;
  EchoServer echo("127.0.0.1:0");
  ASSERT_TRUE(echo.ok());
  auto relay = Relay::Start(OneRuleYaml("127.0.0.1:0", {echo.target()}));
  ASSERT_TRUE(relay.ok()) << relay.status();

  std::vector<base::Fd> open;
  ManyResult r = EchoMany((*relay)->address(), kConnections, 4096, 1, Millis(30000), &open);
  EXPECT_EQ(r.verified, kConnections) << r.first_error;
  EXPECT_EQ(r.failed, 0) << r.first_error;
  // All of them at once, each a session of its own.
  EXPECT_EQ((*relay)->totals().active, kConnections);
  EXPECT_EQ(echo.open(), kConnections);

  open.clear();
  ASSERT_TRUE((*relay)->WaitOutcome(proxy::Outcome::kOk, kConnections, Millis(10000)))
      << OutcomesString((*relay)->totals());
  server::RuleTotals t = (*relay)->totals();
  EXPECT_EQ(t.outcome(proxy::Outcome::kOk), static_cast<uint64_t>(kConnections))
      << OutcomesString(t);
  EXPECT_EQ(t.active, 0);
  EXPECT_EQ(t.bytes_to_target, t.bytes_to_client);
}

TEST(ScaleTest, FdCountReturnsToBaselineAfterTenThousandConnections) {
  RaiseFdLimit();
  constexpr int kBatches = 100;
  constexpr int kPerBatch = 100;
  EchoServer echo("127.0.0.1:0");
  ASSERT_TRUE(echo.ok());
  auto relay = Relay::Start(OneRuleYaml("127.0.0.1:0", {echo.target()}));
  ASSERT_TRUE(relay.ok()) << relay.status();

  const int baseline = CountOpenFds();
  ASSERT_GT(baseline, 0);
  for (int b = 0; b < kBatches; ++b) {
    ManyResult r = EchoMany((*relay)->address(), kPerBatch, 64, b * kPerBatch, Millis(10000));
    ASSERT_EQ(r.verified, kPerBatch) << "batch " << b << ": " << r.first_error;
  }
  constexpr uint64_t kTotal = kBatches * kPerBatch;
  ASSERT_TRUE((*relay)->WaitOutcome(proxy::Outcome::kOk, kTotal, Millis(10000)))
      << OutcomesString((*relay)->totals());
  // Closes may still be on their way through deferred deletion.
  bool back = WaitUntil([&] { return CountOpenFds() == baseline; }, Millis(5000), Millis(10));
  EXPECT_TRUE(back) << "fds: baseline " << baseline << ", now " << CountOpenFds();
  server::RuleTotals t = (*relay)->totals();
  EXPECT_EQ(t.outcome(proxy::Outcome::kOk), kTotal) << OutcomesString(t);
  EXPECT_EQ(t.active, 0);
  EXPECT_EQ((*relay)->loop_totals().buffers_in_use, 0);
  EXPECT_EQ((*relay)->loop_totals().pipes_in_use, 0);
}

}  // namespace
}  // namespace ferry::testing
