// `ferry pipe SOURCE DEST`: tcppipe. Bytes flow one way, SOURCE -> DEST, with
// blocking I/O on the command's own thread (one transfer needs no event
// loop); poll() only bounds connects and waits out EAGAIN on inherited
// non-blocking stdin/stdout. The copy uses splice() through a pipe when both
// ends allow it, else read/write through a 64 KiB buffer.

#include "cmd/ferry/pipe.h"

#include "cmd/ferry/flags.h"
#include "pkg/base/privileges.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "pkg/base/clock.h"
#include "pkg/base/fd.h"
#include "pkg/base/log.h"
#include "pkg/metrics/progress.h"
#include "pkg/net/address.h"
#include "pkg/net/socket.h"
#include "pkg/pump/token_bucket.h"

namespace ferry::cli {
namespace {

constexpr int kUsageError = 2;
constexpr size_t kBufferSize = 64 * 1024;
constexpr int64_t kRetryNanos = 100 * base::kNanosPerMilli;
// One connect attempt's bound; --wait retries past it.
constexpr int64_t kConnectTimeoutNanos = 10 * base::kNanosPerSecond;
// --wait above a day is a typo, not a plan.
constexpr double kMaxWaitSeconds = 86400;

constexpr const char* kPipeUsage = R"(Usage: ferry pipe [FLAGS] SOURCE DEST

Copies bytes one way, from SOURCE to DEST, until SOURCE ends (tcppipe).
SOURCE and DEST are each one of:
  -                       stdin as SOURCE, stdout as DEST (not both)
  :PORT                   listen on every interface ([::], else 0.0.0.0; the
                          address in $INADDR_DEFAULT when set) and take ONE
                          connection. PORT 0 picks a free port; the
                          msg="listening" log line gives the address.
  HOST:PORT, [IPv6]:PORT, HOST PORT, unix:/path
                          connect (to each address HOST resolves to, in turn;
                          from $INADDR_DEFAULT when set)
SOURCE is opened first, then DEST; every listener is bound before either.
When SOURCE ends, a DEST socket is half-closed (FIN) and what its peer still
sends is read and discarded until the peer closes; a DEST of stdout is done
at once. Exit status: 0 when every byte was delivered, 1 on a connect or I/O
error (the message names the address), 2 on a usage error.

Flags:
  --rate N             at most N bytes per second to DEST; N is a positive
                       integer with an optional IEC suffix K, M or G
                       (1K = 1024; KiB, Mi... and a trailing /s are accepted)
  --insert-file FILE   write FILE's bytes to DEST before SOURCE's (they count
                       for --rate and --progress)
  --wait SECS          retry a failed connect (refused, unreachable, timed out,
                       name not found) every 100 ms for up to SECS seconds
                       (5, 0.5 or a duration such as 500ms); default 0: one
                       attempt. Each attempt times out after 10 s.
  --progress           bytes and rate written to DEST on stderr once a second
                       (IEC units), and the total at the end
  --user NAME          drop root for NAME once the listeners are bound
  --log-format text|json
  --log-level LEVEL    debug, info, warn or error (default info)
)";

// ---------------------------------------------------------------------------
// Command line

struct Endpoint {
  enum class Kind { kStdio, kListen, kConnect };
  Kind kind = Kind::kStdio;
  net::HostPort hp;
  std::string text;  // as given, for messages
};

struct Options {
  std::optional<Endpoint> source;
  std::optional<Endpoint> dest;
  uint64_t rate = 0;  // bytes per second; 0 = unlimited
  std::optional<std::string> insert_file;
  int64_t wait_nanos = 0;
  bool progress = false;
  bool help = false;
  std::string user;  // --user: drop root to it once the listeners are bound
};

bool AllDigits(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// Reads one endpoint at args[*i] (two words for "HOST PORT") and advances *i.
bool ParseEndpoint(const std::vector<std::string>& args, size_t* i, absl::string_view role,
                   Endpoint* out, std::string* error) {
  const std::string& word = args[*i];
  if (word == "-") {
    out->kind = Endpoint::Kind::kStdio;
    out->text = word;
    ++*i;
    return true;
  }
  std::string text = word;
  size_t used = 1;
  if (word.find(':') == std::string::npos) {
    // "HOST PORT": the port is the next word.
    if (*i + 1 >= args.size() || !AllDigits(args[*i + 1])) {
      *error = absl::StrCat("bad ", role, " \"", word,
                            "\": not -, :PORT, HOST:PORT or HOST PORT (missing port)");
      return false;
    }
    text = absl::StrCat(word, ":", args[*i + 1]);
    used = 2;
  }
  auto hp = net::ParseHostPort(text);
  if (!hp.ok()) {
    *error = absl::StrCat("bad ", role, " \"", text, "\": ", hp.status().message());
    return false;
  }
  out->hp = *hp;
  out->text = text;
  out->kind = hp->is_any() ? Endpoint::Kind::kListen : Endpoint::Kind::kConnect;
  *i += used;
  return true;
}

// "5", "0.5" (seconds) or an absl duration ("500ms", "1m").
bool ParseWait(const std::string& text, int64_t* nanos) {
  double seconds = 0;
  absl::Duration d;
  if (absl::SimpleAtod(text, &seconds) && !text.empty() &&
      (std::isdigit(static_cast<unsigned char>(text[0])) || text[0] == '.')) {
    if (!std::isfinite(seconds) || seconds < 0 || seconds > kMaxWaitSeconds) return false;
    *nanos = static_cast<int64_t>(seconds * base::kNanosPerSecond);
    return true;
  }
  if (absl::ParseDuration(text, &d) && d >= absl::ZeroDuration() &&
      d <= absl::Seconds(kMaxWaitSeconds)) {
    *nanos = absl::ToInt64Nanoseconds(d);
    return true;
  }
  return false;
}

// Parses args[1..]. On a usage error, returns false with *error naming it.
bool ParseArgs(const std::vector<std::string>& args, Options* o, std::string* error) {
  std::vector<std::string> positional;
  base::LogLevel level = base::LogLevel::kInfo;
  base::LogFormat format = base::LogFormat::kText;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      positional.insert(positional.end(), args.begin() + static_cast<ptrdiff_t>(i) + 1, args.end());
      break;
    }
    if (a == "-h" || a == "--help") {
      o->help = true;
      continue;
    }
    if (a.size() < 2 || a[0] != '-') {  // "-" is stdin/stdout
      positional.push_back(a);
      continue;
    }
    std::string name = a.substr(a[1] == '-' ? 2 : 1);
    std::optional<std::string> value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    }
    const bool takes_value = name == "rate" || name == "insert-file" || name == "wait" ||
                             name == "log-level" || name == "log-format" || name == "user";
    if (!takes_value && name != "progress") {
      *error = absl::StrCat("unknown flag ", a.substr(0, a.find('=')));
      return false;
    }
    if (!takes_value) {
      if (value) {
        *error = absl::StrCat("flag --", name, " takes no value");
        return false;
      }
      o->progress = true;
      continue;
    }
    if (!value) {
      if (i + 1 >= args.size()) {
        *error = absl::StrCat("flag --", name, " needs a value");
        return false;
      }
      value = args[++i];
    }
    if (name == "rate") {
      if (!ParseRate(*value, &o->rate)) {
        *error = absl::StrCat("bad --rate \"", *value,
                              "\" (bytes per second: a positive integer, optionally with an IEC "
                              "suffix K, M or G)");
        return false;
      }
    } else if (name == "wait") {
      if (!ParseWait(*value, &o->wait_nanos)) {
        *error = absl::StrCat("bad --wait \"", *value,
                              "\" (seconds, such as 5 or 0.5, or a duration such as 500ms; at "
                              "most a day)");
        return false;
      }
    } else if (name == "user") {
      if (value->empty()) {
        *error = "flag --user needs a user name";
        return false;
      }
      o->user = *value;
    } else if (name == "insert-file") {
      if (value->empty()) {
        *error = "flag --insert-file needs a file name";
        return false;
      }
      o->insert_file = *value;
    } else if (name == "log-level") {
      if (!base::ParseLogLevel(*value, &level)) {
        *error = absl::StrCat("bad --log-level \"", *value, "\" (debug, info, warn, error)");
        return false;
      }
    } else if (name == "log-format") {
      if (!base::ParseLogFormat(*value, &format)) {
        *error = absl::StrCat("bad --log-format \"", *value, "\" (text, json)");
        return false;
      }
    }
  }
  if (o->help) return true;
  base::SetLogOptions(level, format);
  size_t i = 0;
  if (i < positional.size()) {
    Endpoint e;
    if (!ParseEndpoint(positional, &i, "SOURCE", &e, error)) return false;
    o->source = e;
  }
  if (i < positional.size()) {
    Endpoint e;
    if (!ParseEndpoint(positional, &i, "DEST", &e, error)) return false;
    o->dest = e;
  }
  if (!o->source || !o->dest) {
    *error = o->source ? "missing DEST (usage: ferry pipe [FLAGS] SOURCE DEST)"
                       : "missing SOURCE and DEST (usage: ferry pipe [FLAGS] SOURCE DEST)";
    return false;
  }
  if (i < positional.size()) {
    *error = absl::StrCat("unexpected argument \"", positional[i], "\" after DEST");
    return false;
  }
  if (o->source->kind == Endpoint::Kind::kStdio && o->dest->kind == Endpoint::Kind::kStdio) {
    *error = "SOURCE and DEST cannot both be \"-\"";
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Opening the ends

// One end of the transfer. Owns its socket; stdin and stdout are borrowed.
struct Stream {
  base::Fd owned;
  int fd = -1;
  bool is_socket = false;
  std::string name;  // "stdin", "stdout" or the peer's address
};

void SleepNanos(int64_t nanos) {
  timespec ts{static_cast<time_t>(nanos / base::kNanosPerSecond),
              static_cast<long>(nanos % base::kNanosPerSecond)};
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

// Waits until `fd` is ready for `events`; -1 = no limit. False on timeout.
bool WaitFd(int fd, short events, int timeout_ms) {
  pollfd p{fd, events, 0};
  for (;;) {
    int n = ::poll(&p, 1, timeout_ms);
    if (n >= 0) return n > 0;
    if (errno != EINTR) return true;  // let the next syscall report the problem
  }
}

void SetBlocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK)) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
}

