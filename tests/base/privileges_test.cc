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
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
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

// A directory holding a passwd and a group file for LookupUser(user, passwd,
// group), removed with its contents when the test ends.
class AccountFiles {
 public:
  AccountFiles() {
    const char* tmp = std::getenv("TMPDIR");
    std::string path = absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp",
                                    "/ferry-accounts-XXXXXX");
    if (::mkdtemp(path.data()) != nullptr) dir_ = path;
  }
  ~AccountFiles() {
    for (auto it = created_.rbegin(); it != created_.rend(); ++it) ::remove(it->c_str());
    if (!dir_.empty()) ::rmdir(dir_.c_str());
  }
  AccountFiles(const AccountFiles&) = delete;
  AccountFiles& operator=(const AccountFiles&) = delete;

  bool ok() const { return !dir_.empty(); }
  std::string Path(absl::string_view name) const { return absl::StrCat(dir_, "/", name); }
  std::string passwd() const { return Path("passwd"); }
  std::string group() const { return Path("group"); }

  // Writes `content` to Path(name), or removes it for nullopt. False on failure.
  bool Set(absl::string_view name, const std::optional<std::string>& content) {
    std::string path = Path(name);
    Track(path);
    if (!content) return ::unlink(path.c_str()) == 0 || errno == ENOENT;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(content->data(), static_cast<std::streamsize>(content->size()));
    out.close();
    return out.good();
  }
  // A file of `size` bytes, all holes: big without costing the disk anything.
  bool SetSparse(absl::string_view name, off_t size) {
    std::string path = Path(name);
    Track(path);
    Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    return fd && ::ftruncate(fd.get(), size) == 0;
  }
  // Remembers `path` (inside the directory) for removal at the end.
  void Track(const std::string& path) {
    if (std::find(created_.begin(), created_.end(), path) == created_.end()) {
      created_.push_back(path);
    }
  }

  // Replaces "$passwd" and "$group" in `text` with the two paths.
  std::string Expand(absl::string_view text) const {
    return absl::StrReplaceAll(text, {{"$passwd", passwd()}, {"$group", group()}});
  }

 private:
  std::string dir_;
  std::vector<std::string> created_;
};

// What a lookup should give: an error (code and exact message) or the user.
struct Want {
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string message;  // "$passwd" and "$group" stand for the files' paths
  UserInfo info;
};

Want Found(std::string name, uid_t uid, gid_t gid, std::string home, std::vector<gid_t> groups) {
  Want want;
  want.info.name = std::move(name);
  want.info.uid = uid;
  want.info.gid = gid;
  want.info.home = std::move(home);
  want.info.groups = std::move(groups);
  want.info.has_passwd_entry = true;
  return want;
}

Want NoEntry(uid_t uid) {
  Want want;
  want.info.name = absl::StrCat(uid);
  want.info.uid = uid;
  want.info.gid = uid;
  want.info.groups = {uid};
  want.info.has_passwd_entry = false;
  return want;
}

Want Error(absl::StatusCode code, std::string message) {
  Want want;
  want.code = code;
  want.message = std::move(message);
  return want;
}

struct LookupCase {
  std::string test;
  std::optional<std::string> passwd;  // nullopt: no such file
  std::optional<std::string> group;
  std::string user;
  Want want;
};

// Checks LookupUser(c.user) against c.want with the case's files; "" or what differs.
std::string CheckLookup(AccountFiles& files, const LookupCase& c) {
  if (!files.Set("passwd", c.passwd) || !files.Set("group", c.group)) {
    return "could not write the account files";
  }
  absl::StatusOr<UserInfo> got = LookupUser(c.user, files.passwd(), files.group());
  if (c.want.code != absl::StatusCode::kOk) {
    std::string message = files.Expand(c.want.message);
    if (got.status().code() != c.want.code || got.status().message() != message) {
      return absl::StrCat("got ", got.ok() ? "a user" : got.status().ToString(), ", want ",
                          absl::StatusCodeToString(c.want.code), ": ", message);
    }
    return "";
  }
  if (!got.ok()) return absl::StrCat("got ", got.status().ToString(), ", want a user");
  const UserInfo& want = c.want.info;
  std::string diff;
  if (got->name != want.name) absl::StrAppend(&diff, " name ", got->name, " want ", want.name);
  if (got->uid != want.uid) absl::StrAppend(&diff, " uid ", got->uid, " want ", want.uid);
  if (got->gid != want.gid) absl::StrAppend(&diff, " gid ", got->gid, " want ", want.gid);
  if (got->home != want.home) absl::StrAppend(&diff, " home ", got->home, " want ", want.home);
  if (got->groups != want.groups) {
    absl::StrAppend(&diff, " groups ", absl::StrJoin(got->groups, ","), " want ",
                    absl::StrJoin(want.groups, ","));
  }
  if (got->has_passwd_entry != want.has_passwd_entry) {
    absl::StrAppend(&diff, " has_passwd_entry ", got->has_passwd_entry);
  }
  return diff;
}

