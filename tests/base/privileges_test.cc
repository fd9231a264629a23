#include "pkg/base/privileges.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "pkg/base/fd.h"

namespace ferry::base {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr uint64_t kBindCap = uint64_t{1} << CAP_NET_BIND_SERVICE;
constexpr milliseconds kChildTimeout(20'000);
constexpr char kChildOk[] = "ok";

// Dropping privileges cannot be undone, so every real drop runs in a forked
// child. `body` returns "" when all its checks passed, else what failed; the
// child sends that over a pipe and _exits (no atexit handlers, no leak check
// under a uid that cannot ptrace). Returns "" or the failure, including a
// child that crashed or hung (it is then killed by its pid).
std::string RunInChild(const std::function<std::string()>& body) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return absl::StrCat("pipe2: ", std::strerror(errno));
  Fd read_end(fds[0]);
  Fd write_end(fds[1]);
  pid_t pid = ::fork();
  if (pid < 0) return absl::StrCat("fork: ", std::strerror(errno));
  if (pid == 0) {
    read_end.Reset();
    std::string report = body();
    if (report.empty()) report = kChildOk;
    const char* p = report.data();
    size_t left = report.size();
    while (left > 0) {
      ssize_t n = ::write(write_end.get(), p, left);
      if (n <= 0) break;
      p += n;
      left -= static_cast<size_t>(n);
    }
    ::_exit(0);
  }
  write_end.Reset();

  const auto deadline = steady_clock::now() + kChildTimeout;
  auto remaining_ms = [&] {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now());
    return static_cast<int>(std::max<int64_t>(0, left.count()));
  };
  std::string report;
  bool timed_out = false;
  while (true) {
    pollfd pfd{read_end.get(), POLLIN, 0};
    int ready = ::poll(&pfd, 1, remaining_ms());
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) {
      timed_out = true;
      break;
    }
    char buffer[4096];
    ssize_t n = ::read(read_end.get(), buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the child has exited or is exiting.
    report.append(buffer, static_cast<size_t>(n));
  }
  int wstatus = 0;
  pid_t reaped = 0;
  while (!timed_out && (reaped = ::waitpid(pid, &wstatus, WNOHANG)) == 0) {
    if (remaining_ms() == 0) {
      timed_out = true;
      break;
    }
    std::this_thread::sleep_for(milliseconds(2));
  }
  if (timed_out) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &wstatus, 0);
    return absl::StrCat("child timed out after ", kChildTimeout.count(), " ms; it said: ", report);
  }
  if (WIFSIGNALED(wstatus)) {
    return absl::StrCat("child died of signal ", WTERMSIG(wstatus), "; it said: ", report);
  }
  if (report != kChildOk) return report.empty() ? "child reported nothing" : report;
  return "";
}

// Binds a TCP socket to 127.0.0.1:`port` and closes it; 0 or the errno.
int BindLoopback(int port) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return errno;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 ? 0 : errno;
}

// Binds some privileged port on 127.0.0.1, walking down from just below the
// unprivileged start past ports in use. 0 or the first errno other than
// EADDRINUSE; *port says which port was tried last.
int BindLowPort(int* port) {
  int top = std::min(UnprivilegedPortStart(), 1024) - 1;
  int err = EADDRINUSE;
  for (int p = top; p >= 1 && p > top - 300; --p) {
    *port = p;
    err = BindLoopback(p);
    if (err != EADDRINUSE) return err;
  }
  return err;
}

std::string ErrName(int err) { return err == 0 ? "success" : std::strerror(err); }

std::vector<gid_t> SortedGroups(std::vector<gid_t> groups) {
  std::sort(groups.begin(), groups.end());
  groups.erase(std::unique(groups.begin(), groups.end()), groups.end());
  return groups;
}

std::vector<gid_t> CurrentGroups() {
  int n = ::getgroups(0, nullptr);
  if (n < 0) return {};
  std::vector<gid_t> groups(static_cast<size_t>(n));
  n = ::getgroups(n, groups.data());
  groups.resize(n < 0 ? 0 : static_cast<size_t>(n));
  return SortedGroups(groups);
}

