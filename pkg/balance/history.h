#pragma once

// Byte history for the least_bytes balancer: the decaying per-endpoint
// counter, the start value of an endpoint that (re)appears, and the tcp-pf
// host-file format the history persists in, with its atomic save and the lock
// that keeps `ferry history set|reset` away from a file a running ferry owns.
//
// Pure logic and file I/O: no sockets, no threads, no clock of its own (every
// time is passed in as monotonic nanoseconds, base::Clock::NowNanos()).

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "pkg/base/fd.h"

namespace ferry::balance {

// A byte count that decays exponentially: a byte added at time t counts as
// 2^-((now - t) / half_life) bytes at `now`. half_life_nanos == 0 means no
// decay, a plain sum (the classic tcp-pf behaviour).
//
// The counter stores its value at a reference time and folds the decay into
// it on every Add/Set (no per-tick work, no growing exponent): each fold costs
// a few roundings of relative 2^-53, and the decay damps older rounding errors
// as it damps older bytes, so precision holds over any run length. Without
// decay the sum is exact up to 2^53 bytes (8 PiB); past that it is exact to 53
// significant bits. Values far in the past underflow to 0, never to NaN.
//
// A value type; not thread-safe (one per endpoint per worker loop, owned by
// whoever ranks the endpoints). `now` must not go backwards: an earlier `now`
// than the last Add/Set is taken as that time (no decay, no growth).
class DecayingCounter {
 public:
  explicit DecayingCounter(int64_t half_life_nanos = 0)
      : half_life_nanos_(half_life_nanos > 0 ? half_life_nanos : 0) {}

  // Adds `bytes` at `now`.
  void Add(uint64_t bytes, int64_t now_nanos);
  // The decayed value at `now` (>= 0). Does not change the counter.
  double Value(int64_t now_nanos) const;
  // Replaces the value: `value` at `now` (a negative or NaN value becomes 0).
  void Set(double value, int64_t now_nanos);

  int64_t half_life_nanos() const { return half_life_nanos_; }

 private:
  int64_t half_life_nanos_;
  double value_ = 0;  // the value at ref_nanos_
  int64_t ref_nanos_ = 0;
  bool has_ref_ = false;  // false until the first Add/Set
};

// The value an endpoint starts at when it appears, or comes back from
// ejection or from a DNS absence: the lowest history among the endpoints
// present now (0 when there are none), so it is not flooded with every new
// connection as it would be at 0, nor starved as it could be at its old value.
double StartValue(const std::vector<double>& present_values);

// A value as a whole byte count for the history file: rounded to nearest,
// negative and NaN as 0, anything at or above 2^64 as UINT64_MAX.
uint64_t ToByteCount(double value);

// One line of a history file. `endpoint` is canonical (see CanonicalHistoryKey):
// an endpoint key "IP:PORT", "[IPv6]:PORT", "unix:/path", or a bare host
// ("10.0.0.7", "::1", "web.example.com") that stands for every endpoint on it.
struct HistoryEntry {
  std::string endpoint;
  uint64_t bytes = 0;

  bool operator==(const HistoryEntry& other) const {
    return endpoint == other.endpoint && bytes == other.bytes;
  }
  bool operator!=(const HistoryEntry& other) const { return !(*this == other); }
};

// A problem on one line of a history file, e.g. {3, "bad byte count \"12x\""}.
struct HistoryProblem {
  int line = 0;  // 1-based
  std::string message;

  // "line 3: bad byte count \"12x\"".
  std::string ToString() const;

  bool operator==(const HistoryProblem& other) const {
    return line == other.line && message == other.message;
  }
};

// What a history file holds: the good lines, and a problem for each other one.
struct ParsedHistory {
  // In the order of their first line; a key given twice has its last value.
  std::vector<HistoryEntry> entries;
  std::vector<HistoryProblem> problems;

