#include "pkg/proxy/access_log.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "pkg/base/clock.h"
#include "pkg/base/fd.h"
#include "pkg/base/log.h"
#include "pkg/base/status.h"

namespace ferry::proxy {
namespace {

constexpr absl::string_view kStdout = "stdout";
constexpr absl::string_view kStderr = "stderr";
// A line is retried after a short write or EINTR at most this many times, so a
// writer never loops on a descriptor that keeps taking a byte at a time.
constexpr int kMaxWriteAttempts = 8;
constexpr int kMaxDupAttempts = 8;
// How long a writer waits for room to finish a line a socket took only part of.
constexpr int64_t kFinishLineNanos = 50 * base::kNanosPerMilli;

// How a line reaches the descriptor without waiting on a slow reader.
enum Kind : int { kPlain = 0, kPipe = 1, kSocket = 2 };

Kind KindOf(const struct stat& st) {
  if (S_ISFIFO(st.st_mode)) return kPipe;
  if (S_ISSOCK(st.st_mode)) return kSocket;
  return kPlain;
}

std::string ErrnoText(int err) {
  char buf[128];
  // GNU strerror_r: returns the message, maybe not in buf.
  return strerror_r(err, buf, sizeof(buf));
}

absl::Status ErrnoError(int err, absl::string_view path, absl::string_view what) {
  return absl::Status(absl::ErrnoToStatusCode(err),
                      absl::StrCat("access log \"", path, "\": ", what, ": ", ErrnoText(err)));
}

// Floor division so times before 1970 print as the right calendar second.
void SplitNanos(int64_t unix_nanos, time_t* secs, int* millis) {
  int64_t s = unix_nanos / base::kNanosPerSecond;
  int64_t rem = unix_nanos % base::kNanosPerSecond;
  if (rem < 0) {
    rem += base::kNanosPerSecond;
    --s;
  }
  *secs = static_cast<time_t>(s);
  *millis = static_cast<int>(rem / base::kNanosPerMilli);
}

// RFC 3339, UTC, milliseconds: the timestamp style of ferry's own log lines.
void AppendRfc3339(std::string* out, int64_t unix_nanos) {
  time_t secs;
  int millis;
  SplitNanos(unix_nanos, &secs, &millis);
  tm t{};
  gmtime_r(&secs, &t);
  char buf[80];  // room for any int the compiler imagines
  int n = std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                        t.tm_year + 1900, t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min,
                        t.tm_sec, millis);
  out->append(buf, n > 0 ? static_cast<size_t>(n) : 0);
}

// The common log format's "[10/Oct/2000:13:55:36 +0000]", in UTC.
void AppendClfTime(std::string* out, int64_t unix_nanos) {
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  time_t secs;
  int millis;
  SplitNanos(unix_nanos, &secs, &millis);
  tm t{};
  gmtime_r(&secs, &t);
  const char* month = (t.tm_mon >= 0 && t.tm_mon < 12) ? kMonths[t.tm_mon] : "Jan";
  char buf[80];
  int n = std::snprintf(buf, sizeof(buf), "[%02d/%s/%04d:%02d:%02d:%02d +0000]", t.tm_mday,
                        month, t.tm_year + 1900, t.tm_hour, t.tm_min, t.tm_sec);
  out->append(buf, n > 0 ? static_cast<size_t>(n) : 0);
}


// Percent-encodes everything but a URL path's safe bytes, so a CLF field never
// holds a space or a quote and a URL segment never holds a '/' (unless
// `keep_slash`, for the host field).
void AppendClfToken(std::string* out, absl::string_view s, bool keep_slash) {
  if (s.empty()) {
    out->push_back('-');
    return;
  }
  static constexpr absl::string_view kSafe = "._~:@!$&'()*+,;=-";
  for (char c : s) {
    bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                kSafe.find(c) != absl::string_view::npos || (keep_slash && c == '/');
    if (safe) {
      out->push_back(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof(buf), "%%%02X", static_cast<unsigned char>(c));
      out->append(buf, 3);
    }
  }
}

// rinetd's host: the bare IP ("10.0.0.1", "::1"), or "unix:PATH".
std::string ClfHost(const net::Address& a) {
  if (a.is_unix()) return absl::StrCat("unix:", a.unix_path());
  return a.HostString();
}

std::string AddressText(const net::Address* a) { return a == nullptr ? "-" : a->ToString(); }

int64_t DurationMillis(int64_t nanos) { return nanos <= 0 ? 0 : nanos / base::kNanosPerMilli; }

void FormatText(const AccessRecord& r, std::string* out) {
  out->append("ts=");
  AppendRfc3339(out, r.start_unix_nanos);
  out->append(" rule=");
  base::AppendLogfmtValue(out, r.rule);
  out->append(" client=");
  base::AppendLogfmtValue(out, AddressText(r.client));
  out->append(" listen=");
  base::AppendLogfmtValue(out, AddressText(r.listen));
  out->append(" endpoint=");
  base::AppendLogfmtValue(out, AddressText(r.endpoint));
  absl::StrAppend(out, " bytes_from_client=", r.bytes_from_client,
                  " bytes_to_client=", r.bytes_to_client,
                  " duration_ms=", DurationMillis(r.duration_nanos), " outcome=");
  base::AppendLogfmtValue(out, r.outcome);
  out->push_back('\n');
}

void AppendJsonAddress(std::string* out, const net::Address* a) {
  if (a == nullptr) {
    out->append("null");
  } else {
    base::AppendJsonString(out, a->ToString());
  }
}

void FormatJson(const AccessRecord& r, std::string* out) {
  out->append("{\"ts\":\"");
  AppendRfc3339(out, r.start_unix_nanos);
  out->append("\",\"rule\":");
  base::AppendJsonString(out, r.rule);
  out->append(",\"client\":");
  AppendJsonAddress(out, r.client);
  out->append(",\"listen\":");
  AppendJsonAddress(out, r.listen);
  out->append(",\"endpoint\":");
  AppendJsonAddress(out, r.endpoint);
  absl::StrAppend(out, ",\"bytes_from_client\":", r.bytes_from_client,
                  ",\"bytes_to_client\":", r.bytes_to_client,
                  ",\"duration_ms\":", DurationMillis(r.duration_nanos), ",\"outcome\":");
  base::AppendJsonString(out, r.outcome);
  out->append("}\n");
}

// One "/HOST/PORT" pair of rinetd's URL.
void AppendClfHostPort(std::string* out, const net::Address* a) {
  out->push_back('/');
  if (a == nullptr) {
    out->append("-/0");
    return;
  }
  AppendClfToken(out, ClfHost(*a), /*keep_slash=*/false);
  absl::StrAppend(out, "/", a->port());
}

void FormatClf(const AccessRecord& r, std::string* out) {
  if (r.client == nullptr) {
    out->push_back('-');
  } else {
    AppendClfToken(out, ClfHost(*r.client), /*keep_slash=*/true);
  }
  out->append(" - - ");
  AppendClfTime(out, r.start_unix_nanos);
  out->append(" \"GET /rinetd-services");
  AppendClfHostPort(out, r.listen);
  AppendClfHostPort(out, r.endpoint);
  out->push_back('/');
  AppendClfToken(out, r.outcome, /*keep_slash=*/false);
  absl::StrAppend(out, " HTTP/1.0\" 200 ", r.bytes_to_client, " - - - ", r.bytes_from_client,
                  "\n");
}

size_t CountLines(absl::string_view s) {
  size_t n = 0;
  for (char c : s) n += (c == '\n');
  // Bytes after the last newline are a line too (WriteLines' callers end
  // lines with '\n'; this only keeps a malformed call from counting 0).
  if (!s.empty() && s.back() != '\n') ++n;
  return n;
}

}  // namespace

