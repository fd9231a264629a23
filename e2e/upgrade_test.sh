#!/usr/bin/env bash
# End to end: upgrade a running ferry without refusing or resetting a client.
#
# On 127.0.0.1: an echo server (bench/upgrade/upgrade_load.cc, mode echo),
# ferry A relaying a fixed port to it, and a load of short connections
# (upgrade_load load: connect, send 8 bytes, read them back, half-close, wait
# for EOF). Under the load, ferry B starts on the same config (it binds beside
# A with SO_REUSEPORT); once B logged msg="started", A gets SIGTERM and must
# exit 0 after its drain; the load runs one more second and stops. A is
# frozen (SIGSTOP) for a moment as its drain.delay ends, so it stops accepting
# with clients in its accept queues, as a busy relay would: those are the
# clients an upgrade that closes listening sockets resets.
#
# Checks: every connection of the load was ok (no refused, reset, early EOF,
# timeout or corrupt echo), A exited 0 and logged "drained", and afterwards B
# alone listens on the port and serves a second load without a failure.
#
# Environment (all optional):
#   FERRY_BINARY       the ferry binary (required; skipped without it)
#   UPGRADE_DRAIN_DELAY  A's drain.delay (default 1s)
#   UPGRADE_WORKERS    workers of each ferry (default 2)
#   UPGRADE_CONCURRENCY  connections the load keeps in flight (default 16)
#   UPGRADE_STALL_MS   how long A is stopped (SIGSTOP) around the end of its
#                      drain.delay, so that it stops accepting with connections
#                      queued, as a busy relay does (default 200; 0 = never)
#   UPGRADE_LISTEN_PORT  the relay's port (default: a free one below the
#                      ephemeral range; measure.sh --loss fixes it)
#   UPGRADE_TIMEOUT_MS a client's time limit per connection (default 5000)
#   UPGRADE_LOAD_BINARY  a built upgrade_load (default: compiled here with g++)
#   UPGRADE_KEEP_LOGS  a directory to copy the logs to when the test fails
# Prints one summary line starting with "upgrade:" (bench/upgrade/measure.sh
# parses it). Exits 0 on success, 1 on failure, 77 (skipped) when something
# it needs is missing. Runs in about 10 s; every wait is bounded.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$here/../bench/upgrade/upgrade_load.cc
delay=${UPGRADE_DRAIN_DELAY:-1s}
workers=${UPGRADE_WORKERS:-2}
concurrency=${UPGRADE_CONCURRENCY:-16}
stall_ms=${UPGRADE_STALL_MS:-200}
timeout_ms=${UPGRADE_TIMEOUT_MS:-5000}

skip() { echo "skip: $*"; exit 77; }
[[ -n ${FERRY_BINARY:-} && -x ${FERRY_BINARY:-} ]] || skip "set FERRY_BINARY to the ferry binary"
FERRY=$FERRY_BINARY
command -v ss >/dev/null || skip "needs ss (iproute2)"
usage() { echo "$1" >&2; exit 2; }
[[ $delay =~ ^[0-9]+(ms|s)$ ]] || usage "UPGRADE_DRAIN_DELAY: want e.g. 0s, 500ms, 1s; got \"$delay\""
[[ $workers =~ ^[1-9][0-9]?$ ]] || usage "UPGRADE_WORKERS: want 1..99, got \"$workers\""
[[ $stall_ms =~ ^[0-9]{1,4}$ ]] || usage "UPGRADE_STALL_MS: want 0..9999, got \"$stall_ms\""
[[ $timeout_ms =~ ^[1-9][0-9]{2,4}$ ]] || usage "UPGRADE_TIMEOUT_MS: want 100..99999, got \"$timeout_ms\""
[[ $concurrency =~ ^[1-9][0-9]{0,3}$ ]] || usage "UPGRADE_CONCURRENCY: want 1..9999, got \"$concurrency\""
delay_ms=$(sed -E 's/ms$//; s/s$/000/' <<<"$delay")
ms_to_s() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

