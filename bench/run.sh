#!/usr/bin/env bash
# bench/run.sh: ferry against the classic relays, side by side, on loopback.
#
# Usage: bench/run.sh [--quick] [--reps N] [--relays "direct ferry ..."]
#                     [--skip-build | --ferry BINARY] [--no-study | --no-figures]
#                     [--out FILE] [--keep]
#
# --ferry BINARY measures that binary instead of building one (to compare two
# builds); --no-figures runs only the copy-vs-splice study.
#
# Builds the release binary (scripts/build.sh release) and the helpers in
# bench/*.cc (g++ -O2), then measures, on 127.0.0.1 only, for each relay
#   direct (no relay), ferry, socat, rinetd, haproxy (2.6, tcp mode),
#   haproxy-splice (option splice-request + splice-response), nginx (stream)
# these figures:
#   1. bulk throughput, 1 and 8 streams: bench/bulk.cc, a sendfile() source
#      and a recv(MSG_TRUNC) sink, so the endpoints copy nothing and the relay
#      is what limits; also 1 stream with every process on one core, and
#      1 stream of iperf3 (ordinary copying endpoints) as a cross-check;
#   2. round-trip time p50/p99 of 64-byte messages on one connection per
#      relay (bench/pingpong.cc; one client interleaves all relays round by
#      round, so they share the same machine conditions);
#   3. new connections per second at concurrency 64: wrk -c64 -t1 with
#      "Connection: close" against nginx's http module (a 3-byte reply), so
#      every request is connect + request + reply + close through the relay;
#      also the relay's CPU time per connection;
#   4. user-space memory per idle connection: relay VmRSS with IDLE_N (9,000)
#      idle connections open minus before, / IDLE_N (bench/idle.cc);
#   5. relay CPU seconds per GiB (utime+stime) during the 1-stream bulk run.
# Pinning: the relay on CPU 1 (taskset -c 1), load generators and servers on
# CPU 0; ferry --workers 1, HAProxy nbthread 1, nginx one worker. "one core":
# the relay on CPU 0 with everything else.
# Then, for ferry alone, copy vs splice: bulk with splice() refused by a
# seccomp filter (bench/nosplice.cc), and ping-pong of 64 B..32 KiB messages
# on fresh (copy) and bulk-primed (splice) connections.
#
# Noise control (this is a shared 2-vCPU VM; see docs/benchmarks.md): each
# figure measures every relay once per repetition, relays interleaved, REPS
# (3; 5 for conn/s) times. Before each measurement it waits (90 s in all at
# most) for both CPUs to be idle; after it, it computes the CPU used by
# processes outside its own tree ("foreign") and probes the host mode (the
# cross-CPU round trip, which flips between ~6 and ~17 µs and moves every
# figure with it). The median over clean, fast-mode repetitions is reported;
# ‡: only slow-mode ones were clean; †: none was clean. A spoiled measurement
# is retried once (20 retries in all).
#
# Every process it starts is killed by PID on exit; every wait is bounded.
# Prints the markdown report on stdout; progress to stderr; raw lines are kept
# in the work directory with --keep.
set -euo pipefail

cmdline="bench/run.sh${*:+ $*}"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
quick=0 build=1 study=1 figures=1 keep=0 out_file="" reps="" ferry_bin=""
relays="direct ferry socat rinetd haproxy haproxy-splice nginx"
while (($#)); do
  case $1 in
    --quick) quick=1 ;;
    --reps) reps=$2; shift ;;
    --relays) relays=$2; shift ;;
    --skip-build) build=0 ;;
    --no-study) study=0 ;;
    --no-figures) figures=0 ;;
    --ferry) ferry_bin=$2; build=0; shift ;;
    --out) out_file=$2; shift ;;
    --keep) keep=1 ;;
    -h | --help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# Durations and sizes: the full run stays under ~10 minutes.
if ((quick)); then
  BULK_T=1 IPERF_T=1 WRK_T=1 RTT_N=2000 IDLE_N=500 STUDY_N=1000 REPS=${reps:-1} CONN_REPS=${reps:-1}
else
  BULK_T=1.5 IPERF_T=1 WRK_T=1 RTT_N=10000 IDLE_N=9000 STUDY_N=5000 REPS=${reps:-3} CONN_REPS=${reps:-5}
fi
IDLE_WITHIN=30           # seconds to open the idle connections (rinetd is O(n) per event)
FOREIGN_MAX=0.05         # share of both CPUs used by others that spoils a rep
SLOW_FACTOR=1.5          # probe RTT above this times the run's fastest: slow host mode
QUIET_BUDGET=90          # seconds, in all, spent waiting for others to finish
retries_left=20          # measurements repeated because others' work or slow mode spoiled them
RELAY_CPU=1 LOAD_CPU=0
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)
start_time=$SECONDS

work=$(mktemp -d /tmp/ferry-bench.XXXXXX)
bin=$work/bin
mkdir -p "$bin" "$work/logs" "$work/conf"
raw=$work/raw.txt
: >"$raw"
declare -a pids=()

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

descendants() {  # PID -> every descendant PID (one ps for the whole tree)
  ps -e -o pid=,ppid= | awk -v root="$1" '
    { parent[$1] = $2 }
    END {
      mine[root] = 1
      do {
        changed = 0
        for (p in parent) if (!(p in mine) && (parent[p] in mine)) { mine[p] = 1; changed = 1 }
      } while (changed)
      for (p in mine) if (p != root) print p
    }'
}

