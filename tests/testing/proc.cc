#include "tests/testing/proc.h"

#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace ferry::testing {

int CountOpenFds(pid_t pid, int below) {
  bool self = pid == 0 || pid == ::getpid();
  std::string dir = self ? "/proc/self/fd" : absl::StrCat("/proc/", pid, "/fd");
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return -1;
  int own = self ? ::dirfd(d) : -1;  // opendir's own fd is not one of ours
  int n = 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    int fd = std::atoi(e->d_name);
    if (fd == own || (below > 0 && fd >= below)) continue;
    ++n;
  }
  ::closedir(d);
  return n;
}

const char* TcpStateName(int state) {
  static const char* const kNames[] = {"?",          "ESTABLISHED", "SYN_SENT",  "SYN_RECV",
                                       "FIN_WAIT1",  "FIN_WAIT2",   "TIME_WAIT", "CLOSE",
                                       "CLOSE_WAIT", "LAST_ACK",    "LISTEN",    "CLOSING"};
  return state >= 0 && state <= 11 ? kNames[state] : "?";
}

namespace {

void ReadTable(const char* path, bool v6, std::vector<TcpSocket>* out) {
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);  // header
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string slot, local, remote, state;
    if (!(in >> slot >> local >> remote >> state)) continue;
    auto port = [](const std::string& addr) -> uint16_t {
      size_t colon = addr.rfind(':');
      return colon == std::string::npos
                 ? 0
                 : static_cast<uint16_t>(std::stoul(addr.substr(colon + 1), nullptr, 16));
    };
    TcpSocket s;
    s.local_port = port(local);
    s.remote_port = port(remote);
    s.state = static_cast<int>(std::stoul(state, nullptr, 16));
    s.v6 = v6;
    out->push_back(s);
  }
}

}  // namespace

std::vector<TcpSocket> ReadTcpSockets() {
  std::vector<TcpSocket> out;
  ReadTable("/proc/net/tcp", false, &out);
  ReadTable("/proc/net/tcp6", true, &out);
  return out;
}

std::vector<TcpSocket> RelaySockets(uint16_t listen_port, uint16_t target_port) {
  std::vector<TcpSocket> out;
  for (const TcpSocket& s : ReadTcpSockets()) {
    if (s.state == kTcpListen) continue;
    bool accepted = s.local_port == listen_port;
    bool upstream = s.remote_port == target_port && s.local_port != target_port;
    if (accepted || upstream) out.push_back(s);
  }
  return out;
}

std::string Describe(const std::vector<TcpSocket>& sockets) {
  std::string out;
  for (const TcpSocket& s : sockets) {
    absl::StrAppend(&out, out.empty() ? "" : ", ", TcpStateName(s.state), " ", s.local_port, "->",
                    s.remote_port);
  }
  return out.empty() ? "(none)" : out;
}

int64_t CpuTicks(pid_t pid) {
  std::ifstream f(absl::StrCat("/proc/", pid, "/stat"));
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  // The command name may hold spaces: fields are counted after its ')'.
  size_t close = all.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream in(all.substr(close + 2));
  std::string field;
  int64_t utime = -1, stime = -1;
  // Field 3 (state) is the first after ')'; utime is field 14, stime 15.
  for (int i = 3; i <= 15 && (in >> field); ++i) {
    if (i == 14) utime = std::stoll(field);
    if (i == 15) stime = std::stoll(field);
  }
  return utime < 0 || stime < 0 ? -1 : utime + stime;
}

int64_t TicksPerSecond() { return ::sysconf(_SC_CLK_TCK); }

}  // namespace ferry::testing
