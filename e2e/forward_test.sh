#!/usr/bin/env bash
# End to end, across hosts: a client host and a server host, each a network
# namespace joined to the relay's host by a veth pair, with real clients
# (socat, sha256sum) and the real ferry binary.
#
#   client ns 10.77.1.2 --- 10.77.1.1 [ferry] 10.77.2.1 --- 10.77.2.2 server ns
#
# Checks: 16 MiB each way arrive intact through the relay; a second client
# address on a denied CIDR is refused while the allowed one relays; half-close
# (the client's EOF reaches the server, whose reply still arrives).
# Needs root (ip netns); exits 77 (skipped) otherwise.
set -euo pipefail
FERRY=${FERRY_BINARY:?set FERRY_BINARY to the ferry binary}
[[ $(id -u) == 0 ]] || { echo "skip: needs root for ip netns"; exit 77; }
command -v ip >/dev/null && command -v socat >/dev/null || { echo "skip: needs ip and socat"; exit 77; }

# A sandbox may add namespaces but not enter them (a chroot whose / is not a
# mount point): probe before building anything.
if ! awk '$5 == "/" {found=1} END {exit !found}' /proc/self/mountinfo; then
  echo "skip: / is not a mount point (a chroot): no network namespaces"
  exit 77
fi
probe=fep$$
ip netns add "$probe" 2>/dev/null || { echo "skip: cannot add a network namespace"; exit 77; }
if ! ip -n "$probe" link set lo up 2>/dev/null; then
  ip netns del "$probe" 2>/dev/null || true
  echo "skip: cannot enter a network namespace here"
  exit 77
fi
ip netns del "$probe"

tag=fe$$
cli=${tag}c srv=${tag}s
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$cli" 2>/dev/null || true
  ip netns del "$srv" 2>/dev/null || true
  ip link del "${tag}a" 2>/dev/null || true
  ip link del "${tag}b" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [[ -f $work/ferry.log ]] && tail -20 "$work/ferry.log" >&2; exit 1; }

ip netns add "$cli"
ip netns add "$srv"
ip link add "${tag}a" type veth peer name "${tag}ap" netns "$cli"
ip link add "${tag}b" type veth peer name "${tag}bp" netns "$srv"
ip addr add 10.77.1.1/24 dev "${tag}a"
ip addr add 10.77.2.1/24 dev "${tag}b"
ip link set "${tag}a" up
ip link set "${tag}b" up
ip -n "$cli" addr add 10.77.1.2/24 dev "${tag}ap"
ip -n "$cli" addr add 10.77.1.3/24 dev "${tag}ap"
ip -n "$srv" addr add 10.77.2.2/24 dev "${tag}bp"
for ns in "$cli" "$srv"; do ip -n "$ns" link set lo up; done
ip -n "$cli" link set "${tag}ap" up
ip -n "$srv" link set "${tag}bp" up

# The server host: echo on 9000; "read all, then reply" on 9001.
ip netns exec "$srv" socat TCP-LISTEN:9000,bind=10.77.2.2,fork,reuseaddr EXEC:cat &
pids+=($!)
ip netns exec "$srv" socat TCP-LISTEN:9001,bind=10.77.2.2,fork,reuseaddr \
  SYSTEM:'cat >/dev/null; echo reply-after-eof' &
pids+=($!)

"$FERRY" forward --name echo --deny 10.77.1.3/32 10.77.1.1:8000 10.77.2.2:9000 \
  >"$work/ferry.log" 2>&1 &
pids+=($!)
"$FERRY" forward --name half 10.77.1.1:8001 10.77.2.2:9001 >>"$work/ferry.log" 2>&1 &
pids+=($!)

# Wait (bounded) until both relays and servers answer.
for i in $(seq 1 100); do
  ip netns exec "$cli" socat -u OPEN:/dev/null TCP:10.77.1.1:8001,connect-timeout=1 2>/dev/null && break
  sleep 0.1
  [[ $i == 100 ]] && fail "relay did not come up"
done

# 1. 16 MiB through the echo: what comes back is what went out.
head -c $((16 << 20)) /dev/urandom >"$work/data"
ip netns exec "$cli" timeout 60 socat -b65536 -t10 - TCP:10.77.1.1:8000,bind=10.77.1.2 \
  <"$work/data" >"$work/back" 2>/dev/null || true
want=$(sha256sum <"$work/data" | cut -d' ' -f1)
got=$(sha256sum <"$work/back" | cut -d' ' -f1)
[[ $want == "$got" ]] || fail "echo through ferry: $(stat -c %s "$work/back") bytes back, hash differs"
echo "ok: 16 MiB echoed intact across namespaces"

# 2. The denied client address gets nothing relayed.
out=$(echo denied | ip netns exec "$cli" timeout 10 socat -t2 - TCP:10.77.1.1:8000,bind=10.77.1.3 2>/dev/null || true)
[[ -z $out ]] || fail "denied client got a reply: $out"
out=$(echo allowed | ip netns exec "$cli" timeout 10 socat -t2 - TCP:10.77.1.1:8000,bind=10.77.1.2 2>/dev/null || true)
[[ $out == allowed ]] || fail "allowed client got \"$out\""
echo "ok: --deny refuses 10.77.1.3, 10.77.1.2 relays"

# 3. Half-close: the server replies only after the client's EOF reached it.
out=$(echo request | ip netns exec "$cli" timeout 10 socat -t5 - TCP:10.77.1.1:8001 2>/dev/null || true)
[[ $out == reply-after-eof ]] || fail "half-close: got \"$out\""
echo "ok: the client's FIN crossed the relay and the reply came back"

echo "e2e forward: 3 passed, 0 failed"