# stop_pid PID: TERM it and its descendants, KILL what is left after 2 s.
# Only a PID that is still this shell's child is touched (a recorded PID that
# already ended may have been reused by someone else's process).
stop_pid() {
  local pid=$1 all p i alive keep_pids=()
  [[ -n $pid ]] || return 0
  for p in "${pids[@]}"; do [[ $p == "$pid" ]] || keep_pids+=("$p"); done
  pids=("${keep_pids[@]}")
  [[ $(ps -o ppid= -p "$pid" 2>/dev/null | tr -d ' ') == "$$" ]] || { wait "$pid" 2>/dev/null; return 0; }
  all="$pid $(descendants "$pid" | tr '\n' ' ')"
  for p in $all; do kill -TERM "$p" 2>/dev/null || true; done
  for ((i = 0; i < 20; i++)); do
    alive=0
    for p in $all; do kill -0 "$p" 2>/dev/null && alive=1 && break; done
    ((alive)) || break
    sleep 0.1
  done
  for p in $all; do kill -0 "$p" 2>/dev/null && { kill -KILL "$p" 2>/dev/null || true; }; done
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local p
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do stop_pid "$p"; done
  pids=()
  if ((keep)); then log "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# spawn CPU NAME CMD...: runs CMD pinned to CPU in the background; sets SPAWNED.
spawn() {
  local cpu=$1 name=$2
  shift 2
  taskset -c "$cpu" "$@" >"$work/logs/$name.out" 2>"$work/logs/$name.err" &
  SPAWNED=$!
  pids+=("$SPAWNED")
}

wait_port() {  # PORT: until something listens on it (5 s at most)
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -n $(ss -Htln "sport = :$1" 2>/dev/null) ]] && return 0
    sleep 0.05
  done
  log "nothing listens on port $1 after 5 s"
  return 1
}

cpu_ns() {  # PID -> CPU ns of its live threads (schedstat) + its reaped children
  local pid=$1 t=0 f a rest stat
  for f in /proc/"$pid"/task/*/schedstat; do
    read -r a rest <"$f" 2>/dev/null && t=$((t + a))
  done
  read -r stat 2>/dev/null <"/proc/$pid/stat" || { echo "$t"; return 0; }
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat  # $1 is field 3 (state); cutime, cstime are fields 16, 17
  echo $((t + (${14} + ${15}) * 1000000000 / CLK_TCK))
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

pss_tree_kb() {  # PID -> Pss (kB) of it and its descendants (socat forks per connection)
  local p k v rest sum=0
  for p in "$1" $(descendants "$1"); do
    while read -r k v rest; do
      [[ $k == Pss: ]] && { sum=$((sum + v)); break; }
    done 2>/dev/null <"/proc/$p/smaps_rollup" || true
  done
  echo "$sum"
}

# --- noise control -----------------------------------------------------------
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8; exit}' /proc/stat; }

# own_snapshot FILE: "pid ticks" (utime+stime+cutime+cstime) for every live
# process of this shell's tree, which holds what it has reaped too. Kernel
# threads (children of kthreadd, pid 2: ksoftirqd, kworkers) count as ours:
# under load they run the loopback traffic's softirqs.
own_snapshot() {
  local p line rest
  ps -e -o pid=,ppid= | awk -v roots="$$ 2 ${pids[*]}" '
    { parent[$1] = $2 }
    END {
      n = split(roots, r, " ")
      for (i = 1; i <= n; i++) mine[r[i]] = 1
      do {
        changed = 0
        for (p in parent) if (!(p in mine) && (parent[p] in mine)) { mine[p] = 1; changed = 1 }
      } while (changed)
      for (p in mine) print p
    }' | while read -r p; do
    # Read in the shell: a process can end between ps and here.
    read -r line 2>/dev/null <"/proc/$p/stat" || continue
    rest=${line##*) }
    # shellcheck disable=SC2086
    set -- $rest  # $1 is field 3; utime, stime, cutime, cstime are fields 14-17
    echo "$p $((${12} + ${13} + ${14} + ${15}))"
  done >"$1"
}
# own_delta A B: ticks our processes used between two snapshots: the growth
# of those in both, all of those new in B. One that ended unreaped by us (a
# kernel worker) drops out instead of taking its whole lifetime with it.
own_delta() {
  awk 'NR == FNR {t0[$1] = $2; next} {d += ($1 in t0) ? $2 - t0[$1] : $2} END {print d + 0}' "$1" "$2"
}

quiet_waited=0
wait_quiet() {  # until both CPUs were <10% busy for 0.3 s (bounded)
  local b0 b1 start=$SECONDS share
  while ((quiet_waited < QUIET_BUDGET)); do
    b0=$(busy_ticks)
    sleep 0.3
    b1=$(busy_ticks)
    share=$(awk -v d=$((b1 - b0)) -v t="$CLK_TCK" -v n="$NCPU" 'BEGIN {printf "%.2f", d / (0.3 * t * n)}')
    awk -v s="$share" 'BEGIN {exit !(s < 0.10)}' && break
    ((SECONDS - start < 1)) && log "waiting for other work to finish (CPUs ${share} busy)"
    sleep 1
    quiet_waited=$((quiet_waited + SECONDS - start))
    start=$SECONDS
  done
  return 0
}

# Host mode. On this kind of VM the cost of waking a vCPU from another one
# (IPI, exit, halt) flips between two levels every few seconds, under no load
# of ours: a cross-CPU 64-byte round trip (client on CPU 0, echo on CPU 1)
# takes ~7 or ~17 µs, and every relay's RTT, conn/s and CPU per byte moves by
# up to 2x with it. probe_us measures it (300 round trips, ~5 ms) before and
# after each measurement; a sample whose probe is above SLOW_FACTOR times the
# fastest probe of the run counts as slow mode and is used only if no
# fast-mode sample exists (marked ‡).
probe_us() {
  timeout 10 taskset -c $LOAD_CPU "$bin/pingpong" client -n 300 -w 50 "127.0.0.1:$P_PROBE" |
    sed -n 's/.*p50_us=\([0-9.]*\).*/\1/p'
}

