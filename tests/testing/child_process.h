#pragma once

// A child process (the real ferry binary, or a tool such as ip) with its
// stdout and stderr captured by a reader thread, so it never blocks on a full
// pipe. The destructor ends a child still running with SIGKILL to its pid —
// always, also when the test failed — and reaps it.

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "pkg/net/address.h"
#include "tests/testing/sockets.h"

namespace ferry::testing {

class ChildProcess {
 public:
  struct Options {
    // RLIMIT_NOFILE (soft and hard) set in the child before exec; 0 = inherit.
    uint64_t max_fds = 0;
    // The child's stdin: the file `stdin_file` when set, else `stdin_bytes`
    // (from an in-memory file, so the child can read it at its own pace)
    // when set, else /dev/null.
    std::string stdin_file;
    std::optional<std::string> stdin_bytes;
  };

  // Starts `path` with `args` (argv[1..]); stdin as `options` say. The child gets
  // SIGKILL if this thread dies first (PR_SET_PDEATHSIG).
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(const std::string& path,
                                                             const std::vector<std::string>& args,
                                                             const Options& options);
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(const std::string& path,
                                                             const std::vector<std::string>& args) {
    return Start(path, args, Options());
  }
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool Signal(int sig);
  // True while the child has not exited (reaps it when it has).
  bool Running();
  // Waits up to `timeout` for the exit; returns the wait status, or nullopt
  // if it is still running.
  std::optional<int> WaitExit(Millis timeout);
  // The exit code (WEXITSTATUS) after WaitExit succeeded; -1 for a signal
  // death (then term_signal() is set) or while running.
  int exit_code() const;
  int term_signal() const;

  std::string Stdout();
  std::string Stderr();
  // Waits until stderr contains `needle`.
  bool WaitForStderr(const std::string& needle, Millis timeout);
  // Waits until both output pipes reached EOF (after the exit, all output is in).
  bool WaitOutputClosed(Millis timeout);

 private:
  ChildProcess() = default;
  void ReadOutput(int out_fd, int err_fd);

  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
  std::mutex mu_;
  std::string out_;  // guarded by mu_
  std::string err_;  // guarded by mu_
  std::atomic<bool> reader_done_{false};
  std::atomic<bool> stop_reader_{false};
  std::thread reader_;
};

// Runs `path args...` to completion (bounded by `timeout`; killed after it).
// Returns the exit code (-1 when it did not exit by itself) and fills `output`
// with stdout and stderr.
int RunCommand(const std::string& path, const std::vector<std::string>& args,
               std::string* output = nullptr, Millis timeout = Millis(10000));

// Waits for a ferry process to log `msg="started"`, and returns the address
// its "listening" line gives for `rule` (the real port when the config said 0).
absl::StatusOr<net::Address> WaitListening(ChildProcess& ferry, const std::string& rule,
                                           Millis timeout = Millis(10000));

// A ferry command run to its end: the exit code and what it printed.
struct FerryRun {
  int code = -1;  // -1: it did not run or exit; `err` then says why
  std::string out;
  std::string err;
};

// Runs the ferry binary under test with `args` (stdin /dev/null) until it
// exits, `timeout` at most (then it is killed by its pid).
FerryRun RunFerry(const std::vector<std::string>& args, Millis timeout = Millis(10000));

// The ferry binary under test ($FERRY_BINARY), or "" when unset.
std::string FerryBinary();

// The first executable `name` in /usr/sbin, /sbin, /usr/bin, /bin, or "".
std::string FindTool(const std::string& name);

}  // namespace ferry::testing
