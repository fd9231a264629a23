#!/usr/bin/env bash
# Proves that the prefix made by build-static-deps.sh is usable the way the
# release build uses it: find_package(prometheus-cpp CONFIG) from CMake, a
# fully static link, and a working Exposer that serves /metrics.
#
#   scripts/check-static-deps.sh        # honours FERRY_DEPS_PREFIX like the build
#   FERRY_CHECK_KEEP=1 scripts/check-static-deps.sh   # keep the temp dir to debug
#
# Exits 0 on success; leaves nothing behind (temp dir, processes).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=${FERRY_DEPS_PREFIX:-$root/.deps}

say() { echo "check-static-deps: $*"; }
fail() { echo "check-static-deps: error: $*" >&2; exit 1; }

# Also installs cmake and g++ on a bare system; returns at once when cached.
"$root/scripts/build-static-deps.sh"
prefix=$(cd "$prefix" && pwd)

if ! command -v file >/dev/null; then
  say "installing file"
  if ! out=$(DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
               --no-install-recommends file 2>&1); then
    echo "$out" | tail -n 20 >&2
    fail "apt-get install file failed"
  fi
fi

work=$(mktemp -d)
pid=
cleanup() {
  if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [[ -n ${FERRY_CHECK_KEEP:-} ]]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

cat >"$work/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.16)
project(static_deps_check CXX)
set(CMAKE_CXX_STANDARD 17)
find_package(prometheus-cpp CONFIG REQUIRED)
add_executable(static_deps_check main.cc)
target_link_libraries(static_deps_check PRIVATE prometheus-cpp::pull prometheus-cpp::core)
target_link_options(static_deps_check PRIVATE -static)
EOF

# Serves one counter on an ephemeral loopback port and reads it back over a
# plain socket, so the check needs no HTTP client.
cat >"$work/main.cc" <<'EOF'
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"

namespace {

std::string Fetch(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request =
        "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (write(fd, request.data(), request.size()) ==
        static_cast<ssize_t>(request.size())) {
      char buf[4096];
      ssize_t n;
      while ((n = read(fd, buf, sizeof(buf))) > 0) response.append(buf, n);
    }
  }
  close(fd);
  return response;
}

}  // namespace

int main() {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& family = prometheus::BuildCounter()
                     .Name("ferry_static_check_total")
                     .Help("Counts nothing; proves the static link works.")
                     .Register(*registry);
  family.Add({{"rule", "check"}}).Increment(3);

  prometheus::Exposer exposer{"127.0.0.1:0"};
  exposer.RegisterCollectable(registry);
  const auto ports = exposer.GetListeningPorts();
  if (ports.empty() || ports[0] <= 0) {
    std::fprintf(stderr, "exposer has no listening port\n");
    return 1;
  }

  const std::string response = Fetch(ports[0], "/metrics");
  const std::string want = "ferry_static_check_total{rule=\"check\"} 3";
  if (response.find(" 200 ") == std::string::npos ||
      response.find(want) == std::string::npos) {
    std::fprintf(stderr, "unexpected /metrics response:\n%s\n",
                 response.c_str());
    return 1;
  }
  std::printf("served /metrics on 127.0.0.1:%d with %s\n", ports[0],
              want.c_str());
  return 0;
}
EOF

say "building a -static test program against $prefix"
if ! cmake -S "$work" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
       -DCMAKE_PREFIX_PATH="$prefix" >"$work/build.log" 2>&1 ||
   ! cmake --build "$work/build" -j2 >>"$work/build.log" 2>&1; then
  tail -n 40 "$work/build.log" >&2
  fail "test program did not build"
fi
bin=$work/build/static_deps_check

kind=$(file -b "$bin")
[[ $kind == *"statically linked"* || $kind == *static-pie* ]] ||
  fail "not a static binary: $kind"
say "$(stat -c %s "$bin") bytes, $kind"

say "running it"
# Backgrounded with a deadline so a hung Exposer cannot hang the check.
timeout 30 "$bin" &
pid=$!
status=0
wait "$pid" || status=$?
pid=
((status == 0)) || fail "test program exited with status $status"
say "ok"