win_begin() { W_PROBE=$(probe_us); W_BUSY=$(busy_ticks); own_snapshot "$work/own0"; W_T=$(date +%s%N); }
win_end() {  # sets FOREIGN (share of all CPUs others used) and PROBE (the slower probe)
  local busy own t p
  busy=$(busy_ticks) t=$(date +%s%N)
  own_snapshot "$work/own1"
  own=$(own_delta "$work/own0" "$work/own1")
  p=$(probe_us)
  FOREIGN=$(awk -v b=$((busy - W_BUSY)) -v o="$own" -v ns=$((t - W_T)) -v tk="$CLK_TCK" \
    -v n="$NCPU" 'BEGIN {f = (b - o) / (ns / 1e9 * tk * n); if (f < 0) f = 0; printf "%.3f", f}')
  PROBE=$(awk -v a="${W_PROBE:-999}" -v b="${p:-999}" 'BEGIN {print (a > b ? a : b)}')
  awk -v p="$PROBE" -v m="${PROBE_MIN:-999}" 'BEGIN {exit !(p < m)}' && PROBE_MIN=$PROBE
  return 0
}
# spoiled: the last window had others' work or a probe clearly in slow mode.
spoiled() {
  awk -v f="$FOREIGN" -v m="$FOREIGN_MAX" -v p="$PROBE" -v pm="$PROBE_MIN" -v k="$SLOW_FACTOR" \
    'BEGIN {exit !(f > m || p > k * pm)}'
}

# --- build -------------------------------------------------------------------
if ((build)); then
  log "building ferry (scripts/build.sh release)"
  "$root/scripts/build.sh" release >"$work/logs/build.log" 2>&1 || {
    cat "$work/logs/build.log" >&2
    exit 1
  }
fi
ferry=${ferry_bin:-$root/build/release/cmd/ferry/ferry}
[[ -x $ferry ]] || { echo "run.sh: no $ferry (build it or drop --skip-build)" >&2; exit 1; }
ferry=$(cd "$(dirname "$ferry")" && pwd)/$(basename "$ferry")
ferry_version=$("$ferry" version 2>/dev/null || echo "ferry (unknown version)")
# Builds with --admin export ferry_pump_bytes_total{mode}: the study then
# reports how many bytes each connection really spliced.
ferry_admin=0
"$ferry" forward --help 2>/dev/null | grep -q -- '--admin' && ferry_admin=1
for tool in pingpong bulk idle nosplice; do
  g++ -O2 -std=c++17 -pthread -o "$bin/$tool" "$root/bench/$tool.cc"
done

need() { command -v "$1" >/dev/null 2>&1; }
nginx_stream_module=""
for m in /usr/lib/nginx/modules/ngx_stream_module.so /usr/share/nginx/modules/ngx_stream_module.so; do
  [[ -f $m ]] && nginx_stream_module=$m && break
done
have_relay() {
  case $1 in
    direct | ferry) return 0 ;;
    socat) need socat ;;
    rinetd) need rinetd ;;
    haproxy | haproxy-splice) need haproxy ;;
    nginx) need nginx && [[ -n $nginx_stream_module ]] ;;
    *) return 1 ;;
  esac
}
selected=""
for r in $relays; do
  if have_relay "$r"; then selected+="$r "; else log "skipping $r: unknown or not installed"; fi
done
selected=${selected% }
have_iperf=0 have_wrk=0
need iperf3 && have_iperf=1 || log "iperf3 missing: no iperf3 column"
need wrk && need nginx && have_wrk=1 || log "wrk or nginx missing: no connections/s column"

# The hard fd limit bounds the idle test: a relayed connection holds 2 fds.
ulimit -n "$(ulimit -Hn)"
if (($(ulimit -n) < 2 * IDLE_N + 200)); then
  IDLE_N=$((($(ulimit -n) - 200) / 2))
  log "fd limit $(ulimit -n): idle test with $IDLE_N connections"
fi

# Ports: a block of 100 free ones outside the kernel's ephemeral range (the
# relays' outgoing connections would take ports inside it): servers base+0..9,
# relays base+10.. . Checked against every socket on the machine.
read -r eph_lo eph_hi </proc/sys/net/ipv4/ip_local_port_range
block_free() {
  ss -Htan | awk -v lo="$1" '{n = split($4, a, ":"); p = a[n] + 0; if (p >= lo && p < lo + 100) bad = 1}
    END {exit bad}'
}
base=""
for b in $(seq $(((eph_hi / 100 + 1) * 100)) 200 65400) $(seq 20000 1000 $((eph_lo - 200))); do
  ((b + 100 <= eph_lo || b > eph_hi)) || continue
  if block_free "$b"; then base=$b; break; fi
done
[[ -n $base ]] || { echo "run.sh: no free block of 100 ports outside $eph_lo-$eph_hi" >&2; exit 1; }
P_SINK=$base P_ECHO=$((base + 1)) P_HTTP=$((base + 2)) P_IDLE=$((base + 3)) P_IPERF=$((base + 4))
P_PROBE=$((base + 5))
next_port=$((base + 10))
new_port() {
  ((next_port < base + 100)) || { echo "run.sh: out of ports in $base..$((base + 99))" >&2; exit 1; }
  PORT=$next_port
  next_port=$((next_port + 1))
}