absl::StatusOr<AccessLogFormat> ParseAccessLogFormat(absl::string_view name) {
  if (name == "text") return AccessLogFormat::kText;
  if (name == "json") return AccessLogFormat::kJson;
  if (name == "clf") return AccessLogFormat::kClf;
  std::string shown;
  base::AppendJsonString(&shown, name);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown access log format ", shown, " (expected text, json or clf)"));
}

absl::string_view AccessLogFormatName(AccessLogFormat format) {
  switch (format) {
    case AccessLogFormat::kText: return "text";
    case AccessLogFormat::kJson: return "json";
    case AccessLogFormat::kClf: return "clf";
  }
  return "text";
}

std::optional<AccessLogFormat> AccessLogFormatFromProto(config::v1::AccessLog::Format format) {
  switch (format) {
    case config::v1::AccessLog::FORMAT_TEXT: return AccessLogFormat::kText;
    case config::v1::AccessLog::FORMAT_JSON: return AccessLogFormat::kJson;
    case config::v1::AccessLog::FORMAT_CLF: return AccessLogFormat::kClf;
    default: return std::nullopt;
  }
}

void FormatAccessRecord(AccessLogFormat format, const AccessRecord& r, std::string* out) {
  switch (format) {
    case AccessLogFormat::kText: FormatText(r, out); return;
    case AccessLogFormat::kJson: FormatJson(r, out); return;
    case AccessLogFormat::kClf: FormatClf(r, out); return;
  }
  FormatText(r, out);
}

