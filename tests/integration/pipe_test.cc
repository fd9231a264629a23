// `ferry pipe SOURCE DEST` (tcppipe), run as the real binary: stdin -> TCP and
// TCP -> stdout deliver exactly the bytes sent (SHA-256), every address form
// works, --insert-file comes first, --rate paces, --wait outlasts a target
// that starts late, --progress prints ticks and the exact total, a dead
// stdout is an error and not a SIGPIPE death, and usage errors exit 2 with
// a line naming the problem.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/testing/child_process.h"
#include "tests/testing/data.h"
#include "tests/testing/sockets.h"
#include "tests/testing/target_server.h"

namespace ferry::testing {
namespace {

constexpr uint64_t kMiB = 1 << 20;

// `:PORT` listeners bind $INADDR_DEFAULT: the children inherit it, so every
// listener ferry opens here is on loopback. Set before any child starts.
class LoopbackEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { ::setenv("INADDR_DEFAULT", "127.0.0.1", 1); }
};
const auto* const kLoopbackEnvironment =
    ::testing::AddGlobalTestEnvironment(new LoopbackEnvironment);

std::unique_ptr<ChildProcess> StartFerry(const std::vector<std::string>& args,
                                         const ChildProcess::Options& options = {}) {
  std::string binary = FerryBinary();
  if (binary.empty()) {
    ADD_FAILURE() << "FERRY_BINARY is not set";
    return nullptr;
  }
  std::vector<std::string> argv = {"pipe"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto child = ChildProcess::Start(binary, argv, options);
  if (!child.ok()) {
    ADD_FAILURE() << child.status();
    return nullptr;
  }
  return std::move(*child);
}

ChildProcess::Options StdinBytes(const std::string& bytes) {
  ChildProcess::Options o;
  o.stdin_bytes = bytes;
  return o;
}

// Waits for ferry's exit; returns the exit code (-1: still running or killed).
int WaitCode(ChildProcess& ferry, Millis timeout = Millis(20000)) {
  if (!ferry.WaitExit(timeout).has_value()) {
    ADD_FAILURE() << "ferry did not exit; stderr:\n" << ferry.Stderr();
    return -1;
  }
  ferry.WaitOutputClosed(Millis(2000));
  return ferry.exit_code();
}

// The address of ferry's `msg="listening" side=SIDE` line.
net::Address WaitListeningAddress(ChildProcess& ferry, const std::string& side) {
  const std::string key = absl::StrCat("msg=\"listening\" side=", side, " address=");
  if (!ferry.WaitForStderr(key, Millis(10000))) {
    ADD_FAILURE() << "no listening line; stderr:\n" << ferry.Stderr();
    return net::Address();
  }
  std::string err = ferry.Stderr();
  size_t begin = err.find(key) + key.size();
  size_t end = err.find_first_of(" \n", begin);
  auto address = net::Address::ParseLiteral(err.substr(begin, end - begin));
  if (!address.ok()) {
    ADD_FAILURE() << address.status() << "; stderr:\n" << err;
    return net::Address();
  }
  return *address;
}

// A loopback port nothing listens on: bound, read back, closed.
uint16_t ClosedPort() {
  Listening l = Listen("127.0.0.1:0");
  EXPECT_TRUE(l.fd.valid()) << std::strerror(l.err);
  return l.address.port();
}

// A target that keeps every byte of one connection, with the times of the
// first byte and of the EOF.
class RecordingTarget {
 public:
  RecordingTarget(const std::string& listen = "127.0.0.1:0")
      : server_(listen, [this](int fd) { Record(fd); }) {}

  bool ok() const { return server_.ok(); }
  std::string target() const { return server_.target(); }
  uint16_t port() const { return server_.address().port(); }
  bool WaitDone(Millis timeout = Millis(20000)) { return server_.WaitFinished(1, timeout); }
  std::string received() {
    std::lock_guard<std::mutex> lock(mu_);
    return received_;
  }
  bool eof() {
    std::lock_guard<std::mutex> lock(mu_);
    return eof_;
  }
  // Milliseconds from the first byte to the EOF.
  int64_t StreamMs() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_ms_ - first_ms_;
  }

 private:
  void Record(int fd) {
    char buf[64 * 1024];
    for (;;) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      std::lock_guard<std::mutex> lock(mu_);
      if (n <= 0) {
        eof_ = n == 0;
        last_ms_ = NowMs();
        return;
      }
      if (received_.empty()) first_ms_ = NowMs();
      received_.append(buf, static_cast<size_t>(n));
    }
  }