const char kPasswd[] =
    "root:x:0:0:root:/root:/bin/bash\n"
    "alice:x:1001:1001:Alice A,,,:/home/alice:/bin/bash\n"
    "bob:x:1002:100:Bob:/home/bob:/usr/sbin/nologin\n"
    "1500:x:2000:2000:an all-digit name:/home/1500:/bin/sh\n"
    "numeric:x:1500:1500::/nonexistent:/bin/sh\n";
const char kGroup[] =
    "root:x:0:\n"
    "alice:x:1001:\n"
    "users:x:100:alice,bob\n"
    "staff:x:50:bob,alice,carol\n"
    "wheel:x:10:alice\n"
    "audio:x:29:bob\n";
const std::vector<gid_t> kAliceGroups = {1001, 100, 50, 10};

TEST(LookupUserTest, ReadsPasswdAndGroup) {
  AccountFiles files;
  ASSERT_TRUE(files.ok());
  const LookupCase cases[] = {
      {"by name", kPasswd, kGroup, "alice",
       Found("alice", 1001, 1001, "/home/alice", kAliceGroups)},
      {"by uid", kPasswd, kGroup, "1001", Found("alice", 1001, 1001, "/home/alice", kAliceGroups)},
      // The primary group 100 also lists bob: it is there once, first.
      {"by uid, groups by the entry's name", kPasswd, kGroup, "1002",
       Found("bob", 1002, 100, "/home/bob", {100, 50, 29})},
      {"an all-digit name wins over a uid", kPasswd, kGroup, "1500",
       Found("1500", 2000, 2000, "/home/1500", {2000})},
      {"an all-digit name wins over an earlier uid",
       "numeric:x:1500:1500::/nonexistent:/bin/sh\n1500:x:2000:2000::/home/1500:/bin/sh\n",
       kGroup, "1500", Found("1500", 2000, 2000, "/home/1500", {2000})},
      {"the uid of an all-digit name", kPasswd, kGroup, "2000",
       Found("1500", 2000, 2000, "/home/1500", {2000})},
      {"numeric without entry: own group only", kPasswd,
       absl::StrCat(kGroup, "extra:x:77:4000\n"), "4000", NoEntry(4000)},
      {"unknown name", kPasswd, kGroup, "carol",
       Error(absl::StatusCode::kNotFound, "--user carol: no such user")},
      {"uid -1 without entry", kPasswd, kGroup, "4294967295",
       Error(absl::StatusCode::kInvalidArgument,
             "--user 4294967295: uid out of range (0 to 4294967294)")},
      {"empty passwd file", "", kGroup, "alice",
       Error(absl::StatusCode::kNotFound, "--user alice: no such user")},
      {"no passwd file: names unknown", std::nullopt, kGroup, "alice",
       Error(absl::StatusCode::kNotFound, "--user alice: no such user")},
      {"no passwd file: uids accepted", std::nullopt, kGroup, "1001", NoEntry(1001)},
      {"no group file", kPasswd, std::nullopt, "alice",
       Found("alice", 1001, 1001, "/home/alice", {1001})},
      {"the first entry wins", absl::StrCat(kPasswd, "alice:x:3000:3000::/b:/bin/sh\n"), kGroup,
       "alice", Found("alice", 1001, 1001, "/home/alice", kAliceGroups)},
      {"the first entry with the uid wins",
       absl::StrCat(kPasswd, "zed:x:1001:7::/z:/bin/sh\n"), kGroup, "1001",
       Found("alice", 1001, 1001, "/home/alice", kAliceGroups)},
      {"a group listing the user twice",
       kPasswd, "dup:x:70:alice,alice\ndup2:x:71:bob,alice,bob,alice\n", "alice",
       Found("alice", 1001, 1001, "/home/alice", {1001, 70, 71})},
      {"two groups with one gid", kPasswd, "a:x:72:alice\nb:x:72:bob,alice\n", "alice",
       Found("alice", 1001, 1001, "/home/alice", {1001, 72})},
      {"the primary group listing the user", kPasswd, "alice:x:1001:alice\n", "alice",
       Found("alice", 1001, 1001, "/home/alice", {1001})},
      {"groups without the user as an exact member", kPasswd,
       "empty:x:73:\ncommas:x:74:,,,\nnear:x:75:alic,alicee, alice,ALICE,alice \n"
       "trailing:x:76:bob,\n",
       "alice", Found("alice", 1001, 1001, "/home/alice", {1001})},
      {"empty members around the user", kPasswd, "t:x:77:,bob,,alice,\n", "alice",
       Found("alice", 1001, 1001, "/home/alice", {1001, 77})},
      {"CRLF line ends", "alice:x:1001:1001::/home/alice:/bin/sh\r\n", "g:x:80:bob,alice\r\n",
       "alice", Found("alice", 1001, 1001, "/home/alice", {1001, 80})},
      {"leading blanks and no final newline", " \talice:x:1001:1001::/home/alice:/bin/sh",
       "  g:x:81:alice", "alice", Found("alice", 1001, 1001, "/home/alice", {1001, 81})},
  };
  for (const LookupCase& c : cases) EXPECT_EQ(CheckLookup(files, c), "") << c.test;
}

