// pingpong: round-trip time of small messages on one TCP connection.
//
//   pingpong server PORT [HOST]      echo server (a thread per connection)
//   pingpong client [-n ROUNDS] [-s SIZE] [-w WARMUP] [--prime BYTES] [--hold MS]
//                   HOST:PORT[@BYTES]...
//
// The client opens one connection (TCP_NODELAY) to each HOST:PORT ([v6]:port
// for IPv6), optionally pushes BYTES through each echo and back first
// (--prime: a bulk burst, which moves a relay that adapts to bulk traffic,
// like ferry's pump, into its bulk mode; HOST:PORT@BYTES primes that
// connection alone with BYTES, @0 not at all; --hold MS then prints "primed"
// and waits MS milliseconds, so a script can read counters between the burst
// and the timed rounds), then runs WARMUP untimed and ROUNDS
// timed rounds; a round sends SIZE bytes on each connection in turn and waits
// for each SIZE-byte echo. Interleaving the targets round by round puts every
// relay under the same machine conditions (CPU idle states, frequency, other
// load), which on a VM drift by 2x within seconds. One line per target:
//   target=HOST:PORT rounds=N size=S p50_us=.. p99_us=.. mean_us=.. min_us=.. max_us=..
#include <pthread.h>

#include <algorithm>
#include <thread>
#include <vector>

#include "common.h"

namespace {

void Echo(int fd) {
  bench::SetNoDelay(fd);
  std::vector<char> buf(256 * 1024);
  for (;;) {
    ssize_t r = recv(fd, buf.data(), buf.size(), 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    if (!bench::WriteAll(fd, buf.data(), static_cast<size_t>(r))) break;
  }
  close(fd);
}

int Server(const std::string& host, const std::string& port) {
  bench::RaiseFdLimit();
  int lfd = bench::Listen(host, port);
  for (;;) {
    int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      bench::Die("accept");
    }
    std::thread(Echo, fd).detach();
  }
}

struct Target {
  std::string name;
  long long prime = -1;  // -1: --prime
  int fd = -1;
  std::vector<double> us;
};

void Prime(int fd, size_t prime) {
  // Writer and reader at once: the echo sends back while we still send.
  std::thread writer([fd, prime] {
    std::vector<char> out(64 * 1024, 'p');
    size_t left = prime;
    while (left > 0) {
      size_t n = std::min(left, out.size());
      if (!bench::WriteAll(fd, out.data(), n)) bench::Die("prime send");
      left -= n;
    }
  });
  std::vector<char> in(256 * 1024);
  size_t left = prime;
  while (left > 0) {
    ssize_t r = recv(fd, in.data(), std::min(left, in.size()), 0);
    if (r <= 0) bench::Die("prime recv");
    left -= static_cast<size_t>(r);
  }
  writer.join();
}

int Client(std::vector<Target>& targets, long rounds, size_t size, long warmup, size_t prime,
           long hold_ms) {
  for (Target& t : targets) {
    if (size_t at = t.name.find('@'); at != std::string::npos) {
      t.prime = std::atoll(t.name.c_str() + at + 1);
      t.name = t.name.substr(0, at);
    }
    size_t colon = t.name.rfind(':');
    if (colon == std::string::npos) {
      std::fprintf(stderr, "pingpong: target %s is not HOST:PORT\n", t.name.c_str());
      return 2;
    }
    std::string host = t.name.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    t.fd = bench::Connect(host, t.name.substr(colon + 1));
    if (t.fd < 0) {
      std::fprintf(stderr, "pingpong: connect %s: %s\n", t.name.c_str(), std::strerror(errno));
      return 1;
    }
    bench::SetNoDelay(t.fd);
    bench::SetTimeouts(t.fd, 10'000);
    size_t burst = t.prime >= 0 ? static_cast<size_t>(t.prime) : prime;
    if (burst > 0) Prime(t.fd, burst);
    t.us.reserve(static_cast<size_t>(rounds));
  }
  if (hold_ms > 0) {
    std::printf("primed\n");
    std::fflush(stdout);
    usleep(static_cast<useconds_t>(hold_ms) * 1000);
  }
  std::vector<char> msg(size, 'x'), reply(size);
  for (long i = 0; i < warmup + rounds; ++i) {
    for (Target& t : targets) {
      int64_t t0 = bench::NowNanos();
      if (!bench::WriteAll(t.fd, msg.data(), size)) bench::Die("send");
      if (!bench::ReadAll(t.fd, reply.data(), size)) bench::Die("recv");
      int64_t t1 = bench::NowNanos();
      if (i >= warmup) t.us.push_back(static_cast<double>(t1 - t0) / 1000.0);
    }
  }
  for (Target& t : targets) {
    close(t.fd);
    std::vector<double>& us = t.us;
    std::sort(us.begin(), us.end());
    double sum = 0;
    for (double v : us) sum += v;
    auto pct = [&](double p) {
      size_t idx = static_cast<size_t>(p * static_cast<double>(us.size() - 1) + 0.5);
      return us[std::min(idx, us.size() - 1)];
    };
    if (t.prime >= 0) t.name += "@" + std::to_string(t.prime);
    std::printf("target=%s rounds=%ld size=%zu p50_us=%.1f p99_us=%.1f mean_us=%.1f min_us=%.1f max_us=%.1f\n",
                t.name.c_str(), rounds, size, pct(0.50), pct(0.99), sum / static_cast<double>(us.size()),
                us.front(), us.back());
  }
  return 0;
}

[[noreturn]] void Usage() {
  std::fprintf(stderr,
               "usage: pingpong server PORT [HOST]\n"
               "       pingpong client [-n ROUNDS] [-s SIZE] [-w WARMUP] [--prime BYTES] [--hold MS]\n"
               "                       HOST:PORT[@BYTES]...\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) Usage();
  std::string mode = argv[1];
  if (mode == "server") return Server(argc > 3 ? argv[3] : "127.0.0.1", argv[2]);
  if (mode != "client") Usage();
  long rounds = 20000, warmup = 1000, hold_ms = 0;
  size_t size = 64, prime = 0;
  std::vector<Target> targets;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-n" || a == "-s" || a == "-w" || a == "--prime" || a == "--hold") {
      if (i + 1 >= argc) Usage();
      const char* v = argv[++i];
      if (a == "-n") rounds = std::atol(v);
      if (a == "-s") size = static_cast<size_t>(std::atol(v));
      if (a == "-w") warmup = std::atol(v);
      if (a == "--prime") prime = static_cast<size_t>(std::atoll(v));
      if (a == "--hold") hold_ms = std::atol(v);
    } else if (!a.empty() && a[0] != '-') {
      targets.emplace_back();
      targets.back().name = a;
    } else {
      Usage();
    }
  }
  if (rounds < 1 || size < 1 || warmup < 0 || targets.empty()) Usage();
  return Client(targets, rounds, size, warmup, prime, hold_ms);
}