// Checks that real, effective and saved uid and gid are `uid` and `gid`.
std::string CheckIds(uid_t uid, gid_t gid) {
  uid_t ruid, euid, suid;
  gid_t rgid, egid, sgid;
  if (::getresuid(&ruid, &euid, &suid) != 0 || ::getresgid(&rgid, &egid, &sgid) != 0) {
    return absl::StrCat("getres[ug]id: ", std::strerror(errno));
  }
  if (ruid != uid || euid != uid || suid != uid || ::getuid() != uid || ::geteuid() != uid) {
    return absl::StrCat("uids ", ruid, "/", euid, "/", suid, ", want ", uid);
  }
  if (rgid != gid || egid != gid || sgid != gid || ::getgid() != gid || ::getegid() != gid) {
    return absl::StrCat("gids ", rgid, "/", egid, "/", sgid, ", want ", gid);
  }
  return "";
}

// The capability sets of the calling thread as the kernel reports them in
// /proc/thread-self/status, to check EffectiveCapabilities() against a second source.
uint64_t ProcCapability(const std::string& field) {
  std::ifstream in("/proc/thread-self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) != 0) continue;
    uint64_t mask = 0;
    std::string hex = line.substr(field.size() + 1);
    hex.erase(0, hex.find_first_not_of(" \t"));
    if (absl::SimpleHexAtoi(hex, &mask)) return mask;
  }
  return ~uint64_t{0};
}

struct Nobody {
  uid_t uid;
  gid_t gid;
  std::vector<gid_t> groups;  // sorted, the primary group included
};

// Skips the test unless it runs as root holding CAP_NET_BIND_SERVICE, with a
// user "nobody" and privileged ports below the unprivileged start.
#define SKIP_UNLESS_ROOT_AND_NOBODY(nobody)                                                  \
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (euid " << ::geteuid() << ")";          \
  if ((PermittedCapabilities() & kBindCap) == 0)                                            \
    GTEST_SKIP() << "root without CAP_NET_BIND_SERVICE";                                    \
  if (UnprivilegedPortStart() < 2)                                                          \
    GTEST_SKIP() << "ip_unprivileged_port_start is " << UnprivilegedPortStart()             \
                 << ": no privileged ports to test";                                        \
  std::optional<Nobody> nobody_opt = LookupNobody();                                        \
  if (!nobody_opt) GTEST_SKIP() << "no user \"nobody\"";                                    \
  const Nobody nobody = *nobody_opt

std::optional<Nobody> LookupNobody() {
  passwd* pw = ::getpwnam("nobody");
  if (pw == nullptr || pw->pw_uid == 0) return std::nullopt;
  Nobody nobody{pw->pw_uid, pw->pw_gid, {}};
  std::vector<gid_t> groups(256);
  int n = static_cast<int>(groups.size());
  if (::getgrouplist("nobody", nobody.gid, groups.data(), &n) < 0) return std::nullopt;
  groups.resize(static_cast<size_t>(n));
  nobody.groups = SortedGroups(groups);
  return nobody;
}

TEST(PrivilegesTest, UnknownUserIsNotFoundAndNamesIt) {
  absl::Status status = DropPrivileges("ferry-no-such-user");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_EQ(status.message(), "--user ferry-no-such-user: no such user");
}

TEST(PrivilegesTest, MalformedUsersAreInvalidArgument) {
  struct Case {
    std::string user;
    std::string message;
  };
  const Case cases[] = {
      {"", "--user: empty user name"},
      {std::string("no\0body", 7), "--user: not a user name: \"no\\000body\""},
      {std::string(300, 'a'), absl::StrCat("--user: not a user name: \"", std::string(300, 'a'),
                                           "\"")},
      {"4294967295", "--user 4294967295: uid out of range (0 to 4294967294)"},
      {"99999999999999999999", "--user 99999999999999999999: uid out of range (0 to 4294967294)"},
  };
  for (const Case& c : cases) {
    absl::Status status = DropPrivileges(c.user);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.user << ": " << status;
    EXPECT_EQ(status.message(), c.message);
  }
  // Still root: none of these got as far as changing anything.
  EXPECT_EQ(CheckIds(::getuid(), ::getgid()), "");
}

TEST(PrivilegesTest, RootIsRefusedBecauseNothingWouldBeDropped) {
  if (::getpwnam("root") == nullptr) GTEST_SKIP() << "no user \"root\"";
  for (const char* user : {"root", "0"}) {
    absl::Status status = DropPrivileges(user);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_EQ(status.message(),
              absl::StrCat("--user ", user, " is uid 0: that would drop no privileges"));
  }
}