TEST(LookupUserTest, SkipsMalformedCommentAndCompatLines) {
  AccountFiles files;
  ASSERT_TRUE(files.ok());
  const std::string passwd = absl::StrCat(
      "garbage\n"
      ":x:5:5:empty name:/:/bin/sh\n"
      "short:x:1:2\n"
      "long:x:1:2:gecos:/home:/bin/sh:extra\n"
      "neg:x:-1:1::/:/bin/sh\n"
      "minus1:x:4294967295:1::/:/bin/sh\n"
      "big:x:99999999999999999999:1::/:/bin/sh\n"
      "hex:x:0x10:1::/:/bin/sh\n"
      "space:x: 12:1::/:/bin/sh\n"
      "emptyuid:x::1::/:/bin/sh\n"
      "badgid:x:12:g::/:/bin/sh\n",
      std::string("nul:x:12:12:\0:/:/bin/sh\n", 24),
      "alice:x:1:1\n"
      "alice:x:1:one::/:/bin/sh\n"
      "# alice:x:0:0:a comment:/root:/bin/sh\n"
      "\n"
      "   \t\n"
      "+alice:x:0:0:::\n"
      "-bob\n"
      "+@admins\n"
      "+\n"
      "+::::::\n"
      "::::::\n",
      kPasswd);
  const std::string group = absl::StrCat(
      "bad:x:notanumber:alice\n"
      "three:x:60\n"
      "five:x:61:alice:extra\n"
      "neg:x:-1:alice\n"
      "max:x:4294967295:alice\n"
      ":x:62:alice\n"
      "+:::alice\n"
      "+wheel:x:63:alice\n"
      "-wheel:x:64:alice\n"
      "# c:x:65:alice\n",
      std::string("nu\0l:x:66:alice\n", 16), "   \n", kGroup);
  const LookupCase cases[] = {
      {"by name", passwd, group, "alice",
       Found("alice", 1001, 1001, "/home/alice", kAliceGroups)},
      {"by uid", passwd, group, "1001", Found("alice", 1001, 1001, "/home/alice", kAliceGroups)},
      // Malformed lines are no entries: their uids are free.
      {"a uid only a malformed line has", passwd, group, "12", NoEntry(12)},
      {"a name only a comment has", "# carol:x:1:1::/:/bin/sh\n", kGroup, "carol",
       Error(absl::StatusCode::kNotFound, "--user carol: no such user")},
      {"a name only a compat line has", "+carol:x:1:1::/:/bin/sh\n+carol\n", kGroup, "+carol",
       Error(absl::StatusCode::kNotFound, "--user +carol: no such user")},
      // A malformed line that names the user says so.
      {"a bad uid", passwd, group, "hex",
       Error(absl::StatusCode::kNotFound,
             "--user hex: no such user (line 8 of $passwd names it but is malformed: "
             "uid \"0x10\" is not a valid uid)")},
      // uid 4294967295 would mean "unchanged" to setresuid: never a user.
      {"uid 4294967295", passwd, group, "minus1",
       Error(absl::StatusCode::kNotFound,
             "--user minus1: no such user (line 6 of $passwd names it but is malformed: "
             "uid \"4294967295\" is not a valid uid)")},
      {"a bad gid", passwd, group, "badgid",
       Error(absl::StatusCode::kNotFound,
             "--user badgid: no such user (line 11 of $passwd names it but is malformed: "
             "gid \"g\" is not a valid gid)")},
      {"too few fields", passwd, group, "short",
       Error(absl::StatusCode::kNotFound,
             "--user short: no such user (line 3 of $passwd names it but is malformed: "
             "4 fields, not 7)")},
      {"too many fields", passwd, group, "long",
       Error(absl::StatusCode::kNotFound,
             "--user long: no such user (line 4 of $passwd names it but is malformed: "
             "8 fields, not 7)")},
      {"the first of two malformed lines",
       "carol:x:1\n#carol:x:1:1::/:/bin/sh\ncarol:x:a:1::/:/bin/sh\n", kGroup, "carol",
       Error(absl::StatusCode::kNotFound,
             "--user carol: no such user (line 1 of $passwd names it but is malformed: "
             "3 fields, not 7)")},
      {"a NUL byte", passwd, group, "nul",
       Error(absl::StatusCode::kNotFound,
             "--user nul: no such user (line 12 of $passwd names it but is malformed: "
             "contains a NUL byte)")},
  };
  for (const LookupCase& c : cases) EXPECT_EQ(CheckLookup(files, c), "") << c.test;
}

