// idle: many open, idle connections, for a relay's memory per connection.
//
//   idle server PORT [HOST]
//       epoll echo server that keeps every connection open until the peer
//       closes it.
//   idle client HOST PORT N [--hold SECONDS] [--within SECONDS]
//       opens N connections one after another; on each it sends one byte and
//       waits for its echo (so the relay has connected the target and carried
//       a byte both ways), then leaves it idle. Prints "ready K" when all are
//       open, or K < N when --within SECONDS (default 30) ran out first (a
//       relay whose event loop is O(connections) gets slow), holds them for
//       SECONDS (default 60) and exits, which closes them. Exits 1 if a
//       connection fails.
#include <fcntl.h>
#include <sys/epoll.h>

#include <vector>

#include "common.h"

namespace {

int Server(const std::string& host, const std::string& port) {
  bench::RaiseFdLimit();
  int lfd = bench::Listen(host, port);
  fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);  // accept until EAGAIN
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) bench::Die("epoll_create1");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = lfd;
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  std::vector<epoll_event> events(256);
  char buf[4096];
  for (;;) {
    int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), -1);
    for (int i = 0; i < n; ++i) {
      int fd = events[static_cast<size_t>(i)].data.fd;
      if (fd == lfd) {
        for (int k = 0; k < 64; ++k) {
          int c = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
          if (c < 0) break;
          epoll_event cev{};
          cev.events = EPOLLIN;
          cev.data.fd = c;
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
        }
        continue;
      }
      ssize_t r = recv(fd, buf, sizeof(buf), 0);
      if (r > 0) {
        ssize_t w = send(fd, buf, static_cast<size_t>(r), MSG_NOSIGNAL);
        (void)w;
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        close(fd);  // also removes it from the epoll set
      }
    }
  }
}

int Client(const std::string& host, const std::string& port, long n, long hold, long within) {
  bench::RaiseFdLimit();
  std::vector<int> fds;
  fds.reserve(static_cast<size_t>(n));
  int64_t deadline = bench::NowNanos() + int64_t{within} * 1'000'000'000;
  for (long i = 0; i < n; ++i) {
    int fd = bench::Connect(host, port);
    if (fd < 0) {
      std::fprintf(stderr, "idle: connection %ld: connect: %s\n", i, std::strerror(errno));
      return 1;
    }
    bench::SetTimeouts(fd, 5000);
    char c = 'i';
    if (!bench::WriteAll(fd, &c, 1) || !bench::ReadAll(fd, &c, 1)) {
      std::fprintf(stderr, "idle: connection %ld: no echo: %s\n", i, std::strerror(errno));
      return 1;
    }
    fds.push_back(fd);
    if (bench::NowNanos() > deadline) {
      std::fprintf(stderr, "idle: stopped at %ld connections (%ld s)\n", i + 1, within);
      break;
    }
  }
  std::printf("ready %zu\n", fds.size());
  std::fflush(stdout);
  sleep(static_cast<unsigned>(hold));
  for (int fd : fds) close(fd);
  return 0;
}

[[noreturn]] void Usage() {
  std::fprintf(stderr,
               "usage: idle server PORT [HOST]\n"
               "       idle client HOST PORT N [--hold SECONDS] [--within SECONDS]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) Usage();
  std::string mode = argv[1];
  if (mode == "server") return Server(argc > 3 ? argv[3] : "127.0.0.1", argv[2]);
  if (mode != "client" || argc < 5) Usage();
  long hold = 60, within = 30;
  for (int i = 5; i < argc; i += 2) {
    std::string a = argv[i];
    if (i + 1 >= argc) Usage();
    if (a == "--hold") {
      hold = std::atol(argv[i + 1]);
    } else if (a == "--within") {
      within = std::atol(argv[i + 1]);
    } else {
      Usage();
    }
  }
  return Client(argv[2], argv[3], std::atol(argv[4]), hold, within);
}
