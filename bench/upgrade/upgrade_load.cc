// upgrade_load: the two ends of the upgrade scenario (e2e/upgrade_test.sh).
//
//   upgrade_load echo --port P [--ready-file F]
//       An epoll echo server on 127.0.0.1:P: writes back what it reads and
//       closes on EOF. Runs until SIGTERM/SIGINT.
//   upgrade_load load --port P [--concurrency N] [--max-seconds S]
//                     [--timeout-ms T] [--bytes B]
//       Keeps N short connections in flight to 127.0.0.1:P: each connects,
//       sends B bytes (a per-connection pattern), reads them back, closes
//       its write side, waits for EOF, closes. Runs until SIGTERM/SIGINT or S
//       seconds, then starts no new connection, waits (at most T ms) for those
//       in flight, and prints one line on stdout:
//         ok=.. refused=.. reset=.. eof=.. timeout=.. corrupt=.. other=.. seconds=.. rate=..
//       refused: the connect got ECONNREFUSED. reset: ECONNRESET, EPIPE or
//       ENOTCONN (shutdown after a reset) at any step. eof: the echo ended
//       before all B bytes came back. timeout: a connection took longer than
//       T ms. corrupt: the echo differs. other: any other error.
//       The first 20 failures are listed on stderr with their time since the
//       start and the step they happened in (connect, write, read, wait-eof).
//       Exit status: 0 when every connection was ok, 1 otherwise, 2 on bad usage.
//
// One file, no dependency: e2e/upgrade_test.sh compiles it with
// `g++ -O2 -std=c++17`. Single-threaded on purpose: one epoll loop reaches
// several thousand connections a second on loopback, more than a relay with
// two workers on a shared machine serves.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

volatile sig_atomic_t g_stop = 0;
void OnStop(int) { g_stop = 1; }

int64_t NowMillis() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1'000'000;
}

[[noreturn]] void Usage(const char* msg) {
  std::fprintf(stderr,
               "upgrade_load: %s\n"
               "usage: upgrade_load echo --port P [--ready-file F]\n"
               "       upgrade_load load --port P [--concurrency N] [--max-seconds S]\n"
               "                         [--timeout-ms T] [--bytes B]\n",
               msg);
  std::exit(2);
}

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "upgrade_load: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

long ParseNumber(const char* flag, const char* text, long min, long max) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < min || v > max) {
    std::string msg = std::string(flag) + ": want an integer in [" + std::to_string(min) + ", " +
                      std::to_string(max) + "], got \"" + text + "\"";
    Usage(msg.c_str());
  }
  return v;
}

void RaiseFdLimit() {
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

void InstallStopHandlers() {
  struct sigaction sa {};
  sa.sa_handler = OnStop;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

sockaddr_in Loopback(int port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sa;
}

// ---- echo ----

int RunEcho(int port, const char* ready_file) {
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (lfd < 0) Die("socket");
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in sa = Loopback(port);
  if (bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) Die("bind");
  if (listen(lfd, 4096) != 0) Die("listen");
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) Die("epoll_create1");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = lfd;
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  if (ready_file != nullptr) {
    FILE* f = std::fopen(ready_file, "w");
    if (f == nullptr) Die(ready_file);
    std::fclose(f);
  }
  char buf[16384];
  epoll_event events[256];
  while (!g_stop) {
    int n = epoll_wait(ep, events, 256, 200);
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == lfd) {
        for (int k = 0; k < 256; ++k) {
          int c = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (c < 0) break;
          epoll_event cev{};
          cev.events = EPOLLIN | EPOLLRDHUP;
          cev.data.fd = c;
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
        }
        continue;
      }
      // The payloads are small: a blocking-free read-then-write suffices; a
      // short write (never seen with a few bytes) closes the connection.
      for (;;) {
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r > 0) {
          if (write(fd, buf, static_cast<size_t>(r)) != r) {
            close(fd);
            break;
          }
          continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) break;
        close(fd);  // EOF or error; close() also removes it from epoll
        break;
      }
    }
  }
  return 0;
}

// ---- load ----

enum Result { kOk, kRefused, kReset, kEof, kTimeout, kCorrupt, kOther, kResults };
const char* const kResultNames[kResults] = {"ok",      "refused", "reset", "eof",
                                            "timeout", "corrupt", "other"};

enum Step { kConnecting, kWriting, kReading, kWaitingEof };
const char* const kStepNames[] = {"connect", "write", "read", "wait-eof"};