work=$(mktemp -d)
pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ $rc != 0 && $rc != 77 && -n ${UPGRADE_KEEP_LOGS:-} ]]; then
    mkdir -p "$UPGRADE_KEEP_LOGS" && cp "$work"/*.log "$UPGRADE_KEEP_LOGS"/ 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

load_bin=${UPGRADE_LOAD_BINARY:-}
if [[ -z $load_bin ]]; then
  command -v g++ >/dev/null || skip "needs g++ to build upgrade_load"
  [[ -f $src ]] || skip "missing $src"
  g++ -O2 -std=c++17 -o "$work/upgrade_load" "$src" || skip "cannot build upgrade_load"
  load_bin=$work/upgrade_load
fi
[[ -x $load_bin ]] || skip "UPGRADE_LOAD_BINARY $load_bin is not executable"

fail() {
  echo "FAIL: $*" >&2
  for f in a b load; do
    [[ -f $work/$f.log ]] && { echo "--- $f.log (tail)" >&2; tail -15 "$work/$f.log" >&2; }
  done
  exit 1
}

# Fixed ports below the ephemeral range, so no client socket can hold them;
# the pid spreads concurrent runs, and a port something listens on is skipped.
eph_start=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range)
(( eph_start > 2100 )) || skip "ip_local_port_range starts at $eph_start: no fixed port below it"
span=$(( (eph_start - 2000) / 2 ))
pick_port() {
  local p
  for i in $(seq 0 49); do
    p=$(( 2000 + ( ($$ * 2 + i * 97 + $1) % span ) * 2 + $1 ))
    [[ -z $(ss -Htan "sport = :$p") ]] && { echo "$p"; return; }
  done
  return 1
}
if [[ -n ${UPGRADE_LISTEN_PORT:-} ]]; then
  listen_port=$UPGRADE_LISTEN_PORT
  [[ $listen_port =~ ^[1-9][0-9]{0,4}$ ]] && (( listen_port < eph_start )) \
    || { echo "UPGRADE_LISTEN_PORT: want a port below $eph_start, got \"$listen_port\"" >&2; exit 2; }
  [[ -z $(ss -Htan "sport = :$listen_port") ]] || skip "port $listen_port is in use"
else
  listen_port=$(pick_port 0) || skip "no free port below $eph_start"
fi
target_port=$(pick_port 1) || skip "no free port below $eph_start"

handoff=${UPGRADE_HANDOFF:-1}
if [[ $handoff == 1 ]]; then
  # B takes A's listening sockets (--handoff); the admin address, which only
  # one process can hold, is B's once A exits (B retries it until then).
  admin_port=
  for ((p = listen_port + 4; p < eph_start && p < listen_port + 400; p += 2)); do
    [[ -z $(ss -Htan "sport = :$p") ]] && { admin_port=$p; break; }
  done
  [[ -n $admin_port ]] || skip "no free admin port below $eph_start"
  admin="{ listen: \"127.0.0.1:$admin_port\" }"
  ferry_flags=(--handoff "$work/handoff.sock")
else
  # Binding beside A (SO_REUSEPORT): no admin endpoint, since A's and B's
  # would need the same port and only rule listeners are SO_REUSEPORT.
  admin='{ listen: "" }'
  ferry_flags=()
fi
cat >"$work/ferry.yaml" <<EOF
admin: $admin
workers: $workers
drain: { delay: "$delay", timeout: "10s" }
rules:
  - name: upgrade
    listen: "127.0.0.1:$listen_port"
    targets: ["127.0.0.1:$target_port"]
EOF

# wait_for WHAT TENTHS COMMAND...: polls COMMAND every 0.1 s, TENTHS times at most.
wait_for() {
  local what=$1 tenths=$2
  shift 2
  for ((i = 0; i < tenths; i++)); do
    "$@" && return 0
    sleep 0.1
  done
  fail "timed out waiting for $what"
}
started() { grep -q 'msg="\?started' "$1"; }
exited() { ! kill -0 "$1" 2>/dev/null; }
# netstat counters that say where a reset came from (absent on old kernels).
counters() {
  awk '/^TcpExt:/ { if (!h) { split($0, k); h = 1 } else { for (i = 2; i <= NF; i++) v[k[i]] = $i } }
       END { printf "%d %d %d %d\n", v["TCPMigrateReqSuccess"], v["TCPMigrateReqFailure"],
             v["ListenOverflows"], v["ListenDrops"] }' /proc/net/netstat
}

"$load_bin" echo --port "$target_port" --ready-file "$work/echo.ready" >"$work/echo.log" 2>&1 &
pids+=($!)
wait_for "the echo server" 50 test -f "$work/echo.ready"

"$FERRY" run --config "$work/ferry.yaml" "${ferry_flags[@]}" >"$work/a.log" 2>&1 &
a_pid=$!
pids+=($a_pid)
wait_for "ferry A to start" 100 started "$work/a.log"

read -r mig_ok0 mig_fail0 overflow0 drops0 < <(counters)
"$load_bin" load --port "$listen_port" --concurrency "$concurrency" --max-seconds 40 \
  --timeout-ms "$timeout_ms" >"$work/load.out" 2>"$work/load.log" &
load_pid=$!
pids+=($load_pid)
sleep 0.5  # A alone under load first

"$FERRY" run --config "$work/ferry.yaml" "${ferry_flags[@]}" >"$work/b.log" 2>&1 &
b_pid=$!
pids+=($b_pid)
wait_for "ferry B to start" 100 started "$work/b.log"
sleep 0.3  # both serve for a moment

# A is stopped (SIGSTOP) for stall_ms around the moment its drain.delay ends
# and it stops accepting: like a busy relay, it finds its accept queues full
# when it resumes and closes them. The upgrade must not reset those clients.
if (( delay_ms <= stall_ms / 2 )); then
  (( stall_ms > 0 )) && kill -STOP "$a_pid"
  kill -TERM "$a_pid"
else
  kill -TERM "$a_pid"
  (( stall_ms > 0 )) && { sleep "$(ms_to_s $((delay_ms - stall_ms / 2)))"; kill -STOP "$a_pid"; }
fi
if (( stall_ms > 0 )); then
  sleep "$(ms_to_s "$stall_ms")"
  kill -CONT "$a_pid"
fi
# drain.delay, then the drain itself (these connections last a millisecond).
limit=$(( delay_ms / 100 + stall_ms / 100 + 150 ))
wait_for "ferry A to exit after SIGTERM" "$limit" exited "$a_pid"
a_rc=0
wait "$a_pid" || a_rc=$?
sleep 1  # B alone under load

kill -TERM "$load_pid"
wait_for "the load to stop" $(( timeout_ms / 100 + 50 )) exited "$load_pid"
wait "$load_pid" || true
read -r mig_ok1 mig_fail1 overflow1 drops1 < <(counters)

result=$(cat "$work/load.out")
migrate_req=$(cat /proc/sys/net/ipv4/tcp_migrate_req 2>/dev/null || echo -)
echo "upgrade: handoff=$handoff delay=$delay stall_ms=$stall_ms workers=$workers migrate_req=$migrate_req" \
  "$result a_exit=$a_rc migrated=$((mig_ok1 - mig_ok0)) migrate_failed=$((mig_fail1 - mig_fail0))" \
  "listen_overflows=$((overflow1 - overflow0)) listen_drops=$((drops1 - drops0))"
want='ok=([0-9]+) refused=([0-9]+) reset=([0-9]+) eof=([0-9]+) timeout=([0-9]+) corrupt=([0-9]+)'
want+=' other=([0-9]+)'
[[ $result =~ $want ]] || fail "unreadable load result: \"$result\""
ok=${BASH_REMATCH[1]}
bad=0
for i in 2 3 4 5 6 7; do bad=$((bad + BASH_REMATCH[i])); done
(( bad == 0 )) || fail "clients failed during the upgrade: $result"
(( ok >= 500 )) || fail "only $ok connections made it: the load did not run ($result)"
[[ $a_rc == 0 ]] || fail "ferry A exited $a_rc after SIGTERM, want 0"
grep -q drained "$work/a.log" || fail "ferry A did not log \"drained\""
! grep -qE 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error:' "$work/a.log" \
  || fail "ferry A reported a sanitizer error"
echo "ok: $ok connections through the upgrade, none refused or reset; A exited 0"

# B alone: it holds every listening socket of the port, and serves.
exited "$b_pid" && fail "ferry B exited"
others=$(ss -Hltnp "sport = :$listen_port" | grep -v "pid=$b_pid," || true)
[[ -z $others ]] || fail "someone besides B listens on $listen_port: $others"
[[ $(ss -Hltn "sport = :$listen_port" | wc -l) == "$workers" ]] \
  || fail "want $workers listening sockets of B on $listen_port, got: $(ss -Hltn "sport = :$listen_port")"
after=$("$load_bin" load --port "$listen_port" --concurrency 4 --max-seconds 1 --timeout-ms 3000 \
  2>>"$work/load.log") || fail "B alone: $after"
echo "ok: B alone listens on $listen_port and serves ($after)"
if [[ $handoff == 1 ]]; then
  grep -q 'msg="listener taken over"' "$work/b.log" || fail "B did not take A's listener"
  if command -v curl >/dev/null; then
    admin_up() { curl -fsS -m 1 "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1; }
    wait_for "B's admin endpoint once A exited" 30 admin_up
    echo "ok: B took A's listeners and serves the admin address A held"
  fi
fi
echo "e2e upgrade: 2 passed, 0 failed"