absl::StatusOr<base::Fd> Listen(const Endpoint& e, absl::string_view role) {
  auto address = net::ListenAddress(e.hp);
  if (!address.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot listen on ", e.text, ": ", address.status().message()));
  }
  auto fd = net::ListenSocket(*address, /*reuse_port=*/false, /*backlog=*/1);
  if (!fd.ok()) return fd.status();
  auto bound = net::LocalAddress(fd->get());
  FERRY_LOG(kInfo, "listening",
            {{"side", role}, {"address", bound.ok() ? bound->ToString() : address->ToString()}});
  return fd;
}

absl::Status Accept(base::Fd listener, absl::string_view role, Stream* out) {
  for (;;) {
    WaitFd(listener.get(), POLLIN, -1);
    sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int fd = ::accept4(listener.get(), reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
    if (fd >= 0) {
      out->owned.Reset(fd);
      out->fd = fd;
      out->is_socket = true;
      out->name = net::Address::FromSockaddr(reinterpret_cast<sockaddr*>(&ss), len).ToString();
      break;
    }
    // A client that gave up before accept() is not ours to report.
    if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED || errno == EPROTO) continue;
    auto local = net::LocalAddress(listener.get());
    return absl::UnavailableError(
        absl::StrCat("accept on ", local.ok() ? local->ToString() : std::string("listener"), ": ",
                     std::strerror(errno)));
  }
  // The listener closes here: one connection, as tcppipe takes.
  FERRY_LOG(kInfo, "accepted", {{"side", role}, {"peer", out->name}});
  return absl::OkStatus();
}

