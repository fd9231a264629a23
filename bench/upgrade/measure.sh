#!/usr/bin/env bash
# bench/upgrade/measure.sh: runs e2e/upgrade_test.sh many times per setting
# and counts the runs in which a client was refused or reset.
#
# Usage: bench/upgrade/measure.sh [--runs N] [--settings "MIGRATE:DELAY ..."]
#                                 [--ferry BINARY] [--label TEXT] [--logs DIR] [--loss PCT]
#   --runs N        runs per setting (default 20)
#   --settings      net.ipv4.tcp_migrate_req value and drain.delay pairs
#                   (default "0:0s 0:1s 1:0s 1:1s")
#   --ferry BINARY  the ferry to upgrade (default $FERRY_BINARY)
#   --label TEXT    printed in every result line (e.g. which build)
#   --logs DIR      keep the logs of each failed run under DIR
#   --loss PCT      drop PCT% of the handshake ACKs and of the first data
#                   packets the clients send to the relay's port (nftables and
#                   conntrack, in the private namespace only): when both are
#                   lost the server side stays in SYN_RECV until the client
#                   retransmits (200 ms), as handshakes in flight on a real
#                   network do, where loopback completes them at once. Fixes the
#                   relay's port (4000) and runs 64 clients.
#
# Needs root. Every run happens in a private network namespace made here, so
# the sysctl is that namespace's own (net.ipv4.tcp_migrate_req is per
# namespace) and the host's value never changes. Where namespaces are not
# available it sets the host's value and restores it on exit.
# Output: one line per run, then one summary line per setting:
#   summary label=.. migrate_req=M delay=D runs=N failed=F refused=.. reset=.. eof=.. timeout=..
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
test_script=$here/../../e2e/upgrade_test.sh

runs=20
settings="0:0s 0:1s 1:0s 1:1s"
ferry=${FERRY_BINARY:-}
label=-
logs=
loss=0
while (($#)); do
  case $1 in
    --runs) runs=${2:?--runs needs a value}; shift 2 ;;
    --settings) settings=${2:?--settings needs a value}; shift 2 ;;
    --ferry) ferry=${2:?--ferry needs a value}; shift 2 ;;
    --label) label=${2:?--label needs a value}; shift 2 ;;
    --logs) logs=${2:?--logs needs a value}; shift 2 ;;
    --loss) loss=${2:?--loss needs a value}; shift 2 ;;
    *) echo "measure.sh: unknown argument \"$1\"" >&2; exit 2 ;;
  esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "measure.sh: --runs: want a positive integer, got \"$runs\"" >&2; exit 2; }
[[ -x $ferry ]] || { echo "measure.sh: --ferry (or FERRY_BINARY): \"$ferry\" is not an executable" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "measure.sh: needs root (sysctl, network namespace)" >&2; exit 2; }
[[ $loss =~ ^[0-9]$|^[1-9][0-9]$ ]] || { echo "measure.sh: --loss: want 0..99, got \"$loss\"" >&2; exit 2; }
for s in $settings; do
  [[ $s =~ ^[01]:[0-9]+(ms|s)$ ]] || { echo "measure.sh: bad setting \"$s\": want MIGRATE:DELAY like 1:0s" >&2; exit 2; }
done

work=$(mktemp -d)
ns=ferryupg$$
use_ns=0
original=$(cat /proc/sys/net/ipv4/tcp_migrate_req)
cleanup() {
  [[ $use_ns == 1 ]] && ip netns del "$ns" 2>/dev/null
  [[ $use_ns == 0 ]] && echo "$original" >/proc/sys/net/ipv4/tcp_migrate_req
  rm -rf "$work"
}
trap cleanup EXIT
if ip netns add "$ns" 2>/dev/null; then
  if ip -n "$ns" link set lo up 2>/dev/null; then
    use_ns=1
  else
    ip netns del "$ns" 2>/dev/null || true
  fi
fi
in_place() { if [[ $use_ns == 1 ]]; then ip netns exec "$ns" "$@"; else "$@"; fi; }
test_env=()
if (( loss > 0 )); then
  [[ $use_ns == 1 ]] || { echo "measure.sh: --loss needs a private network namespace" >&2; exit 2; }
  command -v nft >/dev/null || { echo "measure.sh: --loss needs nft" >&2; exit 2; }
  ip netns exec "$ns" sysctl -qw net.netfilter.nf_conntrack_acct=1
  # Packets 2 and 3 of a connection: the handshake's ACK and the first data.
  ip netns exec "$ns" nft -f - <<EOF
table inet ferryupg {
  chain input {
    type filter hook input priority 0;
    tcp dport 4000 ct original packets 2-3 numgen random mod 100 < $loss drop
  }
}
EOF
  test_env=(UPGRADE_LISTEN_PORT=4000 UPGRADE_CONCURRENCY=64)
fi

g++ -O2 -std=c++17 -o "$work/upgrade_load" "$here/upgrade_load.cc"
echo "# ferry=$ferry label=$label loss=$loss% namespace=$([[ $use_ns == 1 ]] && echo "$ns" || echo host) kernel=$(uname -r)"

for s in $settings; do
  migrate=${s%%:*}
  delay=${s#*:}
  in_place sh -c "echo $migrate >/proc/sys/net/ipv4/tcp_migrate_req"
  failed=0 refused=0 reset=0 eof=0 timeout=0
  for ((r = 1; r <= runs; r++)); do
    keep=
    [[ -n $logs ]] && keep=$logs/$label-m$migrate-d$delay-run$r
    rc=0
    out=$(in_place env "${test_env[@]}" FERRY_BINARY="$ferry" UPGRADE_LOAD_BINARY="$work/upgrade_load" \
      UPGRADE_DRAIN_DELAY="$delay" UPGRADE_KEEP_LOGS="$keep" timeout 120 "$test_script" 2>&1) || rc=$?
    line=$(grep '^upgrade:' <<<"$out" || echo "upgrade: no result (exit $rc): $(tail -3 <<<"$out" | tr '\n' ' ')")
    echo "run label=$label loss=$loss migrate_req=$migrate delay=$delay run=$r exit=$rc ${line#upgrade: }"
    [[ $rc == 0 ]] || failed=$((failed + 1))
    for k in refused reset eof timeout; do
      v=$(grep -o " $k=[0-9]*" <<<"$line" | cut -d= -f2 || true)
      printf -v "$k" '%d' $(( ${!k} + ${v:-0} ))
    done
  done
  echo "summary label=$label loss=$loss migrate_req=$migrate delay=$delay runs=$runs failed=$failed" \
    "refused=$refused reset=$reset eof=$eof timeout=$timeout"
done
