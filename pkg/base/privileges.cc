#include "pkg/base/privileges.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "pkg/base/fd.h"
#include "pkg/base/log.h"
#include "pkg/base/status.h"

namespace ferry::base {
namespace {

constexpr uint64_t kBindCap = uint64_t{1} << CAP_NET_BIND_SERVICE;
// Lookups need a buffer for the entry's strings; grow it on ERANGE up to this.
constexpr size_t kMaxLookupBuffer = size_t{1} << 20;
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

// getpw*_r report "no such user" as 0 with a null result, or as one of these.
bool IsNotFound(int err) {
  return err == 0 || err == ENOENT || err == ESRCH || err == EBADF || err == EPERM;
}

// Fills `info` from the passwd entry of `name` (getpwnam_r) or, when `name` is
// null, of `uid` (getpwuid_r). Returns false with *status OK when there is no
// such entry, false with an error when the lookup failed.
bool LookupPasswd(absl::string_view user, const std::string* name, uid_t uid, UserInfo* info,
                  absl::Status* status) {
  *status = absl::OkStatus();
  long hint = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buffer(hint > 0 ? static_cast<size_t>(hint) : 1024);
  while (true) {
    passwd entry{};
    passwd* result = nullptr;
    int err = name != nullptr
                  ? ::getpwnam_r(name->c_str(), &entry, buffer.data(), buffer.size(), &result)
                  : ::getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &result);
    if (err == ERANGE && buffer.size() < kMaxLookupBuffer) {
      buffer.resize(buffer.size() * 2);
      continue;
    }
    if (result != nullptr) {
      info->name = entry.pw_name;
      info->uid = entry.pw_uid;
      info->gid = entry.pw_gid;
      info->home = entry.pw_dir != nullptr ? entry.pw_dir : "";
      info->has_passwd_entry = true;
      return true;
    }
    if (!IsNotFound(err)) {
      *status = absl::InternalError(absl::StrCat("--user ", user, ": ",
                                                 name != nullptr ? "getpwnam_r" : "getpwuid_r",
                                                 ": ", Errno(err)));
    }
    return false;
  }
}

absl::Status LookupGroups(absl::string_view user, UserInfo* info) {
  int n = 32;
  for (int attempt = 0; attempt < 8; ++attempt) {
    info->groups.resize(n);
    int want = n;
    if (::getgrouplist(info->name.c_str(), info->gid, info->groups.data(), &want) >= 0) {
      info->groups.resize(want);
      return absl::OkStatus();
    }
    // Too small: `want` now holds the number needed (glibc), else double.
    n = want > n ? want : n * 2;
    if (n > kMaxGroups) break;
  }
  return absl::InternalError(
      absl::StrCat("--user ", user, ": getgrouplist: more than ", kMaxGroups, " groups"));
}

}  // namespace

absl::StatusOr<UserInfo> LookupUser(absl::string_view user) {
  if (user.empty()) return absl::InvalidArgumentError("--user: empty user name");
  if (user.size() > 256 || user.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--user: not a user name: \"", absl::CEscape(user), "\""));
  }
  UserInfo info;
  absl::Status status;
  const std::string name(user);
  if (LookupPasswd(user, &name, 0, &info, &status)) {
    FERRY_RETURN_IF_ERROR(LookupGroups(user, &info));
    return info;
  }
  FERRY_RETURN_IF_ERROR(status);

  bool numeric = std::all_of(user.begin(), user.end(), [](char c) {
    return absl::ascii_isdigit(static_cast<unsigned char>(c));
  });
  if (!numeric) return absl::NotFoundError(absl::StrCat("--user ", user, ": no such user"));
  uint64_t id = 0;
  // (uid_t)-1 means "leave unchanged" to setresuid, so it is no uid.
  if (!absl::SimpleAtoi(user, &id) || id >= std::numeric_limits<uid_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--user ", user, ": uid out of range (0 to ",
                     std::numeric_limits<uid_t>::max() - 1, ")"));
  }
  if (LookupPasswd(user, nullptr, static_cast<uid_t>(id), &info, &status)) {
    FERRY_RETURN_IF_ERROR(LookupGroups(user, &info));
    return info;
  }
  FERRY_RETURN_IF_ERROR(status);
  info.name = name;
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