// One connect attempt to `target`, bounded by `timeout_nanos`. Returns 0 or the errno.
int ConnectOnce(const net::Address& target, const net::Address* source, int64_t timeout_nanos,
                base::Fd* out) {
  base::Fd fd;
  int err = net::StartConnect(target, source, &fd);
  if (err == EINPROGRESS) {
    int timeout_ms =
        static_cast<int>((timeout_nanos + base::kNanosPerMilli - 1) / base::kNanosPerMilli);
    if (!WaitFd(fd.get(), POLLOUT, timeout_ms)) return ETIMEDOUT;
    err = net::SocketError(fd.get());
  }
  if (err != 0) return err;
  SetBlocking(fd.get());
  if (target.is_ip()) net::SetNoDelay(fd.get());
  *out = std::move(fd);
  return 0;
}

// Errors a target that is still starting gives: worth another try under --wait.
bool Retryable(int err) {
  return err == ECONNREFUSED || err == ETIMEDOUT || err == ENETUNREACH || err == EHOSTUNREACH ||
         err == ENOENT || err == ECONNRESET;
}

absl::Status Connect(const Endpoint& e, int64_t wait_nanos, absl::string_view role, Stream* out) {
  auto sources = net::DefaultSourceAddress();
  if (!sources.ok()) return sources.status();
  const net::Address* source = sources->empty() ? nullptr : &sources->front();
  const base::Clock& clock = base::RealClock::Get();
  const int64_t deadline = clock.NowNanos() + wait_nanos;
  bool told = false;
  for (;;) {
    std::string failure;  // the last attempt's error
    bool retry = true;
    auto addresses = net::Resolve(e.hp);
    if (!addresses.ok()) {
      failure = absl::StrCat("connect to ", e.text, ": ", addresses.status().message());
    } else {
      for (const net::Address& a : *addresses) {
        base::Fd fd;
        int err = ConnectOnce(a, source, kConnectTimeoutNanos, &fd);
        if (err == 0) {
          out->owned = std::move(fd);
          out->fd = out->owned.get();
          out->is_socket = true;
          out->name = a.ToString();
          FERRY_LOG(kInfo, "connected", {{"side", role}, {"address", out->name}});
          return absl::OkStatus();
        }
        std::string where = a.ToString() == e.text || e.hp.is_unix()
                                ? e.text
                                : absl::StrCat(e.text, " (", a.ToString(), ")");
        failure = absl::StrCat("connect to ", where, ": ", std::strerror(err));
        retry = retry && Retryable(err);
      }
    }
    int64_t left = deadline - clock.NowNanos();
    if (!retry || left <= 0) return absl::UnavailableError(failure);
    if (!told) {
      // Once, so a long --wait does not fill the log.
      FERRY_LOG(kInfo, "waiting for connect", {{"side", role}, {"error", failure}});
      told = true;
    }
    // The last try comes at the deadline itself.
    SleepNanos(std::min(kRetryNanos, left));
  }
}

