#include "tests/testing/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

namespace ferry::testing {

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(
    const std::string& path, const std::vector<std::string>& args, const Options& options) {
  if (path.empty()) return absl::FailedPreconditionError("no binary path");
  // Everything the child needs is prepared before fork(): after it, only
  // async-signal-safe calls.
  std::vector<std::string> argv_store;
  argv_store.push_back(path);
  for (const auto& a : args) argv_store.push_back(a);
  std::vector<char*> argv;
  for (auto& a : argv_store) argv.push_back(a.data());
  argv.push_back(nullptr);
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return absl::InternalError("pipe2");
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return absl::InternalError("pipe2");
  }
  int stdin_fd = -1;
  if (!options.stdin_file.empty()) {
    stdin_fd = ::open(options.stdin_file.c_str(), O_RDONLY | O_CLOEXEC);
  } else if (options.stdin_bytes.has_value()) {
    stdin_fd = ::memfd_create("ferry-test-stdin", MFD_CLOEXEC);
    const std::string& bytes = *options.stdin_bytes;
    for (size_t done = 0; stdin_fd >= 0 && done < bytes.size();) {
      ssize_t n = ::write(stdin_fd, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        ::close(stdin_fd);
        stdin_fd = -1;
        break;
      }
      done += static_cast<size_t>(n);
    }
    if (stdin_fd >= 0) ::lseek(stdin_fd, 0, SEEK_SET);
  } else {
    stdin_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  if (stdin_fd < 0) {
    int err = errno;
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) ::close(fd);
    return absl::InternalError(absl::StrCat("child stdin: ", std::strerror(err)));
  }
  rlimit limit{static_cast<rlim_t>(options.max_fds), static_cast<rlim_t>(options.max_fds)};
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1], stdin_fd}) ::close(fd);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(err)));
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);
    ::dup2(stdin_fd, 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    // Unblock every signal the test process may have blocked.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // Nothing the test process holds leaks into the child (or counts
    // against its fd limit).
    ::syscall(SYS_close_range, 3u, ~0u, 0u);
    if (options.max_fds > 0) ::setrlimit(RLIMIT_NOFILE, &limit);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(stdin_fd);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  std::unique_ptr<ChildProcess> child(new ChildProcess());
  child->pid_ = pid;
  int out_fd = out_pipe[0], err_fd = err_pipe[0];
  child->reader_ =
      std::thread([c = child.get(), out_fd, err_fd] { c->ReadOutput(out_fd, err_fd); });
  return child;
}

void ChildProcess::ReadOutput(int out_fd, int err_fd) {
  pollfd p[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  int open = 2;
  char buf[4096];
  while (open > 0 && !stop_reader_.load()) {
    int n = ::poll(p, 2, 100);
    if (n < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (p[i].fd < 0 || p[i].revents == 0) continue;
      ssize_t r = ::read(p[i].fd, buf, sizeof(buf));
      if (r > 0) {
        std::lock_guard<std::mutex> lock(mu_);
        (i == 0 ? out_ : err_).append(buf, static_cast<size_t>(r));
      } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
        ::close(p[i].fd);
        p[i].fd = -1;
        --open;
      }
    }
  }
  for (auto& x : p) {
    if (x.fd >= 0) ::close(x.fd);
  }
  reader_done_.store(true);
}

bool ChildProcess::WaitOutputClosed(Millis timeout) {
  return WaitUntil([&] { return reader_done_.load(); }, timeout, Millis(2));
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);
    int status;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
  }
  // The pipes reach EOF once the child is gone; a grandchild that kept them
  // open must not hold up the test, so the reader gives up after a while.
  WaitOutputClosed(Millis(1000));
  stop_reader_.store(true);
  if (reader_.joinable()) reader_.join();
}

bool ChildProcess::Signal(int sig) { return !reaped_ && ::kill(pid_, sig) == 0; }

bool ChildProcess::Running() {
  if (reaped_) return false;
  int status;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    status_ = status;
    return false;
  }
  return true;
}