TEST(LookupUserTest, LongLines) {
  AccountFiles files;
  ASSERT_TRUE(files.ok());
  const std::string huge(2 << 20, 'g');        // over the 1 MiB line limit
  const std::string large(512 << 10, 'g');     // under it
  std::string many_members;                    // ~690 KB, the user last
  for (int i = 0; i < 100'000; ++i) absl::StrAppend(&many_members, "u", i, ",");
  many_members += "alice";
  const std::string alice = "alice:x:1001:1001::/home/alice:/bin/sh\n";
  const LookupCase cases[] = {
      {"a huge line is skipped", absl::StrCat("alice:x:1:1:", huge, ":/h:/bin/sh\n", alice),
       kGroup, "alice", Found("alice", 1001, 1001, "/home/alice", kAliceGroups)},
      {"a huge line names the user", absl::StrCat("alice:x:1:1:", huge, ":/h:/bin/sh\n"), kGroup,
       "alice",
       Error(absl::StatusCode::kNotFound,
             "--user alice: no such user (line 1 of $passwd names it but is malformed: "
             "longer than 1 MiB)")},
      {"a huge line of separators", absl::StrCat(std::string(2 << 20, ':'), "\n", alice), kGroup,
       "alice", Found("alice", 1001, 1001, "/home/alice", kAliceGroups)},
      {"a line of many separators", absl::StrCat(std::string(512 << 10, ':'), "\n", alice),
       kGroup, "alice", Found("alice", 1001, 1001, "/home/alice", kAliceGroups)},
      {"a large gecos", absl::StrCat("alice:x:1001:1001:", large, ":/home/alice:/bin/sh\n"),
       kGroup, "alice", Found("alice", 1001, 1001, "/home/alice", kAliceGroups)},
      {"a group with many members", alice, absl::StrCat("big:x:90:", many_members, "\n"), "alice",
       Found("alice", 1001, 1001, "/home/alice", {1001, 90})},
      {"a huge group line is skipped", alice,
       absl::StrCat("huge:x:91:", huge, ",alice\nsmall:x:92:alice\n"), "alice",
       Found("alice", 1001, 1001, "/home/alice", {1001, 92})},
  };
  for (const LookupCase& c : cases) EXPECT_EQ(CheckLookup(files, c), "") << c.test;
}

TEST(LookupUserTest, FilesUpTo16MiBAreRead) {
  AccountFiles files;
  ASSERT_TRUE(files.ok());
  // Exactly 16 MiB: comment lines of 1000 bytes, then the entries.
  const size_t size = size_t{16} << 20;
  std::string passwd = kPasswd;
  std::string filler = absl::StrCat("#", std::string(998, 'c'), "\n");
  std::string content;
  content.reserve(size);
  while (content.size() + filler.size() + passwd.size() <= size) content += filler;
  if (size_t pad = size - content.size() - passwd.size(); pad > 0) {
    content += std::string(pad - 1, '#') + "\n";
  }
  content += passwd;
  ASSERT_EQ(content.size(), size);
  LookupCase c{"16 MiB", content, kGroup, "alice",
               Found("alice", 1001, 1001, "/home/alice", kAliceGroups)};
  EXPECT_EQ(CheckLookup(files, c), "");
}

TEST(LookupUserTest, FilesOver16MiBFail) {
  AccountFiles files;
  ASSERT_TRUE(files.ok());
  const off_t too_big = (off_t{16} << 20) + 1;
  ASSERT_TRUE(files.SetSparse("passwd", too_big));
  ASSERT_TRUE(files.Set("group", std::string(kGroup)));
  absl::StatusOr<UserInfo> info = LookupUser("alice", files.passwd(), files.group());
  EXPECT_EQ(info.status().code(), absl::StatusCode::kInternal) << info.status();
  EXPECT_EQ(info.status().message(), files.Expand("--user alice: $passwd is larger than 16 MiB"));

  ASSERT_TRUE(files.Set("passwd", std::string(kPasswd)));
  ASSERT_TRUE(files.SetSparse("group", too_big));
  info = LookupUser("alice", files.passwd(), files.group());
  EXPECT_EQ(info.status().code(), absl::StatusCode::kInternal) << info.status();
  EXPECT_EQ(info.status().message(), files.Expand("--user alice: $group is larger than 16 MiB"));
}

TEST(LookupUserTest, UnreadableFilesFail) {
  AccountFiles files;
  ASSERT_TRUE(files.ok());
  ASSERT_TRUE(files.Set("passwd", std::string(kPasswd)));
  ASSERT_TRUE(files.Set("group", std::string(kGroup)));
  // A path through a regular file: ENOTDIR, even for root.
  const std::string through_file = files.Path("passwd/x");
  absl::StatusOr<UserInfo> info = LookupUser("alice", through_file, files.group());
  EXPECT_EQ(info.status().code(), absl::StatusCode::kInternal) << info.status();
  EXPECT_EQ(info.status().message(),
            absl::StrCat("--user alice: open ", through_file, ": Not a directory"));
  info = LookupUser("alice", files.passwd(), files.Path("group/x"));
  EXPECT_EQ(info.status().message(),
            absl::StrCat("--user alice: open ", files.Path("group/x"), ": Not a directory"));
  // A directory.
  const std::string dir = files.Path("dir");
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0) << std::strerror(errno);
  files.Track(dir);
  info = LookupUser("1001", dir, files.group());
  EXPECT_EQ(info.status().code(), absl::StatusCode::kInternal) << info.status();
  EXPECT_EQ(info.status().message(), absl::StrCat("--user 1001: ", dir, " is not a regular file"));
  info = LookupUser("alice", files.passwd(), dir);
  EXPECT_EQ(info.status().message(), absl::StrCat("--user alice: ", dir, " is not a regular file"));
}

