#!/usr/bin/env bash
# Configures and builds one flavour of ferry into build/FLAVOUR:
#   release  fully static binary, no tests (what the image ships)
#   debug    optimised with debug info, with tests
#   asan     AddressSanitizer + UndefinedBehaviorSanitizer, with tests
# Assumes scripts/install-deps.sh has run.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
flavour=${1:-debug}
case $flavour in
  release) flags=(-DCMAKE_BUILD_TYPE=Release -DFERRY_STATIC=ON -DFERRY_TESTS=OFF) ;;
  debug) flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
  asan) flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DFERRY_SANITIZE=ON) ;;
  *) echo "build.sh: unknown flavour \"$flavour\" (release, debug, asan)" >&2; exit 2 ;;
esac
cmake -S "$root" -B "$root/build/$flavour" -G Ninja "${flags[@]}" >/dev/null
cmake --build "$root/build/$flavour" -j "$(nproc)"