  std::mutex mu_;
  std::string received_;  // guarded by mu_
  bool eof_ = false;      // guarded by mu_
  int64_t first_ms_ = 0;  // guarded by mu_
  int64_t last_ms_ = 0;   // guarded by mu_
  TargetServer server_;   // last: its threads stop before the fields above go
};

// A file of `size` bytes of RandomStream(seed), written in chunks.
std::string WriteRandomFile(const TempDir& dir, const std::string& name, uint64_t size,
                            uint64_t seed) {
  std::string path = dir.File(name);
  std::ofstream out(path, std::ios::binary);
  RandomStream random(seed);
  std::string chunk(kMiB, '\0');
  for (uint64_t left = size; left > 0;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(left, chunk.size()));
    random.Fill(chunk.data(), n);
    out.write(chunk.data(), static_cast<std::streamsize>(n));
    left -= n;
  }
  out.close();
  EXPECT_TRUE(out.good()) << path;
  return path;
}

TEST(PipeTest, StdinToTcpDeliversEveryByte) {
  const uint64_t size = Scaled(64 * kMiB);
  TempDir dir;
  std::string input = WriteRandomFile(dir, "input.bin", size, 11);
  std::mutex mu;
  Transfer got;
  TargetServer target("127.0.0.1:0", [&](int fd) {
    Transfer t = ReceiveAndHash(fd);
    std::lock_guard<std::mutex> lock(mu);
    got = t;
  });
  ASSERT_TRUE(target.ok());
  ChildProcess::Options options;
  options.stdin_file = input;
  auto ferry = StartFerry({"-", target.target()}, options);
  ASSERT_NE(ferry, nullptr);
  EXPECT_EQ(WaitCode(*ferry, Millis(120000)), 0) << ferry->Stderr();
  ASSERT_TRUE(target.WaitFinished(1, Millis(10000)));
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_TRUE(got.eof);
  EXPECT_EQ(got.bytes, size);
  EXPECT_EQ(got.sha256, RandomSha256(size, 11));
}

TEST(PipeTest, TcpToStdoutWritesExactlyTheClientsBytes) {
  const uint64_t size = Scaled(16 * kMiB);
  auto ferry = StartFerry({":0", "-"});
  ASSERT_NE(ferry, nullptr);
  net::Address address = WaitListeningAddress(*ferry, "source");
  // :0 took $INADDR_DEFAULT's address and a real port.
  ASSERT_EQ(address.HostString(), "127.0.0.1");
  ASSERT_NE(address.port(), 0);
  Connected client = Connect(address);
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);
  Transfer sent = SendRandom(client.fd.get(), size, 22);
  ASSERT_EQ(sent.err, 0) << std::strerror(sent.err);
  client.fd.Reset();  // EOF ends the pipe
  EXPECT_EQ(WaitCode(*ferry), 0) << ferry->Stderr();
  std::string out = ferry->Stdout();
  EXPECT_EQ(out.size(), size);
  EXPECT_EQ(Sha256Hex(out), sent.sha256);
}

TEST(PipeTest, ListeningSourceTakesOneConnectionOnly) {
  auto ferry = StartFerry({":0", "-"});
  ASSERT_NE(ferry, nullptr);
  net::Address address = WaitListeningAddress(*ferry, "source");
  Connected first = Connect(address);
  ASSERT_TRUE(first.fd.valid()) << std::strerror(first.err);
  ASSERT_TRUE(ferry->WaitForStderr("msg=\"accepted\" side=source", Millis(10000)))
      << ferry->Stderr();
  // The listener closed after the accept: a second client is refused.
  Connected second = Connect(address);
  EXPECT_EQ(second.err, ECONNREFUSED) << std::strerror(second.err);
  ASSERT_TRUE(SendAll(first.fd.get(), "only me"));
  first.fd.Reset();
  EXPECT_EQ(WaitCode(*ferry), 0) << ferry->Stderr();
  EXPECT_EQ(ferry->Stdout(), "only me");
}