// Failure counts of one path; they outlive the file so totals never go back.
struct AccessLog::Counters {
  std::atomic<uint64_t> write_errors{0};
  std::atomic<uint64_t> dropped_lines{0};
  // Monotonic time of the last failure logged; INT64_MIN: none yet.
  std::atomic<int64_t> last_report_nanos{INT64_MIN};
};

// One open log destination. `fd` never changes for the File's life (Reopen
// replaces the file behind it with dup3), so writers read it without a lock.
struct AccessLog::File {
  ~File() {
    if (owned && fd >= 0) ::close(fd);
  }

  std::string path;
  int fd = -1;
  bool owned = false;  // false for stdout and stderr: the process's, never closed
  // False when this is stderr (or the pipe or file stderr writes to): telling
  // stderr that it is full would block on it.
  bool report_full = true;
  std::shared_ptr<Counters> counters;
  std::atomic<int> kind{kPlain};
  // Set once pwritev2(RWF_NOWAIT) was refused for this pipe (an older kernel).
  std::atomic<bool> no_rwf_nowait{false};

  std::mutex reopen_mu;  // serializes Reopen; never taken by writers
  dev_t dev = 0;         // identity of the open file; guarded by reopen_mu
  ino_t ino = 0;

  // One attempt; returns what write(2) returns, errno set on -1.
  ssize_t WriteOnce(const char* data, size_t n) {
    switch (kind.load(std::memory_order_relaxed)) {
      case kSocket: {
        ssize_t r = ::send(fd, data, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r >= 0 || errno != ENOTSOCK) return r;
        kind.store(kPlain, std::memory_order_relaxed);
        break;
      }
      case kPipe: {
        if (no_rwf_nowait.load(std::memory_order_relaxed)) break;
        iovec iov{const_cast<char*>(data), n};
        ssize_t r = ::pwritev2(fd, &iov, 1, -1, RWF_NOWAIT);
        if (r >= 0 || (errno != EOPNOTSUPP && errno != EINVAL && errno != ENOSYS)) return r;
        no_rwf_nowait.store(true, std::memory_order_relaxed);
        break;
      }
      default:
        break;
    }
    return ::write(fd, data, n);
  }

  void Write(absl::string_view lines) {
    const char* p = lines.data();
    size_t left = lines.size();
    int err = 0;
    int64_t finish_deadline = 0;
    for (int attempt = 0; left > 0 && attempt < kMaxWriteAttempts; ++attempt) {
      ssize_t w = WriteOnce(p, left);
      if (w > 0) {
        p += w;
        left -= static_cast<size_t>(w);
        continue;
      }
      if (w < 0 && errno == EINTR) continue;
      err = w < 0 ? errno : 0;
      // A socket took part of a line and is full now: the rest is worth a
      // short wait, since a torn line spoils the next one too.
      bool torn = p != lines.data() && p[-1] != '\n';
      if (torn && (err == EAGAIN || err == EWOULDBLOCK)) {
        int64_t now = base::RealClock::Get().NowNanos();
        if (finish_deadline == 0) finish_deadline = now + kFinishLineNanos;
        if (now < finish_deadline) {
          pollfd pfd{fd, POLLOUT, 0};
          int ms = static_cast<int>((finish_deadline - now) / base::kNanosPerMilli) + 1;
          if (::poll(&pfd, 1, ms) > 0) continue;
        }
      }
      break;
    }
    if (left == 0) return;
    // A line not written whole is lost: its start may be in the file, its end
    // is not.
    uint64_t lost = CountLines(absl::string_view(p, left));
    counters->dropped_lines.fetch_add(lost, std::memory_order_relaxed);
    bool would_block = err == EAGAIN || err == EWOULDBLOCK;
    if (!would_block) counters->write_errors.fetch_add(1, std::memory_order_relaxed);
    if (would_block && !report_full) return;
    Report(would_block ? "access log lines dropped: the reader is not keeping up"
                       : "access log write failed",
           err);
  }