TEST(PrivilegesTest, LooksUpNameAndNumericUidAlike) {
  std::optional<Nobody> nobody = LookupNobody();
  if (!nobody) GTEST_SKIP() << "no user \"nobody\"";
  for (const std::string& user : {std::string("nobody"), absl::StrCat(nobody->uid)}) {
    absl::StatusOr<UserInfo> info = LookupUser(user);
    ASSERT_TRUE(info.ok()) << user << ": " << info.status();
    EXPECT_EQ(info->name, "nobody");
    EXPECT_EQ(info->uid, nobody->uid);
    EXPECT_EQ(info->gid, nobody->gid);
    EXPECT_EQ(info->home, ::getpwnam("nobody")->pw_dir);
    EXPECT_TRUE(info->has_passwd_entry);
    EXPECT_EQ(SortedGroups(info->groups), nobody->groups);
  }
}

// A uid with no passwd entry (e.g. a scratch image) gets the same number as its group.
uid_t UnusedUid() {
  for (uid_t uid = 4'000'000; uid < 4'000'100; ++uid) {
    if (::getpwuid(uid) == nullptr && ::getgrgid(uid) == nullptr) return uid;
  }
  return 0;
}

TEST(PrivilegesTest, NumericUidWithoutEntryUsesItAsGroup) {
  uid_t uid = UnusedUid();
  if (uid == 0) GTEST_SKIP() << "no unused uid in 4000000..4000099";
  absl::StatusOr<UserInfo> info = LookupUser(absl::StrCat(uid));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->uid, uid);
  EXPECT_EQ(info->gid, uid);
  EXPECT_EQ(info->groups, std::vector<gid_t>{uid});
  EXPECT_FALSE(info->has_passwd_entry);
  EXPECT_EQ(info->home, "");
}

TEST(PrivilegesTest, DropToNobodyKeepsOnlyBindService) {
  SKIP_UNLESS_ROOT_AND_NOBODY(nobody);
  const bool have_shadow = ::access("/etc/shadow", F_OK) == 0;
  std::string failure = RunInChild([&]() -> std::string {
    absl::Status status = DropPrivileges("nobody");
    if (!status.ok()) return absl::StrCat("DropPrivileges: ", status.ToString());
    if (std::string ids = CheckIds(nobody.uid, nobody.gid); !ids.empty()) return ids;
    std::vector<gid_t> groups = CurrentGroups();
    if (groups != nobody.groups) {
      return absl::StrCat("groups ", absl::StrJoin(groups, ","), ", want ",
                          absl::StrJoin(nobody.groups, ","));
    }
    if (EffectiveCapabilities() != kBindCap || PermittedCapabilities() != kBindCap) {
      return absl::StrCat("capabilities effective=", absl::Hex(EffectiveCapabilities()),
                          " permitted=", absl::Hex(PermittedCapabilities()));
    }
    if (ProcCapability("CapEff") != kBindCap || ProcCapability("CapPrm") != kBindCap ||
        ProcCapability("CapInh") != 0 || ProcCapability("CapAmb") != 0) {
      return absl::StrCat("/proc says CapEff=", absl::Hex(ProcCapability("CapEff")),
                          " CapPrm=", absl::Hex(ProcCapability("CapPrm")));
    }
    if (::prctl(PR_GET_NO_NEW_PRIVS, 0L, 0L, 0L, 0L) != 1) return "no_new_privs is not set";
    if (::prctl(PR_GET_KEEPCAPS, 0L, 0L, 0L, 0L) != 0) return "keepcaps is still set";
    int port = 0;
    if (int err = BindLowPort(&port); err != 0) {
      return absl::StrCat("bind 127.0.0.1:", port, " after the drop: ", ErrName(err));
    }
    // A thread created after the drop inherits the capability.
    int thread_err = -1;
    int thread_port = 0;
    std::thread([&] { thread_err = BindLowPort(&thread_port); }).join();
    if (thread_err != 0) {
      return absl::StrCat("bind 127.0.0.1:", thread_port, " in a new thread: ",
                          ErrName(thread_err));
    }
    if (have_shadow) {
      int fd = ::open("/etc/shadow", O_RDONLY | O_CLOEXEC);
      int err = errno;
      if (fd >= 0) {
        ::close(fd);
        return "/etc/shadow opened after the drop";
      }
      if (err != EACCES) return absl::StrCat("open /etc/shadow: ", ErrName(err), ", want EACCES");
    }
    // Root cannot be taken back.
    if (::setresuid(0, 0, 0) == 0) return "setresuid(0) succeeded after the drop";
    if (errno != EPERM) return absl::StrCat("setresuid(0): ", ErrName(errno), ", want EPERM");
    // The process can still read its own /proc entries (metrics count /proc/self/fd).
    Fd fd_dir(::open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd_dir) return absl::StrCat("open /proc/self/fd: ", ErrName(errno));
    return "";
  });
  EXPECT_EQ(failure, "");
}