TEST(PipeTest, ConnectingSourceCopiesWhatTheServerSends) {
  const std::string data = RandomBytes(300 * 1024, 33);
  TargetServer server("127.0.0.1:0", [&](int fd) { SendAll(fd, data); });
  ASSERT_TRUE(server.ok());
  auto ferry = StartFerry({server.target(), "-"});
  ASSERT_NE(ferry, nullptr);
  EXPECT_EQ(WaitCode(*ferry), 0) << ferry->Stderr();
  EXPECT_EQ(Sha256Hex(ferry->Stdout()), Sha256Hex(data));
}

TEST(PipeTest, HostAndPortAsTwoArguments) {
  RecordingTarget target;
  ASSERT_TRUE(target.ok());
  auto ferry =
      StartFerry({"-", "127.0.0.1", absl::StrCat(target.port())}, StdinBytes("two words\n"));
  ASSERT_NE(ferry, nullptr);
  EXPECT_EQ(WaitCode(*ferry), 0) << ferry->Stderr();
  ASSERT_TRUE(target.WaitDone());
  EXPECT_EQ(target.received(), "two words\n");
  EXPECT_TRUE(target.eof());
}

TEST(PipeTest, ListeningDestGetsStdinThenFinAndFerryWaitsForThePeersClose) {
  auto ferry = StartFerry({"-", ":0"}, StdinBytes("to the listener"));
  ASSERT_NE(ferry, nullptr);
  net::Address address = WaitListeningAddress(*ferry, "dest");
  Connected client = Connect(address);
  ASSERT_TRUE(client.fd.valid()) << std::strerror(client.err);
  std::string got;
  ReadResult r = ReadToEof(client.fd.get(), &got);
  EXPECT_TRUE(r.eof) << std::strerror(r.err);
  EXPECT_EQ(got, "to the listener");
  // After its FIN, ferry reads until this side closes: it is still there.
  ASSERT_TRUE(SendAll(client.fd.get(), "discarded reply"));
  EXPECT_FALSE(ferry->WaitExit(Millis(200)).has_value());
  client.fd.Reset();
  EXPECT_EQ(WaitCode(*ferry), 0) << ferry->Stderr();
  EXPECT_EQ(ferry->Stdout(), "");
}

TEST(PipeTest, InsertFileArrivesFirst) {
  TempDir dir;
  const std::string prefix("\x00\x01\xff PREFIX\r\n", 13);
  std::string path = dir.Write("prefix.bin", prefix);
  RecordingTarget target;
  ASSERT_TRUE(target.ok());
  auto ferry = StartFerry({"--insert-file", path, "-", target.target()}, StdinBytes("stdin bytes"));
  ASSERT_NE(ferry, nullptr);
  EXPECT_EQ(WaitCode(*ferry), 0) << ferry->Stderr();
  ASSERT_TRUE(target.WaitDone());
  EXPECT_EQ(target.received(), prefix + "stdin bytes");
}

TEST(PipeTest, UnreadableInsertFileExitsOneNamingIt) {
  RecordingTarget target;
  ASSERT_TRUE(target.ok());
  auto ferry = StartFerry({"--insert-file", "/nonexistent/prefix.bin", "-", target.target()});
  ASSERT_NE(ferry, nullptr);
  EXPECT_EQ(WaitCode(*ferry), 1);
  EXPECT_TRUE(absl::StrContains(
      ferry->Stderr(), "cannot read --insert-file \"/nonexistent/prefix.bin\": No such file"))
      << ferry->Stderr();
  EXPECT_EQ(target.received(), "");
}

TEST(PipeTest, UserDropsRootOnceBoundAndAnUnknownUserExitsOneNamingIt) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  auto unknown = StartFerry({"--user", "no-such-user-here", ":0", "-"});
  ASSERT_NE(unknown, nullptr);
  EXPECT_EQ(WaitCode(*unknown), 1);
  EXPECT_TRUE(absl::StrContains(unknown->Stderr(), "no-such-user-here")) << unknown->Stderr();
}

