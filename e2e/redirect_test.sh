#!/usr/bin/env bash
# End to end: `transparent: redirect` behind an iptables REDIRECT rule, the
# redir/transproxy setup. A client host and a server host, each a network
# namespace, routed through a router namespace that runs ferry and NATs the
# client's port-80 traffic to ferry's port 7000:
#
#   client ns                router ns                               server ns
#   10.66.1.2 --- 10.66.1.1 [ferry :7000, REDIRECT] 10.66.2.1 --- 10.66.2.2
#                                                   10.66.3.1 --- 10.66.3.2
#                                                   10.66.4.1 --- 10.66.4.2
#
# The rule allows 10.66.2.0/24 (allow_targets) and 10.66.4.2:80 (targets) as
# original destinations. Servers on 10.66.{2,3,4}.2:80 answer "S<n> <peer>"
# and echo.
#
# Checks: before the NAT rule, the client reaches every server directly (so
# what follows is ferry's doing); with it, (1) 1 MiB to 10.66.2.2:80 comes
# back intact from a server that sees ferry's address as its peer, and the
# rule's bytes and "ok" outcome count exactly that connection under the
# allow_targets CIDR; (2) 10.66.4.2:80, a `targets` endpoint, is relayed and
# counted under its IP:PORT; (3) 10.66.3.2:80 (allowed by neither) is closed
# without reaching its server, outcome "denied"; (4) a connection straight to
# ferry's port (no NAT) is closed, outcome "no_endpoint"; ferry logs both
# refusals, and drains and exits 0 on SIGTERM. Needs root, network namespaces
# and iptables (or nft) in a namespace; exits 77 (skipped) otherwise. Runs in
# a few seconds; every wait is bounded.
set -euo pipefail
FERRY=${FERRY_BINARY:?set FERRY_BINARY to the ferry binary}
[[ $(id -u) == 0 ]] || { echo "skip: needs root for ip netns"; exit 77; }
for tool in ip socat curl sha256sum; do
  command -v "$tool" >/dev/null || { echo "skip: needs $tool"; exit 77; }
done

# A sandbox may add namespaces but not enter them (a chroot whose / is not a
# mount point): probe before building anything.
if ! awk '$5 == "/" {found=1} END {exit !found}' /proc/self/mountinfo; then
  echo "skip: / is not a mount point (a chroot): no network namespaces"
  exit 77
fi
probe=frp$$
ip netns add "$probe" 2>/dev/null || { echo "skip: cannot add a network namespace"; exit 77; }
if ! ip -n "$probe" link set lo up 2>/dev/null; then
  ip netns del "$probe" 2>/dev/null || true
  echo "skip: cannot enter a network namespace here"
  exit 77
fi
ip netns del "$probe"

tag=fr$$
cli=${tag}c rtr=${tag}r srv=${tag}s
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  # Deleting a namespace deletes the veth ends in it, and their peers.
  ip netns del "$cli" 2>/dev/null || true
  ip netns del "$srv" 2>/dev/null || true
  ip netns del "$rtr" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  if [[ -f $work/ferry.log ]]; then
    echo "--- ferry log (tail)" >&2
    tail -20 "$work/ferry.log" >&2
  fi
  exit 1
}
in_cli() { ip netns exec "$cli" "$@"; }
in_rtr() { ip netns exec "$rtr" "$@"; }

ip netns add "$cli"
ip netns add "$rtr"
ip netns add "$srv"
ip -n "$rtr" link add "${tag}a" type veth peer name "${tag}ap" netns "$cli"
ip -n "$rtr" link add "${tag}b" type veth peer name "${tag}bp" netns "$srv"
ip -n "$rtr" addr add 10.66.1.1/24 dev "${tag}a"
ip -n "$rtr" addr add 10.66.2.1/24 dev "${tag}b"
ip -n "$rtr" addr add 10.66.3.1/24 dev "${tag}b"
ip -n "$rtr" addr add 10.66.4.1/24 dev "${tag}b"
ip -n "$cli" addr add 10.66.1.2/24 dev "${tag}ap"
ip -n "$srv" addr add 10.66.2.2/24 dev "${tag}bp"
ip -n "$srv" addr add 10.66.3.2/24 dev "${tag}bp"
ip -n "$srv" addr add 10.66.4.2/24 dev "${tag}bp"
for ns in "$cli" "$rtr" "$srv"; do ip -n "$ns" link set lo up; done
ip -n "$rtr" link set "${tag}a" up
ip -n "$rtr" link set "${tag}b" up
ip -n "$cli" link set "${tag}ap" up
ip -n "$srv" link set "${tag}bp" up
ip -n "$cli" route add 10.66.2.0/24 via 10.66.1.1
ip -n "$cli" route add 10.66.3.0/24 via 10.66.1.1
ip -n "$cli" route add 10.66.4.0/24 via 10.66.1.1
ip -n "$srv" route add 10.66.1.0/24 via 10.66.2.1
in_rtr sysctl -qw net.ipv4.ip_forward=1