// ---------------------------------------------------------------------------
// Copying

// Copies sources one after another into one destination, paced by an
// optional TokenBucket, counting the bytes written. Owned by Pipe(), used on
// its thread; `written` is read by the progress thread.
class Copier {
 public:
  Copier(const Stream& dst, uint64_t rate, std::atomic<uint64_t>& written)
      : dst_(dst), written_(written), buf_(new char[kBufferSize]) {
    if (rate > 0) {
      bucket_.emplace(rate, pump::TokenBucket::DefaultBurst(rate), clock_.NowNanos());
      // Wait for about 50 ms worth at a time: a slow rate still trickles.
      min_chunk_ = std::clamp<uint64_t>(rate / 20, 1, kBufferSize);
    }
  }

  // Copies `src` until its EOF. Returns "" or what went wrong.
  std::string CopyFrom(int src_fd, const std::string& src_name) {
    if (try_splice_) {
      std::string error;
      if (SpliceFrom(src_fd, src_name, &error)) return error;
    }
    return ReadWriteFrom(src_fd, src_name);
  }

 private:
  // How many bytes the next read may take, after waiting for the rate's tokens.
  size_t Allowance() {
    if (!bucket_) return kBufferSize;
    for (;;) {
      int64_t now = clock_.NowNanos();
      int64_t wait = bucket_->WaitNanos(min_chunk_, now);
      if (wait <= 0) {
        return static_cast<size_t>(std::min<uint64_t>(bucket_->Available(now), kBufferSize));
      }
      SleepNanos(wait);
    }
  }
  void Consume(size_t n) {
    if (bucket_) bucket_->Consume(n);
  }
  void Count(size_t n) {
    written_.store(written_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }

  std::string ReadError(const std::string& src_name, int err) {
    return absl::StrCat("read from ", src_name, ": ", std::strerror(err));
  }
  std::string WriteError(int err) {
    return absl::StrCat("write to ", dst_.name, ": ", std::strerror(err));
  }

  // Writes all of data[0..n); "" or the error.
  std::string WriteAll(const char* data, size_t n) {
    while (n > 0) {
      // MSG_NOSIGNAL: a reset peer is an error to report, not a SIGPIPE.
      ssize_t w =
          dst_.is_socket ? ::send(dst_.fd, data, n, MSG_NOSIGNAL) : ::write(dst_.fd, data, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          WaitFd(dst_.fd, POLLOUT, -1);
          continue;
        }
        return WriteError(errno);
      }
      data += w;
      n -= static_cast<size_t>(w);
      Count(static_cast<size_t>(w));
    }
    return "";
  }