TEST(PipeTest, RateLimitPacesTheTransfer) {
  // 3 MiB at 1 MiB/s: about 3 s (less the bucket's first tenth of a second).
  const std::string data = RandomBytes(3 * kMiB, 44);
  RecordingTarget target;
  ASSERT_TRUE(target.ok());
  auto ferry = StartFerry({"--rate", "1M", "-", target.target()}, StdinBytes(data));
  ASSERT_NE(ferry, nullptr);
  EXPECT_EQ(WaitCode(*ferry), 0) << ferry->Stderr();
  ASSERT_TRUE(target.WaitDone());
  ASSERT_EQ(Sha256Hex(target.received()), Sha256Hex(data));
  double rate = static_cast<double>(data.size()) * 1000 / static_cast<double>(target.StreamMs());
  EXPECT_GT(rate, 0.9 * kMiB) << "ms=" << target.StreamMs();
  EXPECT_LT(rate, 1.1 * kMiB) << "ms=" << target.StreamMs();
}

TEST(PipeTest, WaitRetriesUntilTheTargetListens) {
  const uint16_t port = ClosedPort();
  auto ferry = StartFerry({"--wait", "10", "-", absl::StrCat("127.0.0.1:", port)},
                          StdinBytes("late but delivered"));
  ASSERT_NE(ferry, nullptr);
  // Ferry has been refused at least once before the target appears.
  ASSERT_TRUE(ferry->WaitForStderr("msg=\"waiting for connect\"", Millis(10000)))
      << ferry->Stderr();
  EXPECT_TRUE(absl::StrContains(ferry->Stderr(), "Connection refused")) << ferry->Stderr();
  RecordingTarget target(absl::StrCat("127.0.0.1:", port));
  ASSERT_TRUE(target.ok());
  EXPECT_EQ(WaitCode(*ferry), 0) << ferry->Stderr();
  ASSERT_TRUE(target.WaitDone());
  EXPECT_EQ(target.received(), "late but delivered");
}

TEST(PipeTest, RefusedConnectWithoutWaitExitsOneNamingAddressAndError) {
  const std::string address = absl::StrCat("127.0.0.1:", ClosedPort());
  auto ferry = StartFerry({"-", address}, StdinBytes("nobody listens"));
  ASSERT_NE(ferry, nullptr);
  EXPECT_EQ(WaitCode(*ferry), 1);
  std::string err = ferry->Stderr();
  EXPECT_TRUE(absl::StrContains(
      err, absl::StrCat("ferry pipe: connect to ", address, ": Connection refused")))
      << err;
  EXPECT_TRUE(absl::StrContains(absl::AsciiStrToLower(err), "connection refused")) << err;
}

TEST(PipeTest, WaitGivesUpAfterItsTimeWithTheLastError) {
  const std::string address = absl::StrCat("127.0.0.1:", ClosedPort());
  const int64_t start = NowMs();
  auto ferry = StartFerry({"--wait", "300ms", "-", address});
  ASSERT_NE(ferry, nullptr);
  EXPECT_EQ(WaitCode(*ferry), 1);
  EXPECT_GE(NowMs() - start, 250);  // it did wait, in 100 ms steps
  EXPECT_TRUE(absl::StrContains(ferry->Stderr(), "Connection refused")) << ferry->Stderr();
}

// The number in "total: N bytes", or -1.
int64_t ProgressTotal(const std::string& err) {
  size_t at = err.find("total: ");
  if (at == std::string::npos) return -1;
  size_t begin = at + 7;
  size_t end = err.find(' ', begin);
  int64_t n = -1;
  if (end == std::string::npos || !absl::SimpleAtoi(err.substr(begin, end - begin), &n)) return -1;
  return n;
}