struct Conn {
  int fd = -1;
  Step step = kConnecting;
  int64_t started_ms = 0;
  uint64_t id = 0;
  size_t sent = 0;
  size_t got = 0;
};

struct Load {
  int port = 0;
  size_t bytes = 8;
  int64_t timeout_ms = 5000;
  int64_t start_ms = 0;
  int ep = -1;
  uint64_t next_id = 0;
  uint64_t counts[kResults] = {};
  int failures_listed = 0;
  std::vector<Conn> conns;

  char PatternByte(const Conn& c, size_t i) const {
    return static_cast<char>('a' + (c.id * 7 + i) % 26);
  }

  void Finish(Conn& c, Result r, int err) {
    ++counts[r];
    if (r != kOk && failures_listed < 20) {
      ++failures_listed;
      std::fprintf(stderr, "upgrade_load: t=%lldms conn=%llu %s at %s%s%s (echoed %zu/%zu)\n",
                   static_cast<long long>(NowMillis() - start_ms),
                   static_cast<unsigned long long>(c.id), kResultNames[r], kStepNames[c.step],
                   err != 0 ? ": " : "", err != 0 ? std::strerror(err) : "", c.got, bytes);
    }
    if (c.fd >= 0) close(c.fd);
    c.fd = -1;
  }

  Result Classify(int err) const {
    switch (err) {
      case ECONNREFUSED:
        return kRefused;
      case ECONNRESET:
      case EPIPE:
      case ENOTCONN:  // shutdown() after the peer's RST
        return kReset;
      case ETIMEDOUT:
        return kTimeout;
      default:
        return kOther;
    }
  }

  // Starts connection slot `i`; a connect that fails at once is finished here.
  void Start(size_t i) {
    Conn& c = conns[i];
    c = Conn{};
    c.id = next_id++;
    c.started_ms = NowMillis();
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0) {
      Finish(c, kOther, errno);
      return;
    }
    int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    sockaddr_in sa = Loopback(port);
    if (connect(c.fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 &&
        errno != EINPROGRESS) {
      Finish(c, Classify(errno), errno);
      return;
    }
    epoll_event ev{};
    ev.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = i;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev) != 0) Finish(c, kOther, errno);
  }

  // Advances connection slot `i` as far as it goes without blocking.
  void Step(size_t i) {
    Conn& c = conns[i];
    if (c.fd < 0) return;
    if (c.step == kConnecting) {
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err == EINPROGRESS || err == EALREADY) return;
      if (err != 0) return Finish(c, Classify(err), err);
      // Still in progress when neither an error nor writable: wait.
      sockaddr_in peer{};
      socklen_t plen = sizeof(peer);
      if (getpeername(c.fd, reinterpret_cast<sockaddr*>(&peer), &plen) != 0) {
        if (errno == ENOTCONN) {
          // Not connected yet, or failed: SO_ERROR read above was 0, so the
          // handshake is still running.
          return;
        }
        return Finish(c, kOther, errno);
      }
      c.step = kWriting;
    }
    if (c.step == kWriting) {
      char out[256];
      while (c.sent < bytes) {
        size_t n = std::min(sizeof(out), bytes - c.sent);
        for (size_t k = 0; k < n; ++k) out[k] = PatternByte(c, c.sent + k);
        ssize_t w = send(c.fd, out, n, MSG_NOSIGNAL);
        if (w < 0) {
          if (errno == EAGAIN) return;
          return Finish(c, Classify(errno), errno);
        }
        c.sent += static_cast<size_t>(w);
      }
      c.step = kReading;
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLRDHUP;
      ev.data.u64 = i;
      epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
    }
    char in[4096];
    for (;;) {
      ssize_t r = read(c.fd, in, sizeof(in));
      if (r < 0) {
        if (errno == EAGAIN) return;
        return Finish(c, Classify(errno), errno);
      }
      if (r == 0) {
        if (c.step == kWaitingEof) return Finish(c, kOk, 0);
        return Finish(c, kEof, 0);
      }
      if (c.step != kReading || c.got + static_cast<size_t>(r) > bytes) {
        return Finish(c, kCorrupt, 0);
      }
      for (ssize_t k = 0; k < r; ++k) {
        if (in[k] != PatternByte(c, c.got + static_cast<size_t>(k))) {
          return Finish(c, kCorrupt, 0);
        }
      }
      c.got += static_cast<size_t>(r);
      if (c.got == bytes) {
        // The whole echo is back: half-close and wait for the relay's EOF, so
        // the connection counts as ok only once it ended cleanly.
        c.step = kWaitingEof;
        if (shutdown(c.fd, SHUT_WR) != 0) return Finish(c, Classify(errno), errno);
      }
    }
  }

  void ExpireOld(int64_t now) {
    for (Conn& c : conns) {
      if (c.fd >= 0 && now - c.started_ms > timeout_ms) Finish(c, kTimeout, 0);
    }
  }

  size_t InFlight() const {
    size_t n = 0;
    for (const Conn& c : conns) n += c.fd >= 0;
    return n;
  }
};

