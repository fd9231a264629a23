#pragma once

// Blocking loopback sockets for tests. Every socket these helpers return has
// SO_RCVTIMEO and SO_SNDTIMEO set, so no read or write can block a test for
// longer than its I/O timeout, and every wait here has a deadline.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/strings/string_view.h"
#include "pkg/base/fd.h"
#include "pkg/net/address.h"

namespace ferry::testing {

using Millis = std::chrono::milliseconds;

// Default SO_RCVTIMEO/SO_SNDTIMEO of test sockets.
inline constexpr int kIoTimeoutMs = 10'000;

// Milliseconds on the monotonic clock.
int64_t NowMs();

// A point in time a wait must not pass.
class Deadline {
 public:
  explicit Deadline(Millis timeout) : end_ms_(NowMs() + timeout.count()) {}
  bool Expired() const { return NowMs() >= end_ms_; }
  int RemainingMs() const;

 private:
  int64_t end_ms_;
};

// Calls `cond` every `poll` until it returns true or `timeout` has passed.
// Returns the last result of `cond`.
bool WaitUntil(const std::function<bool()>& cond, Millis timeout, Millis poll = Millis(2));

void SetIoTimeouts(int fd, int timeout_ms);
void SetBlocking(int fd, bool blocking);

// A connected client socket, or err = the errno of the failed connect
// (ETIMEDOUT when `connect_timeout_ms` passed).
struct Connected {
  base::Fd fd;
  int err = 0;
};
Connected Connect(const net::Address& address, int connect_timeout_ms = 5000,
                  int io_timeout_ms = kIoTimeoutMs);

// A listening socket on `literal` ("127.0.0.1:0", "[::1]:0", "unix:/path")
// and the address it is bound to (the real port). fd is invalid on failure.
struct Listening {
  base::Fd fd;
  net::Address address;
  int err = 0;
};
Listening Listen(const std::string& literal, int backlog = 4096);

// Writes all of `data`; false on error or timeout (errno says which).
bool SendAll(int fd, const void* data, size_t n);
bool SendAll(int fd, absl::string_view data);

// The end of a read: `bytes` read, then EOF, or err (an errno; EAGAIN means
// the I/O timeout passed with nothing to read).
struct ReadResult {
  size_t bytes = 0;
  bool eof = false;
  int err = 0;
};
// Reads exactly `n` bytes into `out` (appended) unless EOF or an error comes first.
ReadResult ReadExactly(int fd, size_t n, std::string* out);
// Reads until EOF or an error, at most `max` bytes, appending to `out` (may be null).
ReadResult ReadToEof(int fd, std::string* out, size_t max = SIZE_MAX);

// Sends `message` and reads the same number of bytes back; returns "" when
// they equal `message`, else what went wrong (for an echo target).
std::string EchoRoundTrip(int fd, absl::string_view message);

// True when `fd` has something to read (data, EOF or an error) within `timeout_ms`.
bool WaitReadable(int fd, int timeout_ms);

// What the peer did, seen by one recv() after waiting up to `timeout_ms`:
// kData, kEof, kReset (ECONNRESET), kOtherError or kTimeout.
enum class PeerState { kData, kEof, kReset, kOtherError, kTimeout };
PeerState ProbePeer(int fd, int timeout_ms);
const char* PeerStateName(PeerState s);

// Closes `fd` with an RST instead of a FIN (SO_LINGER 0).
void ResetAndClose(base::Fd& fd);

// True when an IPv6 socket can bind ::1 here.
bool HaveIpv6Loopback();

// A directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(absl::string_view name) const;
  // Writes `content` to File(name) and returns its path.
  std::string Write(absl::string_view name, absl::string_view content) const;

 private:
  std::string path_;
};

}  // namespace ferry::testing