std::optional<int> ChildProcess::WaitExit(Millis timeout) {
  WaitUntil([&] { return !Running(); }, timeout, Millis(2));
  if (!reaped_) return std::nullopt;
  return status_;
}

int ChildProcess::exit_code() const {
  if (!reaped_ || !WIFEXITED(status_)) return -1;
  return WEXITSTATUS(status_);
}

int ChildProcess::term_signal() const {
  if (!reaped_ || !WIFSIGNALED(status_)) return 0;
  return WTERMSIG(status_);
}

std::string ChildProcess::Stdout() {
  std::lock_guard<std::mutex> lock(mu_);
  return out_;
}

std::string ChildProcess::Stderr() {
  std::lock_guard<std::mutex> lock(mu_);
  return err_;
}

bool ChildProcess::WaitForStderr(const std::string& needle, Millis timeout) {
  return WaitUntil([&] { return Stderr().find(needle) != std::string::npos; }, timeout, Millis(5));
}

int RunCommand(const std::string& path, const std::vector<std::string>& args, std::string* output,
               Millis timeout) {
  auto child = ChildProcess::Start(path, args);
  if (!child.ok()) {
    if (output != nullptr) *output = std::string(child.status().message());
    return -1;
  }
  std::unique_ptr<ChildProcess> c = std::move(*child);
  c->WaitExit(timeout);
  int code = c->Running() ? -1 : c->exit_code();
  c->WaitOutputClosed(Millis(1000));
  std::string out = c->Stdout(), err = c->Stderr();
  c.reset();  // kills it if still running, joins the reader
  if (output != nullptr) *output = out + err;
  return code;
}

absl::StatusOr<net::Address> WaitListening(ChildProcess& ferry, const std::string& rule,
                                           Millis timeout) {
  bool started = WaitUntil(
      [&] {
        return ferry.Stderr().find("msg=\"started\"") != std::string::npos || !ferry.Running();
      },
      timeout, Millis(5));
  std::string err = ferry.Stderr();
  if (!started || err.find("msg=\"started\"") == std::string::npos) {
    return absl::UnavailableError(absl::StrCat("ferry did not start; stderr:\n", err));
  }
  // ts=... level=info msg="listening" rule=NAME address=ADDR endpoints=...
  const std::string key = absl::StrCat("msg=\"listening\" rule=", rule, " address=");
  size_t at = err.find(key);
  if (at == std::string::npos) {
    return absl::NotFoundError(absl::StrCat("no listening line for ", rule, "; stderr:\n", err));
  }
  size_t begin = at + key.size();
  size_t end = err.find_first_of(" \n", begin);
  std::string text = err.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
  return net::Address::ParseLiteral(text);
}

FerryRun RunFerry(const std::vector<std::string>& args, Millis timeout) {
  FerryRun r;
  const std::string binary = FerryBinary();
  if (binary.empty()) {
    r.err = "FERRY_BINARY is not set";
    return r;
  }
  auto child = ChildProcess::Start(binary, args);
  if (!child.ok()) {
    r.err = std::string(child.status().message());
    return r;
  }
  if (!(*child)->WaitExit(timeout).has_value()) {
    r.err = absl::StrCat("ferry did not exit within ", timeout.count(), " ms; stderr:\n",
                         (*child)->Stderr());
    return r;  // the destructor kills it
  }
  (*child)->WaitOutputClosed(Millis(2000));
  r.code = (*child)->exit_code();
  r.out = (*child)->Stdout();
  r.err = (*child)->Stderr();
  return r;
}

std::string FerryBinary() {
  const char* b = std::getenv("FERRY_BINARY");
  return b == nullptr ? "" : b;
}

std::string FindTool(const std::string& name) {
  for (const char* dir :
       {"/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/local/bin"}) {
    std::string p = absl::StrCat(dir, "/", name);
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

}  // namespace ferry::testing