// A FIFO in the file's place is refused at once, not waited on for a writer.
TEST(LookupUserTest, FifoIsRefusedWithoutBlocking) {
  AccountFiles files;
  ASSERT_TRUE(files.ok());
  const std::string fifo = files.Path("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  files.Track(fifo);
  std::future<absl::Status> lookup = std::async(std::launch::async, [&] {
    return LookupUser("alice", fifo, files.group()).status();
  });
  if (lookup.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    // Open it for writing so the blocked open returns and the thread ends.
    Fd writer(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    lookup.wait();
    FAIL() << "LookupUser blocked on a FIFO";
  }
  absl::Status status = lookup.get();
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status;
  EXPECT_EQ(status.message(), absl::StrCat("--user alice: ", fifo, " is not a regular file"));
}

TEST(LookupUserTest, MoreThan65536GroupsFail) {
  AccountFiles files;
  ASSERT_TRUE(files.ok());
  std::string group;
  for (int gid = 1; gid <= 65536; ++gid) absl::StrAppend(&group, "g", gid, ":x:", gid, ":alice\n");
  // 65535 groups besides the primary one: exactly the limit.
  ASSERT_TRUE(files.Set("passwd", std::string(kPasswd)) && files.Set("group", group));
  absl::StatusOr<UserInfo> info = LookupUser("alice", files.passwd(), files.group());
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->groups.size(), 65536u);  // gid 1001 is both primary and listed
  absl::StrAppend(&group, "g65537:x:65537:alice\ng65538:x:65538:alice\n");
  ASSERT_TRUE(files.Set("group", group));
  info = LookupUser("alice", files.passwd(), files.group());
  EXPECT_EQ(info.status().code(), absl::StatusCode::kInternal) << info.status();
  EXPECT_EQ(info.status().message(),
            files.Expand("--user alice: $group lists the user in more than 65536 groups"));
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