  std::string ReadWriteFrom(int src_fd, const std::string& src_name) {
    for (;;) {
      ssize_t n = ::read(src_fd, buf_.get(), Allowance());
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          WaitFd(src_fd, POLLIN, -1);
          continue;
        }
        return ReadError(src_name, errno);
      }
      if (n == 0) return "";
      Consume(static_cast<size_t>(n));
      if (std::string e = WriteAll(buf_.get(), static_cast<size_t>(n)); !e.empty()) return e;
    }
  }

  // Copies through a pipe with splice(). Returns true when it finished (EOF
  // or *error set), false when an end turned out not to splice: then the
  // pipe is empty and the caller goes on with read/write.
  bool SpliceFrom(int src_fd, const std::string& src_name, std::string* error) {
    if (!pipe_r_.valid()) {
      int p[2];
      if (::pipe2(p, O_CLOEXEC) != 0) {
        try_splice_ = false;
        return false;
      }
      pipe_r_.Reset(p[0]);
      pipe_w_.Reset(p[1]);
    }
    for (;;) {
      ssize_t n = ::splice(src_fd, nullptr, pipe_w_.get(), nullptr, Allowance(), SPLICE_F_MOVE);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          WaitFd(src_fd, POLLIN, -1);
          continue;
        }
        if (errno == EINVAL || errno == ENOSYS) {  // a tty, an odd file: read() it
          try_splice_ = false;
          return false;
        }
        *error = ReadError(src_name, errno);
        return true;
      }
      if (n == 0) return true;
      Consume(static_cast<size_t>(n));
      size_t left = static_cast<size_t>(n);
      while (left > 0) {
        ssize_t m = ::splice(pipe_r_.get(), nullptr, dst_.fd, nullptr, left, SPLICE_F_MOVE);
        if (m < 0) {
          if (errno == EINTR) continue;
          if (errno == EAGAIN) {
            WaitFd(dst_.fd, POLLOUT, -1);
            continue;
          }
          if (errno == EINVAL || errno == ENOSYS) {
            // DEST takes no splice (an O_APPEND file, a tty): move what the
            // pipe holds with read/write, then stay on that path.
            try_splice_ = false;
            *error = DrainPipe(left);
            return !error->empty();
          }
          *error = WriteError(errno);
          return true;
        }
        left -= static_cast<size_t>(m);
        Count(static_cast<size_t>(m));
      }
    }
  }

  std::string DrainPipe(size_t left) {
    while (left > 0) {
      ssize_t n = ::read(pipe_r_.get(), buf_.get(), std::min(left, kBufferSize));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return absl::StrCat("read from the splice pipe: ", std::strerror(errno));
      if (std::string e = WriteAll(buf_.get(), static_cast<size_t>(n)); !e.empty()) return e;
      left -= static_cast<size_t>(n);
    }
    return "";
  }

  const Stream& dst_;
  std::atomic<uint64_t>& written_;
  std::unique_ptr<char[]> buf_;
  const base::RealClock& clock_ = base::RealClock::Get();
  std::optional<pump::TokenBucket> bucket_;
  uint64_t min_chunk_ = 1;
  bool try_splice_ = true;
  base::Fd pipe_r_;
  base::Fd pipe_w_;
};

// After SOURCE's EOF: FIN to the peer, then read until it closes, so it can
// finish (tcppipe). Returns "" or the error.
std::string FinishSocket(const Stream& dst) {
  if (::shutdown(dst.fd, SHUT_WR) != 0) {
    return absl::StrCat("shutdown of ", dst.name, ": ", std::strerror(errno));
  }
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(dst.fd, buf, sizeof(buf));
    if (n == 0) return "";
    if (n > 0) continue;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      WaitFd(dst.fd, POLLIN, -1);
      continue;
    }
    // A reset after our FIN: the peer closed with our bytes unread.
    return absl::StrCat("read from ", dst.name, " after the end of SOURCE: ", std::strerror(errno));
  }
}

