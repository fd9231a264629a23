#include "pkg/base/privileges.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "pkg/base/fd.h"
#include "pkg/base/log.h"
#include "pkg/base/status.h"

namespace ferry::base {
namespace {

constexpr uint64_t kBindCap = uint64_t{1} << CAP_NET_BIND_SERVICE;
// NGROUPS_MAX of current kernels.
constexpr int kMaxGroups = 65536;

std::string Errno(int err) { return std::strerror(err); }

// PermissionDenied for EPERM/EACCES (the kernel or a policy said no), else Internal.
absl::Status CallFailed(absl::string_view user, absl::string_view call, int err) {
  std::string message = absl::StrCat("--user ", user, ": ", call, ": ", Errno(err));
  if (err == EPERM || err == EACCES) return absl::PermissionDeniedError(message);
  return absl::InternalError(message);
}

struct CapSets {
  uint64_t effective = 0;
  uint64_t permitted = 0;
  uint64_t inheritable = 0;
};

// capget/capset on the calling thread (pid 0), version 3: two 32-bit words per set.
bool GetCaps(CapSets* caps) {
  __user_cap_header_struct header{};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  header.pid = 0;
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (::syscall(SYS_capget, &header, data) != 0) return false;
  caps->effective = data[0].effective | (uint64_t{data[1].effective} << 32);
  caps->permitted = data[0].permitted | (uint64_t{data[1].permitted} << 32);
  caps->inheritable = data[0].inheritable | (uint64_t{data[1].inheritable} << 32);
  return true;
}

int SetCaps(const CapSets& caps) {
  __user_cap_header_struct header{};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  header.pid = 0;
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  data[0].effective = static_cast<uint32_t>(caps.effective);
  data[1].effective = static_cast<uint32_t>(caps.effective >> 32);
  data[0].permitted = static_cast<uint32_t>(caps.permitted);
  data[1].permitted = static_cast<uint32_t>(caps.permitted >> 32);
  data[0].inheritable = static_cast<uint32_t>(caps.inheritable);
  data[1].inheritable = static_cast<uint32_t>(caps.inheritable >> 32);
  return ::syscall(SYS_capset, &header, data) == 0 ? 0 : errno;
}

// The account files, and what LookupUser() accepts from them.
constexpr char kPasswdPath[] = "/etc/passwd";
constexpr char kGroupPath[] = "/etc/group";
// Far above any real account file; a bound on what a bad file costs.
constexpr size_t kMaxAccountFileSize = size_t{16} << 20;
constexpr size_t kMaxAccountLine = size_t{1} << 20;
constexpr size_t kPasswdFields = 7;  // name:password:uid:gid:gecos:home:shell
constexpr size_t kGroupFields = 4;   // name:password:gid:member,member,...

absl::Status ReadFailed(absl::string_view user, absl::string_view call, const std::string& path,
                        int err) {
  return absl::InternalError(
      absl::StrCat("--user ", user, ": ", call, " ", path, ": ", Errno(err)));
}

// Reads all of the account file `path` into *content. A missing file is an
// empty one (a scratch image has no /etc/passwd); anything else that keeps it
// from being read whole fails the lookup rather than risk a wrong answer.
absl::Status ReadAccountFile(absl::string_view user, const std::string& path,
                             std::string* content) {
  content->clear();
  // O_NONBLOCK: opening a FIFO put in the file's place must not hang; it is
  // refused below, and it has no effect on a regular file.
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd) {
    if (errno == ENOENT) return absl::OkStatus();
    return ReadFailed(user, "open", path, errno);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ReadFailed(user, "fstat", path, errno);
  if (!S_ISREG(st.st_mode)) {
    return absl::InternalError(absl::StrCat("--user ", user, ": ", path, " is not a regular file"));
  }
  auto too_large = [&] {
    return absl::InternalError(absl::StrCat("--user ", user, ": ", path, " is larger than ",
                                            kMaxAccountFileSize >> 20, " MiB"));
  };
  if (static_cast<uint64_t>(st.st_size) > kMaxAccountFileSize) return too_large();
  // The size may change while reading (an edit in progress): read to EOF,
  // still bounded.
  char buffer[64 * 1024];
  while (true) {
    ssize_t n = ::read(fd.get(), buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ReadFailed(user, "read", path, errno);
    if (n == 0) return absl::OkStatus();
    if (content->size() + static_cast<size_t>(n) > kMaxAccountFileSize) return too_large();
    content->append(buffer, static_cast<size_t>(n));
  }
}

// A uid or gid field: decimal digits only, below 4294967295 ((uid_t)-1 tells
// setresuid to leave the id unchanged, so it is no id).
bool ParseId(absl::string_view text, uint32_t* id) {
  if (text.empty()) return false;
  for (char c : text) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  uint64_t value = 0;
  if (!absl::SimpleAtoi(text, &value) || value >= std::numeric_limits<uint32_t>::max()) {
    return false;
  }
  *id = static_cast<uint32_t>(value);
  return true;
}

// One line of an account file, split into its `want` ':'-separated fields.
enum class LineKind { kEntry, kSkip, kMalformed };
struct Line {
  LineKind kind = LineKind::kSkip;
  std::vector<absl::string_view> fields;  // kEntry: exactly `want` of them
  absl::string_view name;                 // text before the first ':' (kMalformed too)
  std::string problem;                    // kMalformed: what is wrong
};

Line SplitLine(absl::string_view text, size_t want) {
  Line line;
  if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
  // glibc skips leading blanks too; a line of only blanks is a blank line.
  text = absl::StripLeadingAsciiWhitespace(text);
  if (text.empty() || text[0] == '#') return line;
  // NIS compat entries (+user, -user, +@netgroup, a lone +) pull accounts
  // from NIS, which is not consulted.
  if (text[0] == '+' || text[0] == '-') return line;
  line.kind = LineKind::kMalformed;
  line.name = text.substr(0, text.find(':'));
  if (text.size() > kMaxAccountLine) {
    line.problem = absl::StrCat("longer than ", kMaxAccountLine >> 20, " MiB");
    return line;
  }
  if (text.find('\0') != absl::string_view::npos) {
    line.problem = "contains a NUL byte";
    return line;
  }
  // Count first: a long line of ':' must not become a long vector.
  const size_t fields = static_cast<size_t>(std::count(text.begin(), text.end(), ':')) + 1;
  if (fields != want) {
    line.problem = absl::StrCat(fields, " fields, not ", want);
    return line;
  }
  line.fields = absl::StrSplit(text, ':');
  if (line.fields[0].empty()) {
    line.problem = "empty name";
    return line;
  }
  line.kind = LineKind::kEntry;
  return line;
}

// Calls `on_line(line_number, text)` for each line of `content`, without its '\n'.
template <typename F>
void ForEachLine(absl::string_view content, F on_line) {
  size_t number = 0;
  while (!content.empty()) {
    size_t end = content.find('\n');
    absl::string_view text = content.substr(0, end);
    on_line(++number, text);
    if (end == absl::string_view::npos) break;
    content.remove_prefix(end + 1);
  }
}

struct PasswdEntry {
  bool found = false;
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;
};

// Parses a kEntry passwd line; false (with `problem` set) when its ids are bad.
bool ParsePasswdEntry(Line* line, PasswdEntry* entry) {
  uint32_t uid = 0;
  uint32_t gid = 0;
  if (!ParseId(line->fields[2], &uid)) {
    line->problem = absl::StrCat("uid \"", absl::CEscape(line->fields[2]), "\" is not a valid uid");
    return false;
  }
  if (!ParseId(line->fields[3], &gid)) {
    line->problem = absl::StrCat("gid \"", absl::CEscape(line->fields[3]), "\" is not a valid gid");
    return false;
  }
  entry->found = true;
  entry->name = std::string(line->fields[0]);
  entry->uid = uid;
  entry->gid = gid;
  entry->home = std::string(line->fields[5]);
  return true;
}

void Fill(const PasswdEntry& entry, UserInfo* info) {
  info->name = entry.name;
  info->uid = entry.uid;
  info->gid = entry.gid;
  info->home = entry.home;
  info->has_passwd_entry = true;
}

// Sets info->groups to info->gid followed by the gid of every group in
// `group_path` that lists info->name as a member, each gid once.
absl::Status LookupGroups(absl::string_view user, const std::string& group_path, UserInfo* info) {
  std::string content;
  FERRY_RETURN_IF_ERROR(ReadAccountFile(user, group_path, &content));
  info->groups = {info->gid};
  std::unordered_set<gid_t> seen = {info->gid};
  bool too_many = false;
  ForEachLine(content, [&](size_t, absl::string_view text) {
    if (too_many) return;
    Line line = SplitLine(text, kGroupFields);
    uint32_t gid = 0;
    if (line.kind != LineKind::kEntry || !ParseId(line.fields[2], &gid)) return;
    if (seen.count(gid) != 0) return;
    // Members are exact names; empty ones ("a,,b", a trailing ',') match nothing.
    for (absl::string_view member : absl::StrSplit(line.fields[3], ',')) {
      if (member != info->name) continue;
      if (info->groups.size() >= static_cast<size_t>(kMaxGroups)) {
        too_many = true;
        return;
      }
      info->groups.push_back(gid);
      seen.insert(gid);
      return;
    }
  });
  if (too_many) {
    return absl::InternalError(absl::StrCat(
        "--user ", user, ": ", group_path, " lists the user in more than ", kMaxGroups, " groups"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<UserInfo> LookupUser(absl::string_view user) {
  return LookupUser(user, kPasswdPath, kGroupPath);
}

absl::StatusOr<UserInfo> LookupUser(absl::string_view user, const std::string& passwd_path,
                                    const std::string& group_path) {
  if (user.empty()) return absl::InvalidArgumentError("--user: empty user name");
  if (user.size() > 256 || user.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--user: not a user name: \"", absl::CEscape(user), "\""));
  }
  const bool numeric = std::all_of(user.begin(), user.end(), [](char c) {
    return absl::ascii_isdigit(static_cast<unsigned char>(c));
  });
  uint64_t id = 0;
  // (uid_t)-1 means "leave unchanged" to setresuid, so it is no uid.
  const bool id_in_range =
      numeric && absl::SimpleAtoi(user, &id) && id < std::numeric_limits<uid_t>::max();

  std::string content;
  FERRY_RETURN_IF_ERROR(ReadAccountFile(user, passwd_path, &content));
  // One pass: the first entry named `user`, and the first with uid `user`
  // for when no entry has that name.
  PasswdEntry by_name;
  PasswdEntry by_uid;
  size_t malformed_line = 0;  // the first malformed line that names `user`
  std::string malformed_problem;
  ForEachLine(content, [&](size_t number, absl::string_view text) {
    if (by_name.found) return;
    Line line = SplitLine(text, kPasswdFields);
    if (line.kind == LineKind::kSkip) return;
    PasswdEntry entry;
    if (line.kind == LineKind::kEntry && ParsePasswdEntry(&line, &entry)) {
      if (entry.name == user) {
        by_name = std::move(entry);
      } else if (id_in_range && !by_uid.found && entry.uid == id) {
        by_uid = std::move(entry);
      }
      return;
    }
    if (malformed_line == 0 && line.name == user) {
      malformed_line = number;
      malformed_problem = std::move(line.problem);
    }
  });

  UserInfo info;
  if (by_name.found || by_uid.found) {
    Fill(by_name.found ? by_name : by_uid, &info);
    FERRY_RETURN_IF_ERROR(LookupGroups(user, group_path, &info));
    return info;
  }
  if (!numeric) {
    std::string message = absl::StrCat("--user ", user, ": no such user");
    if (malformed_line != 0) {
      absl::StrAppend(&message, " (line ", malformed_line, " of ", passwd_path,
                      " names it but is malformed: ", malformed_problem, ")");
    }
    return absl::NotFoundError(message);
  }
  if (!id_in_range) {
    return absl::InvalidArgumentError(absl::StrCat("--user ", user, ": uid out of range (0 to ",
                                                   std::numeric_limits<uid_t>::max() - 1, ")"));
  }
  info.name = std::string(user);
  info.uid = static_cast<uid_t>(id);
  info.gid = static_cast<gid_t>(id);
  info.groups = {info.gid};
  info.has_passwd_entry = false;
  return info;
}

absl::Status DropPrivileges(absl::string_view user) {
  FERRY_ASSIGN_OR_RETURN(UserInfo info, LookupUser(user));
  if (info.uid == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--user ", user, " is uid 0: that would drop no privileges"));
  }
  uid_t euid = ::geteuid();
  if (euid != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("--user ", user, " needs root: running as uid ", euid));
  }
  if (info.groups.size() > static_cast<size_t>(kMaxGroups)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--user ", user, ": ", info.groups.size(), " groups, more than ", kMaxGroups));
  }

  CapSets before;
  if (!GetCaps(&before)) return CallFailed(user, "capget", errno);
  const uint64_t keep = before.permitted & kBindCap;

  // Keep the permitted set across the uid change on this thread only; the
  // kernel clears it (and the effective set) on every other thread.
  if (::prctl(PR_SET_KEEPCAPS, 1L, 0L, 0L, 0L) != 0) {
    return CallFailed(user, "prctl(PR_SET_KEEPCAPS)", errno);
  }
  // From here on, a failure leaves KEEPCAPS off again: the caller exits anyway,
  // but never with a root-keeping flag set.
  auto fail = [&](absl::string_view call, int err) {
    ::prctl(PR_SET_KEEPCAPS, 0L, 0L, 0L, 0L);
    return CallFailed(user, call, err);
  };
  // Groups, then gid, then uid: the first two need root's CAP_SETGID.
  if (::setgroups(info.groups.size(), info.groups.data()) != 0) {
    return fail("setgroups", errno);
  }
  if (::setresgid(info.gid, info.gid, info.gid) != 0) {
    return fail(absl::StrCat("setresgid(", info.gid, ")"), errno);
  }
  if (::setresuid(info.uid, info.uid, info.uid) != 0) {
    return fail(absl::StrCat("setresuid(", info.uid, ")"), errno);
  }
  CapSets want;
  want.effective = keep;
  want.permitted = keep;
  want.inheritable = 0;
  if (int err = SetCaps(want); err != 0) return fail("capset", err);
  if (::prctl(PR_SET_KEEPCAPS, 0L, 0L, 0L, 0L) != 0) {
    return CallFailed(user, "prctl(PR_SET_KEEPCAPS, 0)", errno);
  }
  // The ambient set is empty after the uid change already (the kernel clears
  // it with the permitted set); make sure of it, where the kernel knows it.
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0L, 0L, 0L) != 0 && errno != EINVAL) {
    return CallFailed(user, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)", errno);
  }
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1L, 0L, 0L, 0L) != 0) {
    return CallFailed(user, "prctl(PR_SET_NO_NEW_PRIVS)", errno);
  }