TEST(PrivilegesTest, ThreadStartedBeforeTheDropHasNewUidButNoCapabilities) {
  SKIP_UNLESS_ROOT_AND_NOBODY(nobody);
  std::string failure = RunInChild([&]() -> std::string {
    int go[2];
    if (::pipe2(go, O_CLOEXEC) != 0) return absl::StrCat("pipe2: ", ErrName(errno));
    Fd go_read(go[0]);
    Fd go_write(go[1]);
    uid_t thread_uid = 0;
    uint64_t thread_effective = ~uint64_t{0};
    uint64_t thread_permitted = ~uint64_t{0};
    int thread_err = -1;
    int thread_port = 0;
    std::string thread_failure;
    std::thread old_thread([&] {
      // Waits (bounded) until the main thread has dropped privileges.
      pollfd pfd{go_read.get(), POLLIN, 0};
      int ready;
      do {
        ready = ::poll(&pfd, 1, 10'000);
      } while (ready < 0 && errno == EINTR);
      if (ready != 1) {
        thread_failure = "the main thread never signalled the drop";
        return;
      }
      thread_uid = ::geteuid();
      thread_effective = EffectiveCapabilities();
      thread_permitted = PermittedCapabilities();
      thread_err = BindLowPort(&thread_port);
    });
    absl::Status status = DropPrivileges("nobody");
    char byte = 1;
    ssize_t written = ::write(go_write.get(), &byte, 1);
    old_thread.join();
    if (!status.ok()) return absl::StrCat("DropPrivileges: ", status.ToString());
    if (written != 1) return "could not signal the thread";
    if (!thread_failure.empty()) return thread_failure;
    if (thread_uid != nobody.uid) return absl::StrCat("old thread's uid is ", thread_uid);
    if (thread_effective != 0 || thread_permitted != 0) {
      return absl::StrCat("old thread's capabilities: effective=", absl::Hex(thread_effective),
                          " permitted=", absl::Hex(thread_permitted), ", want none");
    }
    if (thread_err != EACCES) {
      return absl::StrCat("old thread's bind 127.0.0.1:", thread_port, ": ", ErrName(thread_err),
                          ", want EACCES");
    }
    // The thread that dropped still binds low ports.
    int port = 0;
    if (int err = BindLowPort(&port); err != 0) {
      return absl::StrCat("main thread's bind 127.0.0.1:", port, ": ", ErrName(err));
    }
    return "";
  });
  EXPECT_EQ(failure, "");
}

TEST(PrivilegesTest, NumericUserDrops) {
  SKIP_UNLESS_ROOT_AND_NOBODY(nobody);
  std::string failure = RunInChild([&]() -> std::string {
    absl::Status status = DropPrivileges(absl::StrCat(nobody.uid));
    if (!status.ok()) return absl::StrCat("DropPrivileges: ", status.ToString());
    if (std::string ids = CheckIds(nobody.uid, nobody.gid); !ids.empty()) return ids;
    if (CurrentGroups() != nobody.groups) return "groups are not nobody's";
    if (EffectiveCapabilities() != kBindCap) {
      return absl::StrCat("effective capabilities ", absl::Hex(EffectiveCapabilities()));
    }
    return "";
  });
  EXPECT_EQ(failure, "");
}

TEST(PrivilegesTest, NumericUidWithoutEntryDropsToItsOwnGroup) {
  SKIP_UNLESS_ROOT_AND_NOBODY(nobody);
  uid_t uid = UnusedUid();
  if (uid == 0) GTEST_SKIP() << "no unused uid in 4000000..4000099";
  std::string failure = RunInChild([&]() -> std::string {
    absl::Status status = DropPrivileges(absl::StrCat(uid));
    if (!status.ok()) return absl::StrCat("DropPrivileges: ", status.ToString());
    if (std::string ids = CheckIds(uid, uid); !ids.empty()) return ids;
    if (CurrentGroups() != std::vector<gid_t>{uid}) {
      return absl::StrCat("groups ", absl::StrJoin(CurrentGroups(), ","), ", want ", uid);
    }
    return "";
  });
  EXPECT_EQ(failure, "");
}

TEST(PrivilegesTest, WithoutRootFailsWithFailedPrecondition) {
  SKIP_UNLESS_ROOT_AND_NOBODY(nobody);
  std::string failure = RunInChild([&]() -> std::string {
    // Become nobody the plain way: no capability survives.
    if (::setresgid(nobody.gid, nobody.gid, nobody.gid) != 0 ||
        ::setresuid(nobody.uid, nobody.uid, nobody.uid) != 0) {
      return absl::StrCat("setres[ug]id: ", ErrName(errno));
    }
    absl::Status status = DropPrivileges("nobody");
    if (status.code() != absl::StatusCode::kFailedPrecondition) {
      return absl::StrCat("status ", status.ToString(), ", want FAILED_PRECONDITION");
    }
    std::string want = absl::StrCat("--user nobody needs root: running as uid ", nobody.uid);
    if (status.message() != want) {
      return absl::StrCat("message \"", status.message(), "\", want \"", want, "\"");
    }
    return "";
  });
  EXPECT_EQ(failure, "");
}

// Root that lacks CAP_NET_BIND_SERVICE (a container may remove it) still
// drops; low ports then fail, which BindPermissionHint explains.
TEST(PrivilegesTest, DropWithoutBindServiceKeepsNoCapability) {
  SKIP_UNLESS_ROOT_AND_NOBODY(nobody);
  std::string failure = RunInChild([&]() -> std::string {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
    if (::syscall(SYS_capget, &header, data) != 0) return "capget failed";
    data[CAP_TO_INDEX(CAP_NET_BIND_SERVICE)].permitted &= ~CAP_TO_MASK(CAP_NET_BIND_SERVICE);
    data[CAP_TO_INDEX(CAP_NET_BIND_SERVICE)].effective &= ~CAP_TO_MASK(CAP_NET_BIND_SERVICE);
    if (::syscall(SYS_capset, &header, data) != 0) {
      return absl::StrCat("capset: ", ErrName(errno));
    }
    absl::Status status = DropPrivileges("nobody");
    if (!status.ok()) return absl::StrCat("DropPrivileges: ", status.ToString());
    if (std::string ids = CheckIds(nobody.uid, nobody.gid); !ids.empty()) return ids;
    if (EffectiveCapabilities() != 0 || PermittedCapabilities() != 0) {
      return absl::StrCat("capabilities effective=", absl::Hex(EffectiveCapabilities()),
                          " permitted=", absl::Hex(PermittedCapabilities()), ", want none");
    }
    int port = 0;
    if (int err = BindLowPort(&port); err != EACCES) {
      return absl::StrCat("bind 127.0.0.1:", port, ": ", ErrName(err), ", want EACCES");
    }
    return "";
  });
  EXPECT_EQ(failure, "");
}

TEST(PrivilegesTest, EffectiveCapabilitiesMatchProc) {
  EXPECT_EQ(EffectiveCapabilities(), ProcCapability("CapEff"));
  EXPECT_EQ(PermittedCapabilities(), ProcCapability("CapPrm"));
}

TEST(PrivilegesTest, BindPermissionHintOnlyBelowTheUnprivilegedStart) {
  const std::string hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)";
  EXPECT_EQ(BindPermissionHint(80, 1024), hint);
  EXPECT_EQ(BindPermissionHint(1, 1024), hint);
  EXPECT_EQ(BindPermissionHint(1023, 1024), hint);
  EXPECT_EQ(BindPermissionHint(1024, 1024), "");
  EXPECT_EQ(BindPermissionHint(8080, 1024), "");
  EXPECT_EQ(BindPermissionHint(0, 1024), "");
  EXPECT_EQ(BindPermissionHint(-1, 1024), "");
  EXPECT_EQ(BindPermissionHint(80, 0), "");
  EXPECT_EQ(BindPermissionHint(443, 500),
            " (ports below 500 need root or CAP_NET_BIND_SERVICE)");
}

TEST(PrivilegesTest, UnprivilegedPortStartReadsProc) {
  std::ifstream in("/proc/sys/net/ipv4/ip_unprivileged_port_start");
  int want = 1024;
  if (!(in >> want)) want = 1024;
  EXPECT_EQ(UnprivilegedPortStart(), want);
  EXPECT_EQ(BindPermissionHint(80), BindPermissionHint(80, want));
}

}  // namespace
}  // namespace ferry::base