# The server host: each listener says who it is and who its peer is, then
# echoes. The one outside allow_targets also leaves a mark when reached.
# (socat reads backslashes in an address, so the commands have none.)
in_srv_listen() { ip netns exec "$srv" socat "$@" & pids+=($!); }
# shellcheck disable=SC2016  # the server's shell expands $SOCAT_PEERADDR
in_srv_listen TCP-LISTEN:80,bind=10.66.2.2,fork,reuseaddr \
  SYSTEM:'echo "S2 $SOCAT_PEERADDR"; exec cat'
in_srv_listen TCP-LISTEN:80,bind=10.66.3.2,fork,reuseaddr \
  SYSTEM:"echo >>$work/s3.hits; echo \"S3 \$SOCAT_PEERADDR\"; exec cat"
# shellcheck disable=SC2016
in_srv_listen TCP-LISTEN:80,bind=10.66.4.2,fork,reuseaddr \
  SYSTEM:'echo "S4 $SOCAT_PEERADDR"; exec cat'

# A one-line request; prints the first reply line (empty when closed).
ask() {  # ask HOST:PORT
  echo hello | in_cli timeout 10 socat -t3 - "TCP:$1,connect-timeout=2" 2>/dev/null |
    head -1 || true
}

# Control, before any NAT: the client reaches every server by routing alone.
for i in $(seq 1 50); do
  [[ $(ask 10.66.2.2:80) == "S2 10.66.1.2" && $(ask 10.66.3.2:80) == "S3 10.66.1.2" &&
     $(ask 10.66.4.2:80) == "S4 10.66.1.2" ]] && break
  [[ $i == 50 ]] && fail "without NAT, the client did not reach every server directly"
  sleep 0.1
done
rm -f "$work/s3.hits"
echo "ok: without NAT the client reaches 10.66.{2,3,4}.2:80 directly"

# The NAT rule, in the router's own namespace (the host's tables are untouched):
# iptables (nft or legacy backend), else nft itself.
nat_rule=(-t nat -A PREROUTING -p tcp -s 10.66.1.2 --dport 80 -j REDIRECT --to-ports 7000)
if in_rtr iptables "${nat_rule[@]}" 2>"$work/nat.err"; then
  nat="iptables"
elif command -v iptables-legacy >/dev/null &&
  in_rtr iptables-legacy "${nat_rule[@]}" 2>>"$work/nat.err"; then
  nat="iptables-legacy"
elif command -v nft >/dev/null && in_rtr nft -f - 2>>"$work/nat.err" <<'EOF'
table ip ferrytest {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip saddr 10.66.1.2 tcp dport 80 redirect to :7000
  }
}
EOF
then
  nat="nft"
else
  echo "skip: neither iptables nor nft can add a REDIRECT rule here:" \
    "$(tr '\n' ' ' <"$work/nat.err")"
  exit 77
fi

cat >"$work/ferry.yaml" <<'EOF'
admin: { listen: "127.0.0.1:9901" }
rules:
  - name: tp
    listen: "0.0.0.0:7000"
    transparent: redirect
    targets: ["10.66.4.2:80"]
    allow_targets: ["10.66.2.0/24"]
EOF
# Debug level: the "not redirected" refusal is logged at debug.
# Started with `ip netns exec` itself (not a shell function, which would fork a
# subshell): it execs ferry, so $! is ferry's PID.
ip netns exec "$rtr" "$FERRY" run --config "$work/ferry.yaml" --log-level debug \
  >"$work/ferry.log" 2>&1 &
ferry_pid=$!
pids+=("$ferry_pid")
# Until reaped, an exited child is a zombie that `kill -0` still finds.
alive() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $st != Z* ]]; }