  // Check the result: a kernel or policy that silently kept something must
  // not leave ferry running as root.
  uid_t ruid, suid;
  gid_t rgid, egid, sgid;
  if (::getresuid(&ruid, &euid, &suid) != 0) return CallFailed(user, "getresuid", errno);
  if (::getresgid(&rgid, &egid, &sgid) != 0) return CallFailed(user, "getresgid", errno);
  if (ruid != info.uid || euid != info.uid || suid != info.uid || rgid != info.gid ||
      egid != info.gid || sgid != info.gid) {
    return absl::InternalError(absl::StrCat("--user ", user, ": uids are ", ruid, "/", euid, "/",
                                            suid, " and gids ", rgid, "/", egid, "/", sgid,
                                            " after the switch, not ", info.uid, "/", info.gid));
  }
  CapSets after;
  if (!GetCaps(&after)) return CallFailed(user, "capget", errno);
  if (after.effective != keep || after.permitted != keep || after.inheritable != 0) {
    return absl::InternalError(absl::StrCat(
        "--user ", user, ": capabilities after the switch are effective=0x",
        absl::Hex(after.effective), " permitted=0x", absl::Hex(after.permitted),
        " inheritable=0x", absl::Hex(after.inheritable), ", not 0x", absl::Hex(keep)));
  }
  if (keep == 0) {
    FERRY_LOG(kWarn, "running without CAP_NET_BIND_SERVICE: the process did not have it",
              {{"user", info.name}, {"uid", info.uid}});
  }
  return absl::OkStatus();
}

