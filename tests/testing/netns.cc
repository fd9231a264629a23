#include "tests/testing/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tests/testing/child_process.h"

namespace ferry::testing {
namespace {

absl::Status Run(const std::string& tool, const std::vector<std::string>& args) {
  std::string output;
  int code = RunCommand(tool, args, &output, Millis(10000));
  if (code == 0) return absl::OkStatus();
  std::string cmd = tool;
  for (const auto& a : args) absl::StrAppend(&cmd, " ", a);
  return absl::InternalError(absl::StrCat(cmd, " exited ", code, ": ", output));
}

// Deletes namespaces "fit<pid>c" / "fit<pid>t" whose test process is gone (a
// crashed test never ran its destructor).
void RemoveStale(const std::string& ip) {
  std::string list;
  if (RunCommand(ip, {"netns", "list"}, &list) != 0) return;
  for (absl::string_view line : absl::StrSplit(list, '\n', absl::SkipEmpty())) {
    absl::string_view name = line.substr(0, line.find(' '));
    if (!absl::ConsumePrefix(&name, "fit") || name.size() < 2) continue;
    char side = name.back();
    int pid = 0;
    if ((side != 'c' && side != 't') || !absl::SimpleAtoi(name.substr(0, name.size() - 1), &pid)) {
      continue;
    }
    if (::kill(pid, 0) != 0 && errno == ESRCH) {
      RunCommand(ip, {"netns", "del", absl::StrCat("fit", pid, std::string(1, side))});
    }
  }
}

}  // namespace

std::string BlackholeNetns::Unsupported() {
  if (::geteuid() != 0) return "needs root to create network namespaces";
  if (FindTool("ip").empty()) return "no ip command (iproute2)";
  if (FindTool("iptables").empty() && FindTool("nft").empty()) return "no iptables or nft";
  // Some sandboxes (a chroot whose / is not a mount point) can add a
  // namespace but not enter one: `ip -n` fails there. Probe once.
  static const std::string probe = [] {
    // `ip -n` starts with `mount --make-rslave /`, which needs / to be a
    // mount point; in a chroot it is not. Check without adding anything (an
    // `ip netns add` there would leave a /run/netns mount behind).
    std::ifstream mountinfo("/proc/self/mountinfo");
    bool root_mounted = false;
    for (std::string line; std::getline(mountinfo, line);) {
      std::vector<std::string> f = absl::StrSplit(line, ' ');
      if (f.size() > 4 && f[4] == "/") root_mounted = true;
    }
    if (!root_mounted) return std::string("/ is not a mount point (a chroot): no network namespaces");
    std::string ip = FindTool("ip");
    std::string name = absl::StrCat("fip", ::getpid());
    RunCommand(ip, {"netns", "del", name});
    if (auto s = Run(ip, {"netns", "add", name}); !s.ok()) {
      return absl::StrCat("cannot add a network namespace: ", s.message());
    }
    absl::Status entered = Run(ip, {"-n", name, "link", "set", "lo", "up"});
    RunCommand(ip, {"netns", "del", name});
    if (!entered.ok()) {
      return absl::StrCat("cannot enter a network namespace here: ", entered.message());
    }
    return std::string();
  }();
  return probe;
}

absl::StatusOr<std::unique_ptr<BlackholeNetns>> BlackholeNetns::Create() {
  if (std::string why = Unsupported(); !why.empty()) return absl::FailedPreconditionError(why);
  std::unique_ptr<BlackholeNetns> ns(new BlackholeNetns());
  ns->ip_ = FindTool("ip");
  std::string tag = absl::StrCat("fit", ::getpid());
  ns->client_ = tag + "c";
  ns->target_ = tag + "t";
  const std::string& ip = ns->ip_;
  RemoveStale(ip);
  // A namespace left by a killed run with our pid would make `add` fail.
  RunCommand(ip, {"netns", "del", ns->client_});
  RunCommand(ip, {"netns", "del", ns->target_});
  if (auto s = Run(ip, {"netns", "add", ns->client_}); !s.ok()) return s;
  if (auto s = Run(ip, {"netns", "add", ns->target_}); !s.ok()) return s;
  std::string vc = tag + "vc", vt = tag + "vt";
  // Create the pair directly inside the namespaces; nothing touches ours.
  if (auto s = Run(ip, {"link", "add", "name", vc, "netns", ns->client_, "type", "veth", "peer",
                        "name", vt, "netns", ns->target_});
      !s.ok()) {
    return s;
  }
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"-n", ns->client_, "link", "set", "lo", "up"},
           {"-n", ns->client_, "addr", "add", "10.213.77.1/30", "dev", vc},
           {"-n", ns->client_, "link", "set", vc, "up"},
           {"-n", ns->target_, "link", "set", "lo", "up"},
           {"-n", ns->target_, "addr", "add", "10.213.77.2/30", "dev", vt},
           {"-n", ns->target_, "link", "set", vt, "up"},
       }) {
    if (auto s = Run(ip, args); !s.ok()) return s;
  }
  absl::Status dropped = absl::UnavailableError("no firewall tool");
  if (std::string ipt = FindTool("iptables"); !ipt.empty()) {
    dropped = Run(
        ip, {"netns", "exec", ns->target_, ipt, "-A", "INPUT", "-p", "tcp", "--syn", "-j", "DROP"});
  }
  if (!dropped.ok()) {
    if (std::string nft = FindTool("nft"); !nft.empty()) {
      dropped = Run(ip, {"netns", "exec", ns->target_, nft,
                         "add table inet ferryit; "
                         "add chain inet ferryit input { type filter hook input priority 0; }; "
                         "add rule inet ferryit input tcp flags & (syn | ack) == syn drop"});
    }
  }
  if (!dropped.ok()) return dropped;
  return ns;
}

BlackholeNetns::~BlackholeNetns() {
  // Deleting a namespace destroys the veth end inside it, and with it the peer.
  if (!client_.empty()) RunCommand(ip_, {"netns", "del", client_});
  if (!target_.empty()) RunCommand(ip_, {"netns", "del", target_});
}

absl::Status BlackholeNetns::RunInClientNs(const std::function<void()>& fn) {
  absl::Status status;
  std::thread t([&] {
    std::string path = absl::StrCat("/run/netns/", client_);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) {
      status = absl::InternalError(absl::StrCat("setns ", path, ": ", std::strerror(errno)));
      if (fd >= 0) ::close(fd);
      return;
    }
    ::close(fd);
    fn();
  });
  t.join();
  return status;
}

}  // namespace ferry::testing