int RunLoad(int port, int concurrency, int64_t max_seconds, int64_t timeout_ms, size_t bytes) {
  Load load;
  load.port = port;
  load.bytes = bytes;
  load.timeout_ms = timeout_ms;
  load.conns.resize(static_cast<size_t>(concurrency));
  load.ep = epoll_create1(EPOLL_CLOEXEC);
  if (load.ep < 0) Die("epoll_create1");
  load.start_ms = NowMillis();
  int64_t stop_at = load.start_ms + max_seconds * 1000;
  int64_t stopped_ms = 0;
  for (size_t i = 0; i < load.conns.size(); ++i) load.Start(i);
  epoll_event events[512];
  for (;;) {
    int64_t now = NowMillis();
    bool stopping = g_stop || now >= stop_at;
    if (stopping && stopped_ms == 0) stopped_ms = now;
    if (stopping && (load.InFlight() == 0 || now - stopped_ms > timeout_ms)) break;
    int n = epoll_wait(load.ep, events, 512, 50);
    for (int k = 0; k < n; ++k) load.Step(events[k].data.u64);
    now = NowMillis();
    load.ExpireOld(now);
    if (!g_stop && now < stop_at) {
      for (size_t i = 0; i < load.conns.size(); ++i) {
        if (load.conns[i].fd < 0) load.Start(i);
      }
    }
  }
  // Whatever is still open after the grace period timed out.
  load.ExpireOld(INT64_MAX / 2);
  double seconds = static_cast<double>((stopped_ms ? stopped_ms : NowMillis()) - load.start_ms) /
                   1000.0;
  uint64_t total = 0;
  for (uint64_t c : load.counts) total += c;
  for (int r = 0; r < kResults; ++r) {
    std::printf("%s=%llu ", kResultNames[r], static_cast<unsigned long long>(load.counts[r]));
  }
  std::printf("seconds=%.2f rate=%.0f\n", seconds,
              seconds > 0 ? static_cast<double>(load.counts[kOk]) / seconds : 0.0);
  std::fflush(stdout);
  return load.counts[kOk] == total && total > 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) Usage("missing mode (echo or load)");
  std::string mode = argv[1];
  if (mode != "echo" && mode != "load") Usage(("unknown mode \"" + mode + "\"").c_str());
  int port = 0;
  int concurrency = 16;
  int64_t max_seconds = 60;
  int64_t timeout_ms = 5000;
  size_t bytes = 8;
  const char* ready_file = nullptr;
  for (int i = 2; i < argc; ++i) {
    std::string flag = argv[i];
    if (i + 1 >= argc) Usage((flag + ": missing value").c_str());
    const char* v = argv[++i];
    if (flag == "--port") {
      port = static_cast<int>(ParseNumber("--port", v, 1, 65535));
    } else if (flag == "--concurrency") {
      concurrency = static_cast<int>(ParseNumber("--concurrency", v, 1, 10000));
    } else if (flag == "--max-seconds") {
      max_seconds = ParseNumber("--max-seconds", v, 1, 3600);
    } else if (flag == "--timeout-ms") {
      timeout_ms = ParseNumber("--timeout-ms", v, 1, 600000);
    } else if (flag == "--bytes") {
      bytes = static_cast<size_t>(ParseNumber("--bytes", v, 1, 1 << 20));
    } else if (flag == "--ready-file") {
      ready_file = v;
    } else {
      Usage(("unknown flag \"" + flag + "\"").c_str());
    }
  }
  if (port == 0) Usage("--port is required");
  RaiseFdLimit();
  InstallStopHandlers();
  if (mode == "echo") return RunEcho(port, ready_file);
  return RunLoad(port, concurrency, max_seconds, timeout_ms, bytes);
}