  // The bytes recorded for the endpoint `endpoint_key` (as Address::ToString()
  // prints it): its own line if there is one, else the line of its host's IP
  // ("10.0.0.7" for "10.0.0.7:80", "::1" for "[::1]:80"), else the line of
  // `host_name` when given (the DNS name the endpoint was resolved from, so a
  // tcp-pf "web.example.com BYTES" line covers every address it resolves to).
  // nullopt when nothing matches. Unix endpoints match their own line only.
  std::optional<uint64_t> Lookup(absl::string_view endpoint_key,
                                 absl::string_view host_name = "") const;
};

// Checks one key as a history file or `ferry history` takes it and returns its
// canonical form: an endpoint key (IPv6 compressed in brackets, IPv4-mapped
// IPv6 as IPv4, so it equals Address::ToString()), or a bare host (an IP
// literal, "[::1]" taken as "::1", or a host name, lowercased). The error
// names the problem, e.g. "port 70000 out of range" or "bad IPv4 address
// \"10.0.0.300\"". Keys with whitespace or '#' cannot be written in the file
// and are refused.
absl::StatusOr<std::string> CanonicalHistoryKey(absl::string_view text);

// Parses a byte count as the file writes it: decimal digits only, 0 to
// UINT64_MAX. The error names the problem ("negative byte count \"-5\"",
// "byte count \"...\" larger than 18446744073709551615").
absl::StatusOr<uint64_t> ParseByteCount(absl::string_view text);

// Parses the text of a history file (tcp-pf's host-file format): one
// `KEY BYTES` per line, separated by spaces or tabs; `#` starts a comment
// (whole line or after the fields); blank lines and CRLF line ends are fine.
// A bad line is reported with its number and skipped; the rest is used. A key
// given twice keeps its last value and the repeat is reported. Never fails.
ParsedHistory ParseHistoryFile(absl::string_view text);

// The text of a history file for `entries`: a header comment, then one line
// per entry sorted by key. ParseHistoryFile of the result gives back the
// entries (sorted) exactly, when every key is canonical and given once.
std::string FormatHistoryFile(const std::vector<HistoryEntry>& entries);

// Reading and writing history files. Stateless; any thread.
class HistoryFile {
 public:
  // Reads and parses `path`. A missing file is an empty history (no error,
  // no problems): the first start has none. Any other failure (permissions, a
  // directory, larger than 64 MiB) is an error naming the path and the reason.
  // Bad lines are in the result's `problems`, for the caller to report.
  static absl::StatusOr<ParsedHistory> Load(const std::string& path);

  // Replaces `path` with FormatHistoryFile(entries) so a reader or a crash
  // sees the old file or the new one, never a mix: writes `PATH.tmp.PID` in
  // the same directory, fsyncs it, renames it over `path`, fsyncs the
  // directory. On failure `path` is untouched, the temporary file is removed,
  // and the error names the file and strerror. An entry whose key is not
  // canonical is an InvalidArgument error and nothing is written.
  static absl::Status SaveAtomically(const std::string& path,
                                     const std::vector<HistoryEntry>& entries);
};

// An exclusive flock() on the sidecar file `PATH.lock` of the history file
// PATH, held by the ferry that owns PATH for as long as it runs (and by
// `ferry history set|reset` while they edit). The lock is on a sidecar, not
// on PATH itself, because every save renames a new file over PATH: a lock on
// the old inode would guard nothing after the first save. The sidecar holds
// the holder's pid as text (for messages only) and is left in place when the
// lock is released, so every process always locks the same inode.
//
// Move-only; owned by whoever holds the lock; released when destroyed (or
// when the process dies: the kernel drops flock locks with the last fd).
// flock locks belong to an open file description: a second TryLock in the
// same process fails too.
class HistoryLock {
 public:
  HistoryLock(HistoryLock&&) = default;
  HistoryLock& operator=(HistoryLock&&) = default;

  // Takes the lock without waiting, creating `PATH.lock` if needed. Fails
  // with FailedPrecondition "history file \"PATH\" is held by another process
  // (pid N)" while someone holds it, or with the reason the sidecar cannot be
  // opened or locked.
  static absl::StatusOr<HistoryLock> TryLock(const std::string& history_path);

  // "PATH.lock" for the history file `history_path`.
  static std::string LockPath(const std::string& history_path);

  const std::string& lock_path() const { return lock_path_; }

 private:
  HistoryLock(base::Fd fd, std::string lock_path)
      : fd_(std::move(fd)), lock_path_(std::move(lock_path)) {}

  base::Fd fd_;
  std::string lock_path_;
};

}  // namespace ferry::balance