uint64_t EffectiveCapabilities() {
  CapSets caps;
  return GetCaps(&caps) ? caps.effective : 0;
}

uint64_t PermittedCapabilities() {
  CapSets caps;
  return GetCaps(&caps) ? caps.permitted : 0;
}

int UnprivilegedPortStart() {
  constexpr int kDefault = 1024;
  Fd fd(::open("/proc/sys/net/ipv4/ip_unprivileged_port_start", O_RDONLY | O_CLOEXEC));
  if (!fd) return kDefault;
  char buffer[32];
  ssize_t n;
  do {
    n = ::read(fd.get(), buffer, sizeof(buffer) - 1);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return kDefault;
  int start = 0;
  if (!absl::SimpleAtoi(absl::string_view(buffer, static_cast<size_t>(n)), &start) || start < 0 ||
      start > 65536) {
    return kDefault;
  }
  return start;
}

std::string BindPermissionHint(int port) {
  return BindPermissionHint(port, UnprivilegedPortStart());
}

std::string BindPermissionHint(int port, int unprivileged_port_start) {
  // Port 0 picks an ephemeral port, which is never privileged.
  if (port <= 0 || port >= unprivileged_port_start) return "";
  return absl::StrCat(" (ports below ", unprivileged_port_start,
                      " need root or CAP_NET_BIND_SERVICE)");
}

}  // namespace ferry::base
