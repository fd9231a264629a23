// bulk: one-way bulk throughput with endpoints that cost as little CPU as
// possible, so the relay in the middle, not the load generator, is what limits.
//
//   bulk sink PORT [HOST] [--copy]
//       accepts connections forever; a thread per connection discards what
//       arrives with recv(MSG_TRUNC) (TCP drops the bytes in the kernel, no
//       copy to user space), or recv() into a buffer with --copy.
//   bulk source HOST PORT [-P STREAMS] [-t SECONDS] [-w WARMUP] [--copy]
//       opens STREAMS connections and sends on each with sendfile() from a
//       4 MiB memfd (page references, no copy), or send() from a buffer with
//       --copy, for WARMUP + SECONDS; prints
//         streams=N seconds=T gbps=.. bytes_measured=.. bytes_total=..
//       where gbps counts the SECONDS after WARMUP and bytes_total everything
//       sent (what a relay moved, for its CPU cost per byte).
#include <sys/mman.h>
#include <sys/sendfile.h>

#include <atomic>
#include <thread>
#include <vector>

#include "common.h"

namespace {

constexpr size_t kFileBytes = 4 << 20;
constexpr size_t kChunk = 1 << 20;

std::atomic<bool> g_stop{false};

void Drain(int fd, bool copy) {
  std::vector<char> buf(copy ? kChunk : 1);
  for (;;) {
    ssize_t r = copy ? recv(fd, buf.data(), buf.size(), 0)
                     : recv(fd, buf.data(), kChunk, MSG_TRUNC);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
  }
  close(fd);
}

int Sink(const std::string& host, const std::string& port, bool copy) {
  bench::RaiseFdLimit();
  int lfd = bench::Listen(host, port);
  for (;;) {
    int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      bench::Die("accept");
    }
    std::thread(Drain, fd, copy).detach();
  }
}

void Send(int fd, int memfd, bool copy, std::atomic<uint64_t>* sent) {
  std::vector<char> buf(copy ? kChunk : 0, 'b');
  off_t off = 0;
  uint64_t local = 0;
  while (!g_stop.load(std::memory_order_relaxed)) {
    ssize_t w;
    if (copy) {
      w = send(fd, buf.data(), buf.size(), MSG_NOSIGNAL);
    } else {
      if (off >= static_cast<off_t>(kFileBytes)) off = 0;
      w = sendfile(fd, memfd, &off, kChunk);
    }
    if (w < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;  // SO_SNDTIMEO: look at g_stop
      bench::Die("send");
    }
    local += static_cast<uint64_t>(w);
    sent->store(local, std::memory_order_relaxed);
  }
  shutdown(fd, SHUT_WR);
}

int Source(const std::string& host, const std::string& port, int streams, double seconds,
           double warmup, bool copy) {
  int memfd = memfd_create("bulk", 0);
  if (memfd < 0) bench::Die("memfd_create");
  std::vector<char> fill(kFileBytes);
  for (size_t i = 0; i < fill.size(); ++i) fill[i] = static_cast<char>(i * 131 + 7);
  if (write(memfd, fill.data(), fill.size()) != static_cast<ssize_t>(fill.size())) {
    bench::Die("write memfd");
  }
  std::vector<int> fds;
  for (int i = 0; i < streams; ++i) {
    int fd = bench::Connect(host, port);
    if (fd < 0) bench::Die("connect");
    bench::SetTimeouts(fd, 200);
    fds.push_back(fd);
  }
  std::vector<std::atomic<uint64_t>> sent(static_cast<size_t>(streams));
  for (auto& s : sent) s.store(0);
  auto total = [&] {
    uint64_t t = 0;
    for (auto& s : sent) t += s.load(std::memory_order_relaxed);
    return t;
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < streams; ++i) {
    threads.emplace_back(Send, fds[static_cast<size_t>(i)], memfd, copy, &sent[static_cast<size_t>(i)]);
  }
  usleep(static_cast<useconds_t>(warmup * 1e6));
  uint64_t b0 = total();
  int64_t t0 = bench::NowNanos();
  usleep(static_cast<useconds_t>(seconds * 1e6));
  uint64_t b1 = total();
  int64_t t1 = bench::NowNanos();
  g_stop.store(true);
  for (auto& t : threads) t.join();
  for (int fd : fds) close(fd);
  double secs = static_cast<double>(t1 - t0) / 1e9;
  std::printf("streams=%d seconds=%.2f gbps=%.2f bytes_measured=%llu bytes_total=%llu\n", streams,
              secs, static_cast<double>(b1 - b0) * 8 / secs / 1e9,
              static_cast<unsigned long long>(b1 - b0), static_cast<unsigned long long>(total()));
  return 0;
}

[[noreturn]] void Usage() {
  std::fprintf(stderr,
               "usage: bulk sink PORT [HOST] [--copy]\n"
               "       bulk source HOST PORT [-P STREAMS] [-t SECONDS] [-w WARMUP] [--copy]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) Usage();
  std::string mode = argv[1];
  bool copy = false;
  std::vector<std::string> pos;
  int streams = 1;
  double seconds = 5, warmup = 0.5;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--copy") {
      copy = true;
    } else if (a == "-P" || a == "-t" || a == "-w") {
      if (i + 1 >= argc) Usage();
      const char* v = argv[++i];
      if (a == "-P") streams = std::atoi(v);
      if (a == "-t") seconds = std::atof(v);
      if (a == "-w") warmup = std::atof(v);
    } else {
      pos.push_back(a);
    }
  }
  if (mode == "sink" && !pos.empty()) return Sink(pos.size() > 1 ? pos[1] : "127.0.0.1", pos[0], copy);
  if (mode == "source" && pos.size() == 2 && streams >= 1 && seconds > 0) {
    return Source(pos[0], pos[1], streams, seconds, warmup, copy);
  }
  Usage();
}