scrape() { in_rtr curl -sf --max-time 2 http://127.0.0.1:9901/metrics; }
# metric NAME LABEL=VALUE...: the value of the one series with those labels,
# in whatever order the exporter writes them; empty when there is none.
metric() {
  local name=$1 text
  shift
  text=$(scrape) || return 0
  awk -v name="$name" -v want="$*" '
    BEGIN { n = split(want, w, " ") }
    index($0, name "{") == 1 {
      ok = 1
      for (i = 1; i <= n; i++) {
        split(w[i], kv, "=")
        if (index($0, kv[1] "=\"" kv[2] "\"") == 0) ok = 0
      }
      if (ok) { printf "%.17g\n", $NF; found++ }
    }
    END { if (found > 1) print "ambiguous" }' <<<"$text"
}
# wait_metric WANT NAME LABEL=VALUE...: poll (bounded) until the series is WANT.
wait_metric() {
  local want=$1 got=""
  shift
  for _ in $(seq 1 50); do
    got=$(metric "$@")
    [[ $got == "$want" ]] && return 0
    sleep 0.1
  done
  fail "$* is \"$got\", want $want"
}

# Wait (bounded) until ferry is ready; connecting to port 7000 to find out
# would itself count as a connection.
for i in $(seq 1 100); do
  in_rtr curl -sf --max-time 1 -o /dev/null http://127.0.0.1:9901/readyz && break
  alive "$ferry_pid" || fail "ferry exited at start"
  [[ $i == 100 ]] && fail "ferry's admin endpoint did not become ready"
  sleep 0.1
done
grep -q 'msg="listening"' "$work/ferry.log" || fail "ferry did not log its listener"
for o in ok denied no_endpoint; do
  [[ $(metric ferry_connections_total rule=tp outcome=$o) == 0 ]] ||
    fail "outcome $o is not 0 before any client"
done
echo "ok: ferry ready on 7000, NAT by $nat"

# 1. Redirected to an allowed destination: relayed by ferry, 1 MiB intact.
size=$((1 << 20))
head -c "$size" /dev/urandom >"$work/data"
in_cli timeout 30 socat -b65536 -t10 - TCP:10.66.2.2:80,connect-timeout=2 \
  <"$work/data" >"$work/back" 2>"$work/client.err" || true
# Through ferry the server's peer is the router's address, not the client's.
head -1 "$work/back" | grep -qx "S2 10.66.2.1" ||
  fail "server greeting \"$(head -1 "$work/back" | head -c 40 | tr -dc '[:print:]')\"," \
    "want \"S2 10.66.2.1\" (peer = ferry)"
want=$({ echo "S2 10.66.2.1"; cat "$work/data"; } | sha256sum | cut -d' ' -f1)
got=$(sha256sum <"$work/back" | cut -d' ' -f1)
[[ $want == "$got" ]] ||
  fail "echo through ferry: $(stat -c %s "$work/back") bytes back of $((size + 13))," \
    "hash differs; client: $(head -c 200 "$work/client.err")"
wait_metric 1 ferry_connections_total rule=tp outcome=ok
wait_metric "$size" ferry_bytes_total rule=tp endpoint=10.66.2.0/24 direction=to_target
wait_metric $((size + 13)) ferry_bytes_total rule=tp endpoint=10.66.2.0/24 direction=to_client
echo "ok: 10.66.2.2:80 redirected through ferry, 1 MiB intact, counted under 10.66.2.0/24"

# 2. Redirected to a `targets` endpoint: relayed, counted under its IP:PORT.
out=$(ask 10.66.4.2:80)
[[ $out == "S4 10.66.4.1" ]] ||
  fail "redirected client of 10.66.4.2:80 (a targets endpoint) got \"$out\", want \"S4 10.66.4.1\""
wait_metric 2 ferry_connections_total rule=tp outcome=ok
wait_metric 6 ferry_bytes_total rule=tp endpoint=10.66.4.2:80 direction=to_target
echo "ok: 10.66.4.2:80 (a targets endpoint) redirected through ferry, counted under 10.66.4.2:80"

# 3. Redirected to a destination the rule does not name: closed, never relayed.
out=$(ask 10.66.3.2:80)
[[ -z $out ]] || fail "redirected client of 10.66.3.2:80 (not allowed) got \"$out\""
wait_metric 1 ferry_connections_total rule=tp outcome=denied
[[ ! -e $work/s3.hits ]] || fail "10.66.3.2:80 was reached although the rule does not allow it"
grep -q 'msg="redirected destination not allowed".*destination=10.66.3.2:80' "$work/ferry.log" ||
  fail "no log line 'redirected destination not allowed' naming 10.66.3.2:80"
echo "ok: 10.66.3.2:80 (not allowed) closed, outcome denied, logged"

# 4. Straight to ferry's port, no NAT: nothing to relay to, closed.
out=$(ask 10.66.1.1:7000)
[[ -z $out ]] || fail "a client connecting straight to ferry got \"$out\""
wait_metric 1 ferry_connections_total rule=tp outcome=no_endpoint
grep -q 'msg="connection was not redirected".*client=10.66.1.2:' "$work/ferry.log" ||
  fail "no log line 'connection was not redirected' for 10.66.1.2"
echo "ok: a connection straight to 10.66.1.1:7000 closed, outcome no_endpoint, logged"

# Nothing else was counted: each refusal left the relay counters alone.
[[ $(metric ferry_connections_total rule=tp outcome=ok) == 2 ]] ||
  fail "outcome ok moved after check 2"
[[ $(metric ferry_connections_total rule=tp outcome=denied) == 1 ]] ||
  fail "outcome denied moved after check 3"
[[ $(metric ferry_bytes_total rule=tp endpoint=10.66.2.0/24 direction=to_target) == "$size" ]] ||
  fail "bytes to_target of 10.66.2.0/24 moved after check 1"
alive "$ferry_pid" || fail "ferry exited"

# SIGTERM: ferry drains and exits 0 (a sanitizer build would report here).
kill -TERM "$ferry_pid"
for i in $(seq 1 100); do
  alive "$ferry_pid" || break
  [[ $i == 100 ]] && fail "ferry still running 10 s after SIGTERM"
  sleep 0.1
done
rc=0
wait "$ferry_pid" || rc=$?
[[ $rc == 0 ]] || fail "ferry exited $rc after SIGTERM"
grep -q 'msg="drained"' "$work/ferry.log" || fail "ferry did not log that it drained"
if grep -qE 'Sanitizer|runtime error' "$work/ferry.log"; then
  fail "sanitizer report in ferry's log"
fi
echo "ok: ferry drained and exited 0 on SIGTERM"

echo "e2e redirect: all checks passed"
