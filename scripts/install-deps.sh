#!/usr/bin/env bash
# Installs what building and testing ferry needs on Debian bookworm, as root,
# with apt-get only (nothing else is assumed reachable), then builds the static
# prometheus-cpp and civetweb the release binary links. Installs only what is
# missing, so a second run takes a second.
#
#   scripts/install-deps.sh          # build + test tools
#   scripts/install-deps.sh --bench  # also the peers bench/run.sh measures against
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

packages=(
  # build
  ca-certificates cmake ninja-build g++ git file
  libprotobuf-dev protobuf-compiler libabsl-dev libyaml-cpp-dev libssl-dev
  libgtest-dev libgmock-dev
  # tests: network namespaces for e2e, socat as a demo backend and test peer
  iproute2 iptables socat procps curl prometheus jq chromium
)
if [[ ${1:-} == --bench ]]; then
  packages+=(haproxy nginx-light libnginx-mod-stream rinetd redir iperf3 wrk hyperfine
             util-linux)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine has no package lists; stale ones fail installs.
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

"$root/scripts/build-static-deps.sh"