  // Logs a failure unless one was logged less than a second ago.
  void Report(absl::string_view msg, int err) {
    int64_t now = base::RealClock::Get().NowNanos();
    int64_t last = counters->last_report_nanos.load(std::memory_order_relaxed);
    if (last != INT64_MIN && now - last < base::kNanosPerSecond) return;
    if (!counters->last_report_nanos.compare_exchange_strong(last, now,
                                                             std::memory_order_relaxed)) {
      return;  // another thread reports this second
    }
    FERRY_LOG(kWarn, msg,
              {{"path", path},
               {"error", err == 0 ? std::string("short write") : ErrnoText(err)},
               {"write_errors", counters->write_errors.load(std::memory_order_relaxed)},
               {"dropped_lines", counters->dropped_lines.load(std::memory_order_relaxed)}});
  }
};

namespace {

// O_NONBLOCK: opening a FIFO nobody reads fails (ENXIO) instead of hanging the
// caller, and writes to a FIFO never wait; it changes nothing for a regular
// file. The description is ours alone, unlike stdout's.
constexpr int kOpenFlags = O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
constexpr mode_t kOpenMode = 0640;

absl::StatusOr<base::Fd> OpenPath(const std::string& path, struct stat* st) {
  int fd;
  do {
    fd = ::open(path.c_str(), kOpenFlags, kOpenMode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoError(errno, path, "cannot open");
  base::Fd owned(fd);
  if (::fstat(fd, st) != 0) return ErrnoError(errno, path, "cannot stat");
  return owned;
}

}  // namespace

absl::StatusOr<std::shared_ptr<AccessLog::File>> AccessLog::OpenFile(
    std::string path, std::shared_ptr<Counters> counters) {
  if (path.empty()) path = std::string(kStdout);
  auto file = std::make_shared<File>();
  file->counters = counters != nullptr ? std::move(counters) : std::make_shared<Counters>();
  struct stat st {};
  if (path == kStdout || path == kStderr) {
    file->fd = path == kStdout ? STDOUT_FILENO : STDERR_FILENO;
    if (::fstat(file->fd, &st) != 0) return ErrnoError(errno, path, "cannot use");
  } else {
    FERRY_ASSIGN_OR_RETURN(base::Fd fd, OpenPath(path, &st));
    if (S_ISDIR(st.st_mode)) {  // open(O_WRONLY) refuses one; a guard all the same
      return absl::InvalidArgumentError(
          absl::StrCat("access log \"", path, "\": is a directory"));
    }
    file->fd = fd.Release();
    file->owned = true;
  }
  struct stat err_st {};
  if (::fstat(STDERR_FILENO, &err_st) == 0 && err_st.st_dev == st.st_dev &&
      err_st.st_ino == st.st_ino) {
    file->report_full = false;
  }
  file->path = std::move(path);
  file->kind.store(KindOf(st), std::memory_order_relaxed);
  file->dev = st.st_dev;
  file->ino = st.st_ino;
  return file;
}

absl::Status AccessLog::ReopenFile(File& file) {
  if (!file.owned) return absl::OkStatus();
  std::lock_guard<std::mutex> lock(file.reopen_mu);
  struct stat st {};
  FERRY_ASSIGN_OR_RETURN(base::Fd fresh, OpenPath(file.path, &st));
  if (S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("access log \"", file.path, "\": is a directory"));
  }
  // dup3 closes the old file and installs the new one on the same number in
  // one step; EBUSY is a transient race with open() in another thread.
  int r = -1;
  for (int attempt = 0; attempt < kMaxDupAttempts; ++attempt) {
    r = ::dup3(fresh.get(), file.fd, O_CLOEXEC);
    if (r >= 0 || (errno != EINTR && errno != EBUSY)) break;
  }
  if (r < 0) return ErrnoError(errno, file.path, "cannot reopen");
  file.kind.store(KindOf(st), std::memory_order_relaxed);
  file.no_rwf_nowait.store(false, std::memory_order_relaxed);
  file.dev = st.st_dev;
  file.ino = st.st_ino;
  return absl::OkStatus();
}

AccessLog::AccessLog(std::shared_ptr<File> file, AccessLogFormat format)
    : file_(std::move(file)), format_(format) {}

AccessLog::~AccessLog() = default;

absl::StatusOr<std::shared_ptr<AccessLog>> AccessLog::Open(std::string path,
                                                           AccessLogFormat format) {
  FERRY_ASSIGN_OR_RETURN(std::shared_ptr<File> file, OpenFile(std::move(path), nullptr));
  return std::shared_ptr<AccessLog>(new AccessLog(std::move(file), format));
}

void AccessLog::Write(const AccessRecord& r) {
  std::string line;
  line.reserve(256);
  FormatAccessRecord(format_, r, &line);
  file_->Write(line);
}

void AccessLog::WriteLines(absl::string_view lines) {
  if (!lines.empty()) file_->Write(lines);
}

absl::Status AccessLog::Reopen() { return ReopenFile(*file_); }

uint64_t AccessLog::write_errors() const {
  return file_->counters->write_errors.load(std::memory_order_relaxed);
}

uint64_t AccessLog::dropped_lines() const {
  return file_->counters->dropped_lines.load(std::memory_order_relaxed);
}

const std::string& AccessLog::path() const { return file_->path; }

absl::StatusOr<std::shared_ptr<AccessLog>> AccessLogs::Get(absl::string_view path,
                                                           AccessLogFormat format) {
  std::string key = path.empty() ? std::string(kStdout) : std::string(path);
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = entries_.try_emplace(key);
  Entry& entry = it->second;
  if (auto live = entry.file.lock()) {
    return std::shared_ptr<AccessLog>(new AccessLog(std::move(live), format));
  }
  if (inserted) entry.counters = std::make_shared<AccessLog::Counters>();
  auto opened = AccessLog::OpenFile(key, entry.counters);
  if (!opened.ok()) {
    if (inserted) entries_.erase(it);  // nothing counted yet: nothing to remember
    return opened.status();
  }
  std::shared_ptr<AccessLog::File> file = *std::move(opened);
  if (file->owned) {
    // Another spelling of a file already open (a symlink, "./a.log"): share it
    // (and its counters), closing the descriptor just opened.
    for (auto& [other_path, other] : entries_) {
      if (other_path == key) continue;
      auto live = other.file.lock();
      if (live == nullptr || !live->owned) continue;
      std::lock_guard<std::mutex> file_lock(live->reopen_mu);
      if (live->dev == file->dev && live->ino == file->ino) {
        file = std::move(live);
        break;
      }
    }
  }
  entry.file = file;
  return std::shared_ptr<AccessLog>(new AccessLog(std::move(file), format));
}

absl::Status AccessLogs::ReopenAll() {
  std::vector<std::shared_ptr<AccessLog::File>> files;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::set<AccessLog::File*> seen;
    for (auto& [path, entry] : entries_) {
      auto live = entry.file.lock();
      if (live != nullptr && seen.insert(live.get()).second) files.push_back(std::move(live));
    }
  }
  std::vector<std::string> errors;
  for (const auto& file : files) {
    absl::Status s = AccessLog::ReopenFile(*file);
    if (!s.ok()) errors.push_back(std::string(s.message()));
  }
  if (errors.empty()) return absl::OkStatus();
  return absl::UnavailableError(absl::StrJoin(errors, "; "));
}

uint64_t AccessLogs::write_errors() const {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t sum = 0;
  for (const auto& [path, entry] : entries_) {
    sum += entry.counters->write_errors.load(std::memory_order_relaxed);
  }
  return sum;
}

uint64_t AccessLogs::dropped_lines() const {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t sum = 0;
  for (const auto& [path, entry] : entries_) {
    sum += entry.counters->dropped_lines.load(std::memory_order_relaxed);
  }
  return sum;
}

size_t AccessLogs::open_files() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::set<const AccessLog::File*> seen;
  for (const auto& [path, entry] : entries_) {
    if (auto live = entry.file.lock()) seen.insert(live.get());
  }
  return seen.size();
}

}  // namespace ferry::proxy