# --- relays ------------------------------------------------------------------
# start_relay KIND CPU TARGET_PORT: starts one relay; sets RP[KIND] (where
# clients connect), PID[KIND] (what to stop; "" for direct) and MPID[KIND]
# (whose CPU and memory to measure).
declare -A RP=() PID=() MPID=()
start_relay() {
  local kind=$1 cpu=$2 target=$3 conf pid port
  if [[ $kind == direct ]]; then
    RP[$kind]=$target PID[$kind]="" MPID[$kind]=""
    return 0
  fi
  new_port
  port=$PORT
  conf=$work/conf/$kind-$port
  local fwd=("$ferry" forward "127.0.0.1:$port" "127.0.0.1:$target" --workers 1 --log-level warn
    ${FERRY_EXTRA[@]+"${FERRY_EXTRA[@]}"})
  case $kind in
    ferry) spawn "$cpu" "ferry-$port" "${fwd[@]}" ;;
    ferry-copy) spawn "$cpu" "ferry-copy-$port" "$bin/nosplice" -- "${fwd[@]}" ;;
    ferry-filter) spawn "$cpu" "ferry-filter-$port" "$bin/nosplice" --control -- "${fwd[@]}" ;;
    socat)
      spawn "$cpu" "socat-$port" socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" \
        "TCP:127.0.0.1:$target" ;;
    rinetd)
      printf '127.0.0.1 %s 127.0.0.1 %s\n' "$port" "$target" >"$conf"
      spawn "$cpu" "rinetd-$port" rinetd -f -c "$conf" ;;
    haproxy | haproxy-splice)
      {
        # maxconn: room for the idle test; maxsock = 2*maxconn + 2*maxpipes + a few
        printf 'global\n  nbthread 1\n  maxconn %d\n  maxpipes 128\n' $((IDLE_N + 200))
        printf 'defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n'
        printf 'listen relay\n  bind 127.0.0.1:%s\n  server s1 127.0.0.1:%s\n' "$port" "$target"
        if [[ $kind == haproxy-splice ]]; then
          printf '  option splice-request\n  option splice-response\n'
        fi
      } >"$conf"
      spawn "$cpu" "$kind-$port" haproxy -db -f "$conf" ;;
    nginx)
      cat >"$conf" <<EOF
load_module $nginx_stream_module;
worker_processes 1;
master_process off;
daemon off;
pid $work/conf/nginx-$port.pid;
worker_rlimit_nofile $(ulimit -n);
error_log $work/logs/nginx-$port.log warn;
events { worker_connections $(($(ulimit -n) - 100)); }
stream { server { listen 127.0.0.1:$port; proxy_pass 127.0.0.1:$target; } }
EOF
      spawn "$cpu" "nginx-$port" nginx -p "$work" -e "$work/logs/nginx-$port.log" -c "$conf" ;;
    *) echo "unknown relay $kind" >&2; return 1 ;;
  esac
  pid=$SPAWNED
  RP[$kind]=$port PID[$kind]=$pid MPID[$kind]=$pid
  if ! wait_port "$port"; then
    log "$kind did not start: $(tail -2 "$work/logs/$kind-$port.err" | tr '\n' ' ')"
    stop_pid "$pid"
    PID[$kind]="" RP[$kind]=""
    return 1
  fi
}
stop_relay() {
  [[ -n ${PID[$1]:-} ]] && stop_pid "${PID[$1]}"
  PID[$1]="" RP[$1]=""
}

# --- servers (CPU 0, for the whole run) -------------------------------------
start_servers() {
  spawn $LOAD_CPU sink "$bin/bulk" sink "$P_SINK"
  spawn $LOAD_CPU echo "$bin/pingpong" server "$P_ECHO"
  spawn $LOAD_CPU idle-server "$bin/idle" server "$P_IDLE"
  spawn $RELAY_CPU probe "$bin/pingpong" server "$P_PROBE"
  wait_port "$P_SINK" && wait_port "$P_ECHO" && wait_port "$P_IDLE" && wait_port "$P_PROBE"
  if ((have_iperf)); then
    spawn $LOAD_CPU iperf3-server iperf3 -s -B 127.0.0.1 -p "$P_IPERF"
    wait_port "$P_IPERF"
  fi
  if ((have_wrk)); then
    cat >"$work/conf/http.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $work/conf/http.pid;
worker_rlimit_nofile 4096;
error_log $work/logs/http.log warn;
events { worker_connections 4000; }
http {
  access_log off;
  keepalive_timeout 0;
  server { listen 127.0.0.1:$P_HTTP backlog=4096; location / { return 200 "ok\n"; } }
}
EOF
    spawn $LOAD_CPU http nginx -p "$work" -e "$work/logs/http.log" -c "$work/conf/http.conf"
    wait_port "$P_HTTP"
  fi
}

# --- measurements: each prints its values on one line, or nothing ----------
m_bulk() {  # KIND STREAMS -> "gbps cpu_s_per_gib"
  local kind=$1 streams=$2 line c0="" c1 total mp=${MPID[$1]:-}
  [[ -n $mp ]] && c0=$(cpu_ns "$mp")
  line=$(timeout 60 taskset -c $LOAD_CPU "$bin/bulk" source 127.0.0.1 "${RP[$kind]}" \
    -P "$streams" -t "$BULK_T" -w 0.5) || return 0
  echo "$kind bulk P$streams: $line" >>"$raw"
  local gbps cpu=""
  gbps=$(sed -n 's/.*gbps=\([0-9.]*\).*/\1/p' <<<"$line")
  if [[ -n $mp ]]; then
    [[ $kind == socat ]] && sleep 0.5  # socat reaps its per-connection child
    c1=$(cpu_ns "$mp")
    total=$(sed -n 's/.*bytes_total=\([0-9]*\).*/\1/p' <<<"$line")
    cpu=$(awk -v c=$((c1 - c0)) -v b="$total" 'BEGIN {printf "%.3f", c / 1e9 / (b / 2^30)}')
  fi
  echo "$gbps ${cpu:-n/a}"
}

m_iperf() {  # KIND -> "gbps"
  local gbps
  gbps=$(timeout 30 taskset -c $LOAD_CPU iperf3 -c 127.0.0.1 -p "${RP[$1]}" -t "$IPERF_T" -f g 2>&1 |
    tee -a "$raw" | awk '/receiver/ {for (i = 1; i <= NF; i++) if ($i == "Gbits/sec") print $(i - 1)}') || true
  [[ -n $gbps ]] && echo "$gbps"
  return 0
}