TEST(PipeTest, ProgressPrintsTicksAndTheExactTotal) {
  // 2.5 MiB at 1 MiB/s: about 2.4 s, so at least two one-second ticks.
  const std::string data = RandomBytes(5 * kMiB / 2, 55);
  RecordingTarget target;
  ASSERT_TRUE(target.ok());
  auto ferry = StartFerry({"--progress", "--rate", "1M", "-", target.target()}, StdinBytes(data));
  ASSERT_NE(ferry, nullptr);
  EXPECT_EQ(WaitCode(*ferry), 0) << ferry->Stderr();
  ASSERT_TRUE(target.WaitDone());
  ASSERT_EQ(target.received().size(), data.size());
  std::string err = ferry->Stderr();
  std::vector<std::string> ticks;
  for (absl::string_view line : absl::StrSplit(err, '\n')) {
    if (absl::StartsWith(line, "progress: ")) ticks.emplace_back(line);
  }
  ASSERT_GE(ticks.size(), 2u) << err;
  // "progress: 1.0s, 1.10 MiB, 1.10 MiB/s": elapsed, total so far and rate in IEC units;
  // the totals grow and never pass what was sent.
  double last_total = 0;
  for (const std::string& tick : ticks) {
    std::vector<std::string> parts = absl::StrSplit(tick.substr(10), ", ");
    ASSERT_EQ(parts.size(), 3u) << tick;
    EXPECT_TRUE(absl::EndsWith(parts[0], "s")) << tick;
    double value = 0;
    std::vector<std::string> total = absl::StrSplit(parts[1], ' ');
    ASSERT_EQ(total.size(), 2u) << tick;
    ASSERT_TRUE(absl::SimpleAtod(total[0], &value)) << tick;
    const double unit = total[1] == "MiB" ? kMiB : total[1] == "KiB" ? 1024 : -1;
    ASSERT_GT(unit, 0) << tick;  // KiB or MiB at this size and rate
    EXPECT_GE(value * unit, last_total) << tick;
    EXPECT_LE(value * unit, static_cast<double>(data.size()) * 1.01) << tick;
    last_total = value * unit;
    EXPECT_TRUE(absl::EndsWith(parts[2], "iB/s") || absl::EndsWith(parts[2], " B/s")) << tick;
  }
  EXPECT_TRUE(absl::StartsWith(ticks[0], "progress: 1.")) << ticks[0];
  EXPECT_EQ(ProgressTotal(err), static_cast<int64_t>(data.size())) << err;
  EXPECT_LT(err.find("progress: "), err.find("total: ")) << err;
}

TEST(PipeTest, ProgressTotalCountsTheInsertedBytes) {
  TempDir dir;
  std::string path = dir.Write("prefix.bin", "0123456789");
  RecordingTarget target;
  ASSERT_TRUE(target.ok());
  auto ferry = StartFerry({"--progress", "--insert-file", path, "-", target.target()},
                          StdinBytes(std::string(1000, 'x')));
  ASSERT_NE(ferry, nullptr);
  EXPECT_EQ(WaitCode(*ferry), 0) << ferry->Stderr();
  ASSERT_TRUE(target.WaitDone());
  EXPECT_EQ(target.received().size(), 1010u);
  EXPECT_EQ(ProgressTotal(ferry->Stderr()), 1010) << ferry->Stderr();
}

