#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: unit, loopback
# integration and network-namespace tests (those skip themselves when not
# root), then the same tests under ASan+UBSan, then checks that the release
# binary is fully static. Exit status 0 only if everything passed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
start=$SECONDS

scripts/install-deps.sh

echo "== build (debug) and test"
scripts/build.sh debug
ctest --test-dir build/debug --output-on-failure --timeout 300

echo "== build (asan+ubsan) and test"
scripts/build.sh asan
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build/asan --output-on-failure --timeout 600

echo "== build (release, static)"
scripts/build.sh release
bin=build/release/cmd/ferry/ferry
if ! file "$bin" | grep -qE "statically linked|static-pie linked"; then
  echo "test.sh: $bin is not statically linked: $(file "$bin")" >&2
  exit 1
fi
"$bin" version
echo "release binary: $(stat -c %s "$bin") bytes"
echo "test.sh: all passed in $((SECONDS - start)) s"