m_conns() {  # KIND -> "conn_per_s relay_cpu_us_per_conn"
  local out rps n c0="" c1 mp=${MPID[$1]:-} us="n/a"
  [[ -n $mp ]] && c0=$(cpu_ns "$mp")
  out=$(timeout 30 taskset -c $LOAD_CPU wrk -c64 -t1 -d"${WRK_T}s" -H 'Connection: close' \
    "http://127.0.0.1:${RP[$1]}/" 2>&1) || return 0
  { echo "$1 wrk:"; echo "$out"; } >>"$raw"
  grep -qE 'Socket errors|Non-2xx' <<<"$out" &&
    log "$1 wrk: $(grep -E 'Socket errors|Non-2xx' <<<"$out" | tr -s ' ' | paste -sd ';')"
  rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  if [[ -n $mp && -n $n ]]; then
    [[ $1 == socat ]] && sleep 0.3
    c1=$(cpu_ns "$mp")
    us=$(awk -v c=$((c1 - c0)) -v n="$n" 'BEGIN {printf "%.1f", c / 1000 / n}')
  fi
  [[ -n $rps ]] && echo "$rps $us"
  return 0
}

# Results: V[KEY.KIND.REP] = "values... foreign".
declare -A V=()

# figure KEY MEASURE TARGET_PORT RELAY_CPU [ARGS]: every selected relay
# started at once, then FIG_REPS (default REPS) rounds that measure each relay
# in turn. A measurement spoiled by other work is retried once (RETRIES in all).
figure() {
  local key=$1 fn=$2 target=$3 cpu=$4 kind rep vals try
  shift 4
  local kinds="" k n=${FIG_REPS:-$REPS}
  for k in $selected; do start_relay "$k" "$cpu" "$target" && kinds+="$k "; done
  for ((rep = 1; rep <= n; rep++)); do
    for kind in $kinds; do
      for try in 1 2; do
        wait_quiet
        win_begin
        vals=$("$fn" "$kind" "$@") || vals=""
        win_end
        if [[ -z $vals ]]; then
          log "$key $kind rep $rep: failed"
          break
        fi
        V[$key.$kind.$rep]="$vals $FOREIGN $PROBE"
        log "$key $kind rep $rep: $vals (foreign CPU $FOREIGN, probe $PROBE µs)"
        spoiled && ((retries_left > 0)) || break
        retries_left=$((retries_left - 1))
      done
    done
  done
  for kind in $kinds; do stop_relay "$kind"; done
}

# RTT: one client, one connection per relay, round trips interleaved relay by
# relay (bench/pingpong.cc), REPS times.
figure_rtt() {
  local kind rep targets="" line p50 p99 k try out
  for k in $selected; do start_relay "$k" $RELAY_CPU "$P_ECHO" && targets+="$k=127.0.0.1:${RP[$k]} "; done
  for ((rep = 1; rep <= REPS; rep++)); do
    for try in 1 2; do
      wait_quiet
      win_begin
      out=$(timeout 120 taskset -c $LOAD_CPU "$bin/pingpong" client -n "$RTT_N" -s 64 -w 1000 \
        $(for t in $targets; do echo "${t#*=}"; done)) || out=""
      win_end
      echo "rtt rep $rep (foreign CPU $FOREIGN, probe $PROBE µs):" >>"$raw"
      echo "$out" >>"$raw"
      for t in $targets; do
        kind=${t%%=*}
        line=$(grep "target=${t#*=} " <<<"$out") || continue
        p50=$(sed -n 's/.*p50_us=\([0-9.]*\).*/\1/p' <<<"$line")
        p99=$(sed -n 's/.*p99_us=\([0-9.]*\).*/\1/p' <<<"$line")
        V[rtt.$kind.$rep]="$p50 $p99 $FOREIGN $PROBE"
        log "rtt $kind rep $rep: p50 $p50 p99 $p99 (foreign CPU $FOREIGN, probe $PROBE µs)"
      done
      spoiled && ((retries_left > 0)) || break
      retries_left=$((retries_left - 1))
    done
  done
  for t in $targets; do stop_relay "${t%%=*}"; done
}

