#pragma once

// Dropping root after the listeners are bound (`--user NAME`), keeping only
// CAP_NET_BIND_SERVICE so a config reload can still bind a port below 1024.
//
// Linux keeps the uid and gids per process (glibc applies set*id calls to every
// thread) but capabilities PER THREAD. After DropPrivileges() returns, only the
// calling thread and the threads it creates afterwards hold
// CAP_NET_BIND_SERVICE; every thread that already existed runs as the new user
// with no capability at all, so its bind of a low port fails with EACCES.
// Call it on the main thread before starting the loop threads that bind.
//
// No libcap: the raw capget/capset syscalls (_LINUX_CAPABILITY_VERSION_3) and
// prctl do all that is needed, and the static binary stays dependency-free.

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::base {

// The account `--user` names, resolved before anything changes.
struct UserInfo {
  std::string name;  // from the passwd entry; the digits given when there is none
  uid_t uid = 0;
  gid_t gid = 0;                // primary group
  std::string home;             // empty when there is no passwd entry
  std::vector<gid_t> groups;    // supplementary groups to set, the primary one included
  bool has_passwd_entry = false;
};

// Resolves `user`, a name or a numeric uid, from /etc/passwd and /etc/group
// ONLY, read directly: no NSS (getpwnam_r, getgrouplist), so no LDAP, SSSD,
// systemd-userdb or NIS account. ferry ships as a static binary: glibc's NSS would
// dlopen the libnss_*.so modules /etc/nsswitch.conf names, which must come
// from the exact glibc version it was linked with (unsupported, and a crash
// or a silent miss on any other host), and a scratch or distroless image has
// none. A service account ferry runs as is local anyway; a directory account
// works by uid (below).
//
// Files: /etc/passwd lines are name:password:uid:gid:gecos:home:shell and
// /etc/group lines name:password:gid:member,member,... . Blank lines, lines
// starting with '#' and NIS compat lines (+name, -name, +) are skipped; so is
// any malformed line (wrong field count, empty name, a uid or gid that is not
// a decimal number below 4294967295, a NUL byte, longer than 1 MiB), without
// failing the lookup. The first entry that matches wins. A missing file has
// no entries; a file that cannot be read, is not a regular file or is larger
// than 16 MiB fails the lookup.
//
// A name is looked up first, so an all-digit user name still means that
// user; then a numeric `user` matches the uid field. A numeric uid without a
// passwd entry is accepted (a scratch image may have no /etc/passwd, and
// Kubernetes' runAsUser works the same way): its group is the same number and
// it has no other groups. The groups of a user with an entry are its primary
// gid first, then, in file order and each once, the gid of every /etc/group
// line whose member list names the user (by its passwd name).
// Errors: InvalidArgument for an empty or malformed name or uid 4294967295;
// NotFound for an unknown name ("--user NAME: no such user", plus the line
// number when a malformed line names it); Internal when a file cannot be read
// or the user has more than 65536 groups.
absl::StatusOr<UserInfo> LookupUser(absl::string_view user);

// LookupUser() reading `passwd_path` and `group_path` instead of /etc/passwd
// and /etc/group: a seam for tests. Messages name the paths given.
absl::StatusOr<UserInfo> LookupUser(absl::string_view user, const std::string& passwd_path,
                                    const std::string& group_path);

// Turns the whole process from root into `user`:
//   1. setgroups() to the user's supplementary groups (what su, sudo -u and
//      login give it, so files shared with the user through a group, e.g. a
//      certificate readable by group ssl-cert, stay readable),
//   2. setresgid() and setresuid() to the user's gid and uid (real, effective
//      and saved, so root cannot be taken back),
//   3. on the calling thread: permitted = effective = {CAP_NET_BIND_SERVICE},
//      inheritable = ambient = {} (ferry runs no other program, and none it
//      could run should inherit the right), via PR_SET_KEEPCAPS for the switch
//      and reset afterwards,
//   4. PR_SET_NO_NEW_PRIVS on the calling thread, inherited by the threads it
//      creates: no exec can make it root again through a setuid or
//      file-capability program.
// CAP_NET_BIND_SERVICE is kept only if the process holds it (a container may
// have had it removed); without it the drop still succeeds, a warning is
// logged, and low-port binds later fail with EACCES.
// The process is left non-dumpable (the kernel's rule after a uid change): no
// core file with the config's secrets; reading its own /proc/self still works.
// The environment (HOME, USER) is left as it is: setenv is not thread-safe and
// ferry reads neither.
// Errors name the user and the failing call with strerror: see LookupUser();
// InvalidArgument for uid 0 (nothing would be dropped); FailedPrecondition when
// the effective uid is not 0 ("--user nobody needs root: running as uid 1000");
// PermissionDenied when the kernel refuses a call (EPERM, e.g. no CAP_SETUID
// in a container); Internal for any other failure. After an error past the
// lookup the process may be half-changed: the caller must exit.
// Not thread-safe with itself; see the per-thread rule at the top of the file.
absl::Status DropPrivileges(absl::string_view user);

// The calling thread's capability sets as bit masks (bit N = capability N),
// read with capget; 0 if capget fails.
uint64_t EffectiveCapabilities();
uint64_t PermittedCapabilities();

// The first port an unprivileged process may bind in this network namespace:
// /proc/sys/net/ipv4/ip_unprivileged_port_start, or 1024 when unreadable.
int UnprivilegedPortStart();

// A suffix for an EACCES bind error on `port`:
// " (ports below 1024 need root or CAP_NET_BIND_SERVICE)" when `port` is below
// the unprivileged start, else "" (EACCES then has some other cause, e.g. an
// LSM policy). The first form reads the start from /proc.
std::string BindPermissionHint(int port);
std::string BindPermissionHint(int port, int unprivileged_port_start);

}  // namespace ferry::base
