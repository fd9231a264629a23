#pragma once

// The per-connection access log: one line per connection, written when it
// closes, in one of three formats (text, json, clf), to stdout, stderr or a
// file that SIGUSR1 reopens (logrotate's move-then-signal).

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "pkg/net/address.h"
#include "proto/ferry/config/v1/config.pb.h"

namespace ferry::proxy {

// What the access log says about one connection. Borrows everything it points
// to; it only has to live for the FormatAccessRecord() or Write() call.
struct AccessRecord {
  int64_t start_unix_nanos = 0;  // wall clock when the connection was accepted
  int64_t duration_nanos = 0;    // accept to close; negative prints as 0
  absl::string_view rule;
  const net::Address* client = nullptr;    // the client (PROXY protocol's if accepted); set it
  const net::Address* listen = nullptr;    // the listener's bound address; set it
  const net::Address* endpoint = nullptr;  // null when no endpoint was reached
  uint64_t bytes_from_client = 0;          // relayed to the target
  uint64_t bytes_to_client = 0;            // relayed from the target
  absl::string_view outcome;  // a DESIGN.md outcome: "ok", "timeout", "denied", ...
};

enum class AccessLogFormat { kText, kJson, kClf };

// "text", "json" or "clf" (the config's spelling). "none" is not a format:
// the caller keeps no AccessLog then.
absl::StatusOr<AccessLogFormat> ParseAccessLogFormat(absl::string_view name);
absl::string_view AccessLogFormatName(AccessLogFormat format);
// The rule field's format; nullopt for FORMAT_NONE and FORMAT_UNSPECIFIED (no log).
std::optional<AccessLogFormat> AccessLogFormatFromProto(config::v1::AccessLog::Format format);

// Appends one line ending in '\n' to `out`. Every format uses the accept time
// (UTC) as the line's time, like HAProxy, Envoy and Apache. A null `client` or
// `listen` prints as "-" (never crashes). Lines for a fixed record (all three
// formats share the record's values):
//
// text (logfmt; a value is quoted JSON-style only when empty or holding a
// space, '"', '=' or a control byte):
//   ts=2024-05-01T12:34:56.789Z rule=web client=10.1.2.3:51234 listen=0.0.0.0:8080
//   endpoint=10.0.0.7:80 bytes_from_client=1234 bytes_to_client=5678 duration_ms=1500 outcome=ok
//   (one line; `endpoint=-` when none was reached). These are rinetd's fields
//   (time, client, listening address and port, forwarded-to address and port,
//   bytes each way, status) plus the rule and the duration.
// json: one object with the same keys in the same order; byte counts and
//   duration_ms are numbers, "endpoint" is null when none was reached.
// clf: rinetd's "logcommon" line, so tools that read rinetd's log read ferry's:
//   10.1.2.3 - - [01/May/2024:12:34:56 +0000] "GET /rinetd-services/0.0.0.0/8080/10.0.0.7/80/ok
//   HTTP/1.0" 200 5678 - - - 1234
//   Hosts without port or brackets; the status field always 200 and the real
//   outcome is the last path segment (rinetd's trick, so log analyzers keep
//   the line); bytes to the client in the size field, bytes from the client
//   last. No endpoint: "-/0". A unix address is "unix:PATH" with port 0; bytes
//   outside [A-Za-z0-9._~:@!$&'()*+,;=-] are %XX-escaped (so are '/' inside
//   the URL's segments). The rule and the duration have no place in this shape.
void FormatAccessRecord(AccessLogFormat format, const AccessRecord& r, std::string* out);

// AccessLog formats records in one format and writes them to stdout, stderr or
// a file (opened O_WRONLY|O_APPEND|O_CREAT|O_CLOEXEC|O_NONBLOCK, mode 0640
// before the umask). Rules hold it by shared_ptr; AccessLogs hands out logs of
// one path that share one open file. Every method may be called from any
// thread; the object itself is never changed after Open() except through its
// atomics and the kernel's fd table.
//
// Write() is one write(2) of one whole line, with no lock: the kernel keeps
// O_APPEND writes to a file and writes of up to PIPE_BUF bytes to a pipe whole,
// so lines from different threads never interleave (on a socket: as long as it
// takes each line whole, which a unix socket does for lines this short).
//
// Reopen() (SIGUSR1) opens the path again and installs the new file on the SAME
// fd number with dup3(2), which swaps the file atomically: a write that races
// it lands wholly in the old file or wholly in the new one, and the old file is
// released by the kernel once the last in-flight write to it returns. So no fd
// is ever closed under a writer (an fd number reused by a socket could receive
// a log line), no writer takes a lock or a reference count, and no retired fds
// pile up. On failure the old file stays in use.
//
// Write() never waits for a slow reader: a full pipe or socket (stdout under a
// container runtime or journald) drops the line (pwritev2 RWF_NOWAIT on a
// pipe, send MSG_DONTWAIT on a socket, so the flags of the stdout description,
// shared with other processes, stay untouched; a kernel without RWF_NOWAIT for
// pipes falls back to a plain write). A socket that took part of a line gets
// up to 50 ms to take the rest. A regular file has no non-blocking mode, so a
// slow disk can still delay a write; a full disk fails at once (ENOSPC). A
// failed or partial line counts in dropped_lines(); the failures that are not
// "would block" also count in write_errors(). Both are logged at most once per
// second (FERRY_LOG, to stderr; a full stderr is not told it is full).
class AccessLog {
 public:
  // `path`: "stdout", "stderr" (the process's fds, never closed or reopened),
  // "" (= stdout) or a file path. Fails with the path and the reason, e.g.
  // `access log "/missing/dir/a.log": cannot open: No such file or directory`
  // (status code from errno: NotFound, PermissionDenied, ...).
  static absl::StatusOr<std::shared_ptr<AccessLog>> Open(std::string path,
                                                         AccessLogFormat format);