# agg KEY KIND FIELD -> median of FIELD over the reps without others' work
# and in fast host mode; "‡" if only slow-mode ones were clean, "†" if none was.
median() {
  tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR] = $1}
    END {if (NR == 0) exit; if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
agg() {
  local key=$1 kind=$2 field=$3 rep vals fast="" clean="" all="" v f p n
  for ((rep = 1; rep <= 10; rep++)); do
    vals=${V[$key.$kind.$rep]:-}
    [[ -n $vals ]] || continue
    # shellcheck disable=SC2086
    set -- $vals
    n=$#
    v=${!field} f=${@:n-1:1} p=${!n}
    [[ $v == n/a ]] && continue
    all+="$v "
    if awk -v f="$f" -v m="$FOREIGN_MAX" 'BEGIN {exit !(f <= m)}'; then
      clean+="$v "
      awk -v p="$p" -v pm="$PROBE_MIN" -v k="$SLOW_FACTOR" 'BEGIN {exit !(p <= k * pm)}' && fast+="$v "
    fi
  done
  if [[ -n $fast ]]; then
    median "$fast"
  elif [[ -n $clean ]]; then
    echo "$(median "$clean")‡"
  elif [[ -n $all ]]; then
    echo "$(median "$all")†"
  else
    echo "n/a"
  fi
}

idle_mem() {  # KIND: one fresh relay, IDLE_N idle connections
  local kind=$1 before after i client n=$IDLE_N mp
  start_relay "$kind" $RELAY_CPU "$P_IDLE" || return 0
  mp=${MPID[$kind]}
  # One connection first, so one-time allocations land in "before".
  timeout 10 taskset -c $LOAD_CPU "$bin/idle" client 127.0.0.1 "${RP[$kind]}" 1 --hold 0 >/dev/null || true
  sleep 0.3
  if [[ $kind == socat ]]; then before=$(pss_tree_kb "$mp"); else before=$(rss_kb "$mp"); fi
  spawn $LOAD_CPU "idle-client-$kind" "$bin/idle" client 127.0.0.1 "${RP[$kind]}" "$n" --hold 300 \
    --within "$IDLE_WITHIN"
  client=$SPAWNED
  for ((i = 0; i < (IDLE_WITHIN + 30) * 10; i++)); do
    grep -q ready "$work/logs/idle-client-$kind.out" 2>/dev/null && break
    kill -0 "$client" 2>/dev/null || break
    sleep 0.1
  done
  if grep -q ready "$work/logs/idle-client-$kind.out" 2>/dev/null; then
    n=$(awk '/ready/ {print $2}' "$work/logs/idle-client-$kind.out")
    V[mem.$kind.n]=$n
    sleep 0.5
    if [[ $kind == socat ]]; then after=$(pss_tree_kb "$mp"); else after=$(rss_kb "$mp"); fi
    V[mem.$kind]=$(((after - before) * 1024 / n))
    echo "$kind idle: before $before kB, after $after kB, $n connections" >>"$raw"
    log "mem $kind: before $before kB, after $after kB with $n connections: ${V[mem.$kind]} B/conn"
  else
    log "mem $kind: connections failed: $(tail -1 "$work/logs/idle-client-$kind.err")"
  fi
  stop_pid "$client"
  stop_relay "$kind"
}

# --- run -----------------------------------------------------------------------
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
log "relays: $selected; $REPS repetitions; ports $base+; work directory $work; $ferry_version"
FERRY_EXTRA=()
start_servers

if ((figures)); then
  figure bulk1 m_bulk "$P_SINK" $RELAY_CPU 1
  figure bulk8 m_bulk "$P_SINK" $RELAY_CPU 8
  figure bulk1core m_bulk "$P_SINK" $LOAD_CPU 1
  ((have_iperf)) && figure iperf m_iperf "$P_IPERF" $RELAY_CPU
  figure_rtt
  ((have_wrk)) && FIG_REPS=$CONN_REPS figure conns m_conns "$P_HTTP" $RELAY_CPU
  for kind in $selected; do
    [[ $kind == direct ]] && continue
    wait_quiet
    idle_mem "$kind"
  done
fi

# Copy vs splice, ferry alone.
study_ran=0
if ((study)) && [[ " $selected " == *" ferry "* ]]; then
  study_ran=1
  saved=$selected
  selected="ferry ferry-filter ferry-copy"
  figure study-bulk m_bulk "$P_SINK" $RELAY_CPU 1
  selected=$saved
  # Ping-pong on a fresh connection and on one that first carried a 4 MiB
  # burst each way. With the pump of 19c7af5 (splice after 2 full 64 KiB
  # reads, never back) the first copies and the second splices at every
  # size here; a build with --admin reports the share of the timed bytes
  # that really went through splice(), so other switching rules show up.
  # RTT: both connections in one client, interleaved round by round. Relay
  # CPU and splice share: each connection alone, the burst left out.
  PRIME=4194304
  pump_bytes() {  # -> "copy splice" bytes from the study relay's /metrics
    local port=$1 text
    text=$(exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n' >&3 &&
      timeout 5 cat <&3) || true
    awk '/^ferry_pump_bytes_total\{mode="copy"\}/ {c = $2} /^ferry_pump_bytes_total\{mode="splice"\}/ {s = $2}
      END {printf "%.0f %.0f\n", c, s}' <<<"$text"
  }
  m_study_cpu() {  # SIZE PRIME ROUNDS -> "relay_ns spliced_percent"
    # The client primes, prints "primed" and holds 300 ms: the relay's CPU
    # and pump counters are read then, so the burst is not in the figures.
    local c0 c1 b0="" b1 pct="n/a" pid i out=$work/study-client.out
    : >"$out"
    taskset -c $LOAD_CPU "$bin/pingpong" client -n "$3" -s "$1" -w 0 --hold 300 \
      "127.0.0.1:${RP[ferry]}@$2" >"$out" 2>&1 &
    pid=$!
    for ((i = 0; i < 300; i++)); do  # 30 s at most
      grep -q '^primed' "$out" && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.01
    done
    ((ferry_admin)) && b0=$(pump_bytes "$ADMIN_PORT")
    c0=$(cpu_ns "${MPID[ferry]}")
    for ((i = 0; i < 6000; i++)); do  # 60 s at most
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.01
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || return 0
    c1=$(cpu_ns "${MPID[ferry]}")
    grep '^target=' "$out" >>"$raw" || return 0
    if ((ferry_admin)); then
      b1=$(pump_bytes "$ADMIN_PORT")
      pct=$(awk -v a="$b0" -v b="$b1" 'BEGIN {
        split(a, x, " "); split(b, y, " "); c = y[1] - x[1]; s = y[2] - x[2]
        if (c + s <= 0) print "n/a"; else printf "%.0f", 100 * s / (c + s)}')
    fi
    echo "$((c1 - c0)) $pct"
  }
  # windowed CMD...: runs CMD inside a measurement window (retried once if
  # spoiled); its output in OUT, the window's FOREIGN and PROBE set.
  windowed() {
    local try
    for try in 1 2; do
      wait_quiet
      win_begin
      OUT=$("$@") || OUT=""
      win_end
      spoiled && ((retries_left > 0)) || break
      retries_left=$((retries_left - 1))
    done
  }
  m_study_rtt() {  # SIZE -> pingpong lines, fresh and primed connection interleaved
    timeout 60 taskset -c $LOAD_CPU "$bin/pingpong" client -n "$STUDY_N" -s "$1" -w 200 \
      "127.0.0.1:${RP[ferry]}@0" "127.0.0.1:${RP[ferry]}@$PRIME"
  }
  if ((ferry_admin)); then
    new_port
    ADMIN_PORT=$PORT
    FERRY_EXTRA=(--admin "127.0.0.1:$ADMIN_PORT")
  fi
  start_relay ferry $RELAY_CPU "$P_ECHO"
  FERRY_EXTRA=()
  ((ferry_admin)) && wait_port "$ADMIN_PORT"
  for ((rep = 1; rep <= REPS; rep++)); do
    for size in 64 1024 4096 16384 32768; do
      windowed m_study_rtt "$size"
      echo "$OUT" >>"$raw"
      for prime in 0 "$PRIME"; do
        line=$(grep "@$prime " <<<"$OUT") || continue
        V[pp$size-$prime.ferry.$rep]="$(sed -n 's/.*p50_us=\([0-9.]*\).*/\1/p' <<<"$line") $(sed -n 's/.*p99_us=\([0-9.]*\).*/\1/p' <<<"$line") $FOREIGN $PROBE"
      done
      for prime in 0 "$PRIME"; do
        windowed m_study_cpu "$size" "$prime" "$STUDY_N"
        [[ -n $OUT ]] && V[ppcpu$size-$prime.ferry.$rep]="$OUT $FOREIGN $PROBE"
      done
      log "pingpong $size B rep $rep: fresh ${V[pp$size-0.ferry.$rep]:-} / ${V[ppcpu$size-0.ferry.$rep]:-};" \
        "after burst ${V[pp$size-$PRIME.ferry.$rep]:-} / ${V[ppcpu$size-$PRIME.ferry.$rep]:-}"
    done
  done
  stop_relay ferry
fi

# --- report --------------------------------------------------------------------
name_of() {
  case $1 in
    direct) echo "direct (no relay)" ;;
    ferry) echo "**ferry**" ;;
    haproxy) echo "HAProxy 2.6 tcp" ;;
    haproxy-splice) echo "HAProxy 2.6 tcp + splice" ;;
    nginx) echo "nginx 1.22 stream" ;;
    socat) echo "socat 1.7 (fork)" ;;
    rinetd) echo "rinetd 0.73" ;;
    *) echo "$1" ;;
  esac
}
num() { local v=${1%†}; echo "${v%‡}"; }
ratio() {
  awk -v a="$(num "$1")" -v b="$(num "$2")" 'BEGIN {
    if (a == "" || b == "" || a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b}'
}
met() {
  awk -v r="$1" -v t="$2" -v op="$3" 'BEGIN {
    if (r == "n/a") print "n/a"
    else if ((op == ">=" && r >= t) || (op == "<=" && r <= t)) print "met"
    else print "**not met**"}'
}