int Fail(std::ostream& err, absl::string_view message) {
  err << "ferry pipe: " << message << "\n";
  err.flush();
  return 1;
}

}  // namespace

int Pipe(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  // A closed stdout or a reset peer is an error to report, never a kill.
  ::signal(SIGPIPE, SIG_IGN);
  Options o;
  std::string error;
  if (!ParseArgs(args, &o, &error)) {
    err << "ferry pipe: " << error << "\n";
    return kUsageError;
  }
  if (o.help) {
    out << kPipeUsage;
    return 0;
  }

  base::Fd insert;
  if (o.insert_file) {
    insert.Reset(::open(o.insert_file->c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st;
    if (!insert.valid()) {
      return Fail(err, absl::StrCat("cannot read --insert-file \"", *o.insert_file,
                                    "\": ", std::strerror(errno)));
    }
    if (::fstat(insert.get(), &st) == 0 && S_ISDIR(st.st_mode)) {
      return Fail(err, absl::StrCat("cannot read --insert-file \"", *o.insert_file,
                                    "\": ", std::strerror(EISDIR)));
    }
  }

  // Every listener first, so a peer can connect to either in any order.
  base::Fd source_listener, dest_listener;
  if (o.source->kind == Endpoint::Kind::kListen) {
    auto fd = Listen(*o.source, "source");
    if (!fd.ok()) return Fail(err, fd.status().message());
    source_listener = std::move(*fd);
  }
  if (o.dest->kind == Endpoint::Kind::kListen) {
    auto fd = Listen(*o.dest, "dest");
    if (!fd.ok()) return Fail(err, fd.status().message());
    dest_listener = std::move(*fd);
  }
  if (!o.user.empty()) {
    // Bound: nothing this command does later needs root.
    if (absl::Status s = base::DropPrivileges(o.user); !s.ok()) return Fail(err, s.message());
  }

  Stream source, dest;
  switch (o.source->kind) {
    case Endpoint::Kind::kStdio:
      source.fd = STDIN_FILENO;
      source.name = "stdin";
      break;
    case Endpoint::Kind::kListen:
      if (auto s = Accept(std::move(source_listener), "source", &source); !s.ok()) {
        return Fail(err, s.message());
      }
      break;
    case Endpoint::Kind::kConnect:
      if (auto s = Connect(*o.source, o.wait_nanos, "source", &source); !s.ok()) {
        return Fail(err, s.message());
      }
      break;
  }
  switch (o.dest->kind) {
    case Endpoint::Kind::kStdio:
      dest.fd = STDOUT_FILENO;
      dest.name = "stdout";
      break;
    case Endpoint::Kind::kListen:
      if (auto s = Accept(std::move(dest_listener), "dest", &dest); !s.ok()) {
        return Fail(err, s.message());
      }
      break;
    case Endpoint::Kind::kConnect:
      if (auto s = Connect(*o.dest, o.wait_nanos, "dest", &dest); !s.ok()) {
        return Fail(err, s.message());
      }
      break;
  }

  std::atomic<uint64_t> written{0};
  std::unique_ptr<metrics::ProgressReporter> progress;
  if (o.progress) {
    progress = std::make_unique<metrics::ProgressReporter>(
        err, [&written] { return written.load(std::memory_order_relaxed); },
        /*rewrite_line=*/::isatty(STDERR_FILENO) == 1);
  }
  Copier copier(dest, o.rate, written);
  if (insert.valid()) {
    error = copier.CopyFrom(insert.get(), absl::StrCat("--insert-file \"", *o.insert_file, "\""));
  }
  if (error.empty()) error = copier.CopyFrom(source.fd, source.name);
  if (progress) progress->Stop();  // the total line: what DEST was given
  if (!error.empty()) return Fail(err, error);
  // Closing SOURCE now tells a socket peer we are done with it.
  source.owned.Reset();
  if (dest.is_socket) {
    if (std::string e = FinishSocket(dest); !e.empty()) return Fail(err, e);
  }
  return 0;
}

}  // namespace ferry::cli