  ~AccessLog();
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  // Formats `r` and writes the line. Any thread; never blocks on a full pipe.
  void Write(const AccessRecord& r);
  // Writes already formatted bytes (whole lines ending in '\n') in one write.
  void WriteLines(absl::string_view lines);
  // Opens the file path again (see the class comment); OK and nothing done
  // for stdout and stderr. Any thread; concurrent calls are serialized.
  absl::Status Reopen();

  // Counters of the underlying file, shared by every AccessLog of that file.
  uint64_t write_errors() const;
  uint64_t dropped_lines() const;
  // As given to Open ("stdout" for ""), or the first path a shared file was
  // opened with.
  const std::string& path() const;
  AccessLogFormat format() const { return format_; }

 private:
  friend class AccessLogs;
  struct Counters;
  struct File;
  AccessLog(std::shared_ptr<File> file, AccessLogFormat format);
  static absl::StatusOr<std::shared_ptr<File>> OpenFile(std::string path,
                                                       std::shared_ptr<Counters> counters);
  static absl::Status ReopenFile(File& file);

  const std::shared_ptr<File> file_;
  const AccessLogFormat format_;
};

// AccessLogs hands out AccessLogs so that rules naming the same file share one
// open file (and one Reopen): by path, and by device and inode for different
// spellings of one file (a symlink, "./a.log"). Rules of different formats may
// share a file. It keeps only weak references: a file closes when no rule uses
// it any more. Owned by the server; Get() from the config thread, ReopenAll()
// from the signal thread, the sums from the metrics scrape; a mutex guards the
// map (never taken by Write()).
class AccessLogs {
 public:
  absl::StatusOr<std::shared_ptr<AccessLog>> Get(absl::string_view path, AccessLogFormat format);

  // Reopens every open file. Each is tried; the error names every file that
  // failed (each keeps writing to its old file).
  absl::Status ReopenAll();

  // Totals over every file this registry opened, closed ones included, so a
  // metric built on them never goes back.
  uint64_t write_errors() const;
  uint64_t dropped_lines() const;
  // Distinct files open now (for tests and the status page).
  size_t open_files() const;

 private:
  struct Entry {
    std::weak_ptr<AccessLog::File> file;
    // The counters of files opened under this path; kept after the file closes
    // (one small entry per path ever configured) for the path's next file.
    // Never null; each entry has its own, so the sums count nothing twice.
    std::shared_ptr<AccessLog::Counters> counters;
  };
  mutable std::mutex mu_;
  std::map<std::string, Entry, std::less<>> entries_;  // by path; guarded by mu_
};

}  // namespace ferry::proxy