report() {
  local kind
  declare -A A=()
  for kind in $selected; do
    A[$kind.bulk1]=$(agg bulk1 "$kind" 1)
    A[$kind.cpu]=$(agg bulk1 "$kind" 2)
    A[$kind.bulk8]=$(agg bulk8 "$kind" 1)
    A[$kind.bulk1core]=$(agg bulk1core "$kind" 1)
    A[$kind.iperf]=$(agg iperf "$kind" 1)
    A[$kind.p50]=$(agg rtt "$kind" 1)
    A[$kind.p99]=$(agg rtt "$kind" 2)
    A[$kind.cps]=$(agg conns "$kind" 1)
    A[$kind.cpc]=$(agg conns "$kind" 2)
    A[$kind.mem]=${V[mem.$kind]:-n/a}
    if [[ -n ${V[mem.$kind.n]:-} && ${V[mem.$kind.n]} != "$IDLE_N" ]]; then
      A[$kind.mem]+=" (${V[mem.$kind.n]} conns)"
    fi
  done
  A[direct.cpu]="n/a" A[direct.mem]="n/a" A[direct.cpc]="n/a"
  echo "## Results, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $NCPU CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r)," \
    "load average at start $load_before. Relay on CPU $RELAY_CPU (taskset -c $RELAY_CPU), load generators and servers" \
    "on CPU $LOAD_CPU (taskset -c $LOAD_CPU); ferry --workers 1, HAProxy nbthread 1, nginx one worker (master_process off)."
  echo "Medians of $REPS interleaved repetitions ($CONN_REPS for conn/s) with foreign CPU <= ${FOREIGN_MAX} and in fast host mode" \
    "(cross-CPU probe <= ${SLOW_FACTOR} x the run's fastest, ${PROBE_MIN:-?} µs); ‡ only slow-mode samples were clean, † none was clean."
  echo "Bulk: bench/bulk.cc, sendfile() source and recv(MSG_TRUNC) sink, ${BULK_T} s after 0.5 s warm-up;" \
    "one core: the relay on CPU $LOAD_CPU with them. iperf3: 1 stream, ${IPERF_T} s, relay on CPU $RELAY_CPU." \
    "RTT: $RTT_N round trips of 64 B per relay after 1000 untimed, one client interleaving all relays round by round. conn/s: wrk -c64 -t1 -d${WRK_T}s -H 'Connection: close'" \
    "against nginx http (3-byte body). Idle: $IDLE_N connections (or as many as open in ${IDLE_WITHIN} s), one 1-byte echo each; VmRSS delta / connections" \
    "(socat: Pss of the listener and its per-connection children). CPU: relay utime+stime per GiB in the 1-stream bulk run."
  echo
  echo "| relay | bulk 1 stream Gbit/s | bulk 8 streams Gbit/s | bulk 1 stream one core Gbit/s | iperf3 1 stream Gbit/s | RTT p50 µs | RTT p99 µs | new conn/s c=64 | relay CPU µs/conn | idle B/conn (user space) | CPU s/GiB |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for kind in $selected; do
    echo "| $(name_of "$kind") | ${A[$kind.bulk1]} | ${A[$kind.bulk8]} | ${A[$kind.bulk1core]} | ${A[$kind.iperf]} | ${A[$kind.p50]} | ${A[$kind.p99]} | ${A[$kind.cps]} | ${A[$kind.cpc]} | ${A[$kind.mem]} | ${A[$kind.cpu]} |"
  done
  echo
  if [[ " $selected " == *" ferry "* ]]; then
    local best1="" best8="" bp1="" bp8="" r q
    for kind in $selected; do
      [[ $kind == direct || $kind == ferry ]] && continue
      r=$(num "${A[$kind.bulk1]}")
      if [[ $r != n/a ]] && awk -v a="$r" -v b="${best1:-0}" 'BEGIN {exit !(a > b)}'; then best1=$r bp1=$kind; fi
      r=$(num "${A[$kind.bulk8]}")
      if [[ $r != n/a ]] && awk -v a="$r" -v b="${best8:-0}" 'BEGIN {exit !(a > b)}'; then best8=$r bp8=$kind; fi
    done
    echo "### ferry against its targets"
    echo
    echo "| target | ferry | reference | ratio | goal | |"
    echo "|---|---:|---:|---:|---|---|"
    q=$(ratio "${A[ferry.bulk1]}" "$best1")
    echo "| bulk 1 stream vs best peer ($(name_of "${bp1:-none}")) | ${A[ferry.bulk1]} | ${best1:-n/a} | $q | >= 1.2 | $(met "$q" 1.2 '>=') |"
    q=$(ratio "${A[ferry.bulk8]}" "$best8")
    echo "| bulk 8 streams vs best peer ($(name_of "${bp8:-none}")) | ${A[ferry.bulk8]} | ${best8:-n/a} | $q | >= 1.2 | $(met "$q" 1.2 '>=') |"
    q=$(ratio "${A[ferry.cpu]}" "${A[haproxy-splice.cpu]:-n/a}")
    echo "| CPU s/GiB vs HAProxy + splice | ${A[ferry.cpu]} | ${A[haproxy-splice.cpu]:-n/a} | $q | <= 1.0 | $(met "$q" 1.0 '<=') |"
    q=$(ratio "${A[ferry.cps]}" "${A[direct.cps]:-n/a}")
    echo "| new conn/s vs direct | ${A[ferry.cps]} | ${A[direct.cps]:-n/a} | $q | >= 0.95 | $(met "$q" 0.95 '>=') |"
    q=$(ratio "${A[ferry.p50]}" "${A[haproxy.p50]:-n/a}")
    echo "| RTT p50 vs HAProxy tcp | ${A[ferry.p50]} | ${A[haproxy.p50]:-n/a} | $q | <= 1.0 | $(met "$q" 1.0 '<=') |"
    q=$(ratio "${A[ferry.p99]}" "${A[haproxy.p99]:-n/a}")
    echo "| RTT p99 vs HAProxy tcp | ${A[ferry.p99]} | ${A[haproxy.p99]:-n/a} | $q | <= 1.0 | $(met "$q" 1.0 '<=') |"
    q=$(ratio "${A[ferry.mem]}" 2048)
    echo "| idle memory vs 2 KiB | ${A[ferry.mem]} | 2048 | $q | <= 1.0 | $(met "$q" 1.0 '<=') |"
    echo
  fi
  if ((study_ran)); then
    echo "### ferry: copy vs splice"
    echo
    echo "Bulk, 1 stream, relay on CPU $RELAY_CPU. \"copy\": splice() refused with EINVAL by a seccomp filter" \
      "(bench/nosplice.cc), so each direction falls back to copy (recv/send through its 64 KiB buffer) for good;" \
      "\"filter only\": the same kind of filter on a syscall nobody makes (its own cost)."
    echo
    echo "| ferry | Gbit/s | CPU s/GiB | CPU ns/byte |"
    echo "|---|---:|---:|---:|"
    local lbl c
    for kind in ferry ferry-filter ferry-copy; do
      case $kind in ferry) lbl="splice (default)" ;; ferry-filter) lbl="splice, filter only" ;; *) lbl="copy" ;; esac
      c=$(agg study-bulk "$kind" 2)
      echo "| $lbl | $(agg study-bulk "$kind" 1) | $c | $(awk -v c="$(num "$c")" 'BEGIN {if (c == "n/a" || c == "") print "n/a"; else printf "%.3f", c * 1e9 / 2^30}') |"
    done
    echo
    echo "Ping-pong, $STUDY_N round trips of one message size. \"fresh\": a new connection; \"after burst\": a" \
      "connection that first carried a 4 MiB burst each way. With the pump of 19c7af5 (splice after 2 reads that" \
      "fill the 64 KiB buffer, never back) the fresh one copies and the other splices at every size here." \
      "RTT: both connections in one client, interleaved round by round. Relay CPU: each connection alone, the" \
      "burst left out. spliced: share of the relayed bytes ferry_pump_bytes_total counted as splice" \
      "(n/a: this build has no --admin)."
    echo
    echo "| message B | fresh p50 µs | fresh p99 µs | fresh relay CPU µs/round trip | fresh spliced % | after burst p50 µs | after burst p99 µs | after burst relay CPU µs/round trip | after burst spliced % |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    local size prime cells c
    for size in 64 1024 4096 16384 32768; do
      cells="| $size |"
      for prime in 0 4194304; do
        c=$(agg "ppcpu$size-$prime" ferry 1)
        cells+=" $(agg "pp$size-$prime" ferry 1) | $(agg "pp$size-$prime" ferry 2) |"
        cells+=" $(awk -v c="$(num "$c")" -v n="$STUDY_N" 'BEGIN {if (c == "n/a") print "n/a"; else printf "%.2f", c / 1000 / n}') |"
        cells+=" $(agg "ppcpu$size-$prime" ferry 2) |"
      done
      echo "$cells"
    done
    echo
  fi
  echo "Run time $((SECONDS - start_time)) s (waiting for other work: ${quiet_waited} s); command: \`$cmdline\`"
}

report | tee "$work/results.md"
if [[ -n $out_file ]]; then
  cp "$work/results.md" "$out_file"
  cp "$raw" "${out_file%.md}.raw.txt"
fi
exit 0