// Runs ferry with stdout a pipe whose reader is already gone. The child
// starts with SIGPIPE at its default (killing) action, so only ferry's own
// handling keeps it alive. Returns the wait status; *err gets stderr.
int RunWithDeadStdout(const std::vector<std::string>& args, const TempDir& dir, std::string* err) {
  std::string binary = FerryBinary();
  std::vector<std::string> store = {binary, "pipe"};
  store.insert(store.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : store) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::string err_path = dir.File("stderr.txt");
  base::Fd in(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  base::Fd err_fd(::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  int p[2];
  if (!in.valid() || !err_fd.valid() || ::pipe2(p, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "setup: " << std::strerror(errno);
    return -1;
  }
  ::close(p[0]);  // no reader: the first write gets EPIPE
  base::Fd out(p[1]);
  pid_t pid = ::fork();
  if (pid == 0) {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGPIPE, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::dup2(in.get(), 0);
    ::dup2(out.get(), 1);
    ::dup2(err_fd.get(), 2);
    ::syscall(SYS_close_range, 3u, ~0u, 0u);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  if (pid < 0) {
    ADD_FAILURE() << "fork: " << std::strerror(errno);
    return -1;
  }
  int status = -1;
  bool exited = WaitUntil([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, Millis(10000));
  if (!exited) {
    ADD_FAILURE() << "ferry did not exit";
    ::kill(pid, SIGKILL);
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  std::ifstream f(err_path);
  err->assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  return status;
}

TEST(PipeTest, ClosedStdoutExitsOneWithAMessageNotASignal) {
  const std::string data = RandomBytes(256 * 1024, 66);
  TargetServer source("127.0.0.1:0", [&](int fd) { SendAll(fd, data); });
  ASSERT_TRUE(source.ok());
  TempDir dir;
  std::string err;
  int status = RunWithDeadStdout({source.target(), "-"}, dir, &err);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status) << "; stderr:\n" << err;
  EXPECT_EQ(WEXITSTATUS(status), 1) << err;
  EXPECT_TRUE(absl::StrContains(err, "ferry pipe: write to stdout: Broken pipe")) << err;
}

struct UsageCase {
  std::vector<std::string> args;
  std::string want;
};

TEST(PipeTest, UsageErrorsExitTwoNamingTheProblem) {
  const std::vector<UsageCase> cases = {
      {{}, "missing SOURCE and DEST"},
      {{"-"}, "missing DEST"},
      {{"--bogus", "-", "127.0.0.1:1"}, "unknown flag --bogus"},
      {{"-", "127.0.0.1:70000"}, "bad DEST \"127.0.0.1:70000\": port 70000 out of range"},
      {{"-", "127.0.0.1", "99999"}, "port 99999 out of range"},
      {{"127.0.0.1:http", "-"}, "bad SOURCE \"127.0.0.1:http\": bad port \"http\""},
      {{"nohost", "-"}, "bad SOURCE \"nohost\""},
      {{"-", "-"}, "SOURCE and DEST cannot both be \"-\""},
      {{"--rate", "0", "-", "127.0.0.1:1"}, "bad --rate \"0\""},
      {{"--rate", "fast", "-", "127.0.0.1:1"}, "bad --rate \"fast\""},
      {{"--rate", "-5", "-", "127.0.0.1:1"}, "bad --rate \"-5\""},
      {{"--rate", "1X", "-", "127.0.0.1:1"}, "bad --rate \"1X\""},
      {{"-", "127.0.0.1:1", "--rate"}, "flag --rate needs a value"},
      {{"--wait", "soon", "-", "127.0.0.1:1"}, "bad --wait \"soon\""},
      {{"--wait", "-1", "-", "127.0.0.1:1"}, "bad --wait \"-1\""},
      {{"--progress=yes", "-", "127.0.0.1:1"}, "flag --progress takes no value"},
      {{"-", "127.0.0.1:1", "extra"}, "unexpected argument \"extra\""},
      {{"--log-level", "loud", "-", "127.0.0.1:1"}, "bad --log-level \"loud\""},
  };
  for (const UsageCase& c : cases) {
    auto ferry = StartFerry(c.args);
    ASSERT_NE(ferry, nullptr);
    std::string joined = absl::StrJoin(c.args, " ");
    EXPECT_EQ(WaitCode(*ferry), 2) << joined << "\n" << ferry->Stderr();
    std::string err = ferry->Stderr();
    EXPECT_TRUE(absl::StartsWith(err, "ferry pipe: ")) << joined << "\n" << err;
    EXPECT_TRUE(absl::StrContains(err, c.want)) << joined << "\n" << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << joined << "\n" << err;
  }
}

TEST(PipeTest, RateSuffixesAreIecAndHelpExitsZero) {
  // A valid rate gets past parsing: the refused connect is the only error.
  for (const char* rate : {"100", "64K", "64k", "2M", "2MiB", "1Gi", "1G/s", "500B"}) {
    auto ferry = StartFerry({"--rate", rate, "-", absl::StrCat("127.0.0.1:", ClosedPort())});
    ASSERT_NE(ferry, nullptr);
    EXPECT_EQ(WaitCode(*ferry), 1) << rate << "\n" << ferry->Stderr();
  }
  auto help = StartFerry({"--help"});
  ASSERT_NE(help, nullptr);
  EXPECT_EQ(WaitCode(*help), 0);
  EXPECT_TRUE(absl::StartsWith(help->Stdout(), "Usage: ferry pipe")) << help->Stdout();
}

}  // namespace
}  // namespace ferry::testing
