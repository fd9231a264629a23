#!/usr/bin/env bash
# A real Prometheus scraping a real ferry, on loopback only:
#
#   socat client --100 MiB--> ferry forward (rule "bulk") --> socat sink (/dev/null)
#                                   | admin /metrics
#                               Prometheus (scrape_interval 1s, charts/ferry/alerts loaded)
#
# Checks:
#   - the Grafana dashboard's structure (charts/ferry/dashboards/ferry.json):
#     stable uid, datasource/job/instance/rule variables, every target on the
#     datasource variable, every range selector $__rate_interval, every metric
#     selector with job and instance matchers;
#   - `promtool check metrics` on real scrapes of ferry's /metrics (before and
#     after traffic) prints nothing and exits 0;
#   - Prometheus scrapes the target without error;
#   - after exactly 100 MiB through the rule and two more scrapes,
#     sum(ferry_bytes_total{rule="bulk",direction="to_target"}) is 104857600
#     exactly, and rate(ferry_bytes_total[30s]) right after the transfer is > 0;
#   - every dashboard query (template variables substituted) parses and runs in
#     Prometheus; those over series ferry exports now return data; the
#     template variables' label_values() find this job, instance and rule;
#   - `promtool check rules` and `promtool test rules` on charts/ferry/alerts,
#     and the same rules loaded into the live Prometheus evaluate without error
#     and raise no alert for this healthy relay.
# Every process started here is killed by pid on exit; every wait is bounded.
# Exits 77 (skipped) when prometheus, promtool or another tool is missing.
# shellcheck disable=SC2015,SC2016  # "ok && pass || fail" is meant; literal $ in PromQL
set -euo pipefail
FERRY=${FERRY_BINARY:?set FERRY_BINARY to the ferry binary}
for tool in prometheus promtool socat curl jq ss timeout; do
  command -v "$tool" >/dev/null || { echo "skip: needs $tool (scripts/install-deps.sh)"; exit 77; }
done
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dashboard=$root/charts/ferry/dashboards/ferry.json
rules=$root/charts/ferry/alerts/ferry-rules.yaml
rules_test=$root/charts/ferry/alerts/ferry-rules.test.yaml

start=$SECONDS
work=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do
    pkill -TERM -P "$p" 2>/dev/null || true  # socat's forked children
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

passed=0 failed=0
pass() { passed=$((passed + 1)); echo "ok: $*"; }
check_fail() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }
fatal() {
  echo "FAIL: $*" >&2
  for f in ferry.log prometheus.log sink.log; do
    [[ -s $work/$f ]] && { echo "--- $f" >&2; tail -20 "$work/$f" >&2; }
  done
  echo "prometheus: $passed passed, $((failed + 1)) failed"
  exit 1
}
now() { date +%s.%N; }

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s.
wait_for() {
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fatal "timed out after ${limit}s waiting for $what"
    sleep 0.2
  done
}

# A loopback port no socket uses now (the caller retries if it is taken
# later), below the kernel's ephemeral range, where outgoing connections
# (thousands of them on a busy host) take their local ports.
free_port() {
  local p low=32768
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  ((low > 11000)) || low=32768
  for _ in $(seq 1 100); do
    p=$((10000 + RANDOM % (low - 10000)))
    [[ -z $(ss -Htan "( sport = :$p )") ]] && { echo "$p"; return 0; }
  done
  return 1
}

# ---------------------------------------------------------------- the dashboard's structure
# Every object with "targets" is a query panel, rows and nested rows included.
jqd() { jq -e "$@" "$dashboard" >/dev/null; }
jqd 'type == "object"' || fatal "$dashboard is not a JSON object"
jqd '.uid == "ferry-overview" and .id == null and (.title | length > 0) and
     (.tags | length > 0) and (.schemaVersion | type == "number")' &&
  pass "dashboard: uid ferry-overview, id null, title, tags, schemaVersion" ||
  check_fail "dashboard: uid/id/title/tags/schemaVersion"
jqd '[.templating.list[] | select(.name == "datasource" and .type == "datasource" and
                                  .query == "prometheus")] | length == 1' &&
  pass "dashboard: datasource variable (type datasource, prometheus)" ||
  check_fail "dashboard: no datasource variable of type datasource/prometheus"
for v in job instance rule; do
  jqd --arg v "$v" '[.templating.list[] | select(.name == $v and .type == "query" and
      .datasource.uid == "${datasource}" and (.query | tostring | test("^label_values\\(")))]
      | length == 1' &&
    pass "dashboard: $v variable (label_values on \${datasource})" ||
    check_fail "dashboard: $v variable missing or not label_values on \${datasource}"
done
jqd '[.. | objects | select(has("targets"))] | length >= 12' ||
  check_fail "dashboard: fewer than 12 query panels"
jqd '[.. | objects | select(has("gridPos")) | .id] | (length == (unique | length))' &&
  pass "dashboard: panel ids unique" || check_fail "dashboard: duplicate panel ids"
bad=$(jq -r '.. | objects | select(has("targets")) |
             select(.datasource.uid != "${datasource}" or
                    any(.targets[]; .datasource.uid != "${datasource}")) | .title' "$dashboard")
[[ -z $bad ]] && pass "dashboard: every panel and target uses \${datasource}" ||
  check_fail "dashboard: panels not on the datasource variable: $bad"

mapfile -t queries < <(jq -r '.. | objects | select(has("targets")) | .title as $t |
                              .targets[] | {t: $t, e: .expr} | @base64' "$dashboard")
((${#queries[@]} > 0)) || fatal "dashboard: no queries"
dec() { base64 -d <<<"$1" | jq -r "$2"; }
struct_bad=0
for q in "${queries[@]}"; do
  title=$(dec "$q" .t) expr=$(dec "$q" .e)
  # Range selectors: only [$__rate_interval] (so every rate()/increase() has it).
  while read -r r; do
    [[ -z $r || $r == '[$__rate_interval]' ]] && continue
    check_fail "dashboard: \"$title\": range $r is not [\$__rate_interval]: $expr"; struct_bad=1
  done < <(grep -oE '\[[^]]*\]' <<<"$expr" || true)
  if grep -qE '(^|[^a-z_])(rate|increase|irate)\(' <<<"$expr" &&
     ! grep -qF '[$__rate_interval]' <<<"$expr"; then
    check_fail "dashboard: \"$title\": rate/increase without \$__rate_interval"; struct_bad=1
  fi
  # Every metric is followed by a selector, and every selector matches job and instance.
  if grep -qE '(ferry|process)_[a-z_]+([^a-z_{]|$)' <<<"$expr"; then
    check_fail "dashboard: \"$title\": a metric without a {job, instance} selector: $expr"
    struct_bad=1
  fi
  while read -r sel; do
    [[ -z $sel ]] && continue
    if ! grep -qE 'job=~?"\$job"' <<<"$sel" || ! grep -qE 'instance=~?"\$instance"' <<<"$sel"; then
      check_fail "dashboard: \"$title\": selector $sel lacks job/instance matchers"; struct_bad=1
    fi
  done < <(grep -oE '\{[^}]*\}' <<<"$expr" || true)
done
((struct_bad == 0)) &&
  pass "dashboard: ${#queries[@]} queries: only [\$__rate_interval] ranges, job+instance on every selector"

# ---------------------------------------------------------------- rules, offline
if out=$(promtool check rules "$rules" 2>&1); then
  pass "promtool check rules: $(grep -o 'SUCCESS.*' <<<"$out")"
else
  check_fail "promtool check rules: $out"
fi
if out=$(cd "$(dirname "$rules_test")" && promtool test rules "$(basename "$rules_test")" 2>&1); then
  pass "promtool test rules ferry-rules.test.yaml"
else
  check_fail "promtool test rules: $out"
fi

# ---------------------------------------------------------------- sink, ferry, Prometheus
for attempt in 1 2 3; do
  sink_port=$(free_port) || fatal "no free port"
  socat -u "TCP-LISTEN:$sink_port,bind=127.0.0.1,fork,reuseaddr" OPEN:/dev/null \
    2>"$work/sink.log" &
  sink_pid=$!
  sleep 0.2
  kill -0 "$sink_pid" 2>/dev/null && break
  wait "$sink_pid" 2>/dev/null || true
  ((attempt < 3)) || fatal "the sink did not start"
done
pids+=("$sink_pid")

"$FERRY" forward --admin 127.0.0.1:0 --name bulk 127.0.0.1:0 "127.0.0.1:$sink_port" \
  >"$work/ferry.log" 2>&1 &
pids+=($!)
ferry_pid=$!
wait_for 15 "ferry's listening lines" grep -q 'msg="admin listening"' "$work/ferry.log"
wait_for 15 "ferry's listening lines" grep -q 'msg="listening".*rule=bulk' "$work/ferry.log"
admin=$(sed -n 's/.*msg="admin listening".* address=\([0-9.]*:[0-9]*\).*/\1/p' "$work/ferry.log" | head -1)
listen=$(sed -n 's/.*msg="listening".*rule=bulk.* address=\([0-9.]*:[0-9]*\).*/\1/p' "$work/ferry.log" | head -1)
[[ $admin =~ ^127\.0\.0\.1:[0-9]+$ && $listen =~ ^127\.0\.0\.1:[0-9]+$ ]] ||
  fatal "could not parse ferry's addresses (admin \"$admin\", listen \"$listen\")"
lport=${listen##*:}
echo "ferry pid $ferry_pid: rule bulk on $listen -> 127.0.0.1:$sink_port, admin $admin"

# promtool check metrics must print nothing: no error, no lint warning.
check_metrics() {
  local when=$1 out rc=0
  curl -sf --max-time 5 "http://$admin/metrics" >"$work/metrics.txt" ||
    { check_fail "GET /metrics ($when)"; return; }
  out=$(promtool check metrics <"$work/metrics.txt" 2>&1) || rc=$?
  if ((rc == 0)) && [[ -z $out ]]; then
    pass "promtool check metrics ($when): clean, $(grep -c '^# TYPE' "$work/metrics.txt") families"
  else
    check_fail "promtool check metrics ($when) exit $rc: $out"
  fi
}
check_metrics "idle"

cp "$rules" "$work/ferry-rules.yaml"
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $work/ferry-rules.yaml
scrape_configs:
  - job_name: ferry
    static_configs:
      - targets: ["$admin"]
EOF
out=$(promtool check config "$work/prometheus.yml" 2>&1) || fatal "promtool check config: $out"

prom_started=$(now)
for attempt in 1 2 3; do
  prom_port=$(free_port) || fatal "no free port"
  prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" --storage.tsdb.retention.time=1h \
    --log.level=warn >"$work/prometheus.log" 2>&1 &
  prom_pid=$!
  deadline=$((SECONDS + 30))
  until curl -sf --max-time 2 "http://127.0.0.1:$prom_port/-/ready" >/dev/null 2>&1; do
    kill -0 "$prom_pid" 2>/dev/null || break
    ((SECONDS < deadline)) || break
    sleep 0.2
  done
  kill -0 "$prom_pid" 2>/dev/null && curl -sf --max-time 2 "http://127.0.0.1:$prom_port/-/ready" \
    >/dev/null 2>&1 && break
  kill "$prom_pid" 2>/dev/null || true
  wait "$prom_pid" 2>/dev/null || true
  ((attempt < 3)) || fatal "Prometheus did not become ready"
done
pids+=("$prom_pid")
prom=http://127.0.0.1:$prom_port
echo "prometheus pid $prom_pid on 127.0.0.1:$prom_port"

# query EXPR [TIME]: the instant API's JSON.
query() {
  local args=(-sS --max-time 10 --data-urlencode "query=$1")
  [[ -n ${2:-} ]] && args+=(--data-urlencode "time=$2")
  curl "${args[@]}" "$prom/api/v1/query"
}
nonempty() { query "$1" | jq -e '.status == "success" and (.data.result | length > 0)'; }

wait_for 30 "the first scrape of ferry" nonempty 'up{job="ferry"} == 1'
wait_for 30 "ferry_bytes_total in Prometheus" nonempty 'ferry_bytes_total{job="ferry",rule="bulk"}'
# Two scrapes with the idle counters, so the rate window holds a sample before the transfer.
scrape_ts() { query 'timestamp(up{job="ferry"})' | jq -r '.data.result[0].value[1] // 0'; }
after() { awk -v a="$(scrape_ts)" -v b="$1" 'BEGIN { exit !(a + 0 >= b + 0) }'; }
wait_for 20 "two idle scrapes" after "$(awk -v t="$(now)" 'BEGIN { printf "%.3f", t + 1.5 }')"

# ---------------------------------------------------------------- 100 MiB through the rule
bytes=104857600
t_start=$(now)
head -c "$bytes" /dev/zero | timeout 60 socat -u - "TCP:127.0.0.1:$lport" ||
  fatal "the client transfer failed"
settled() {  # ferry's own /metrics: all bytes counted, the connection closed
  local m
  m=$(curl -sf --max-time 5 "http://$admin/metrics") || return 1
  [[ $(awk '/^ferry_bytes_total\{/ && /rule="bulk"/ && /direction="to_target"/ { s += $NF }
            END { printf "%.0f", s }' <<<"$m") == "$bytes" ]] &&
    grep -qE '^ferry_connections_active\{rule="bulk"\} 0$' <<<"$m"
}
wait_for 60 "ferry to count $bytes bytes and close the connection" settled
t_done=$(now)
echo "transfer: $bytes bytes in $(awk -v a="$t_start" -v b="$t_done" 'BEGIN { printf "%.2f", b - a }') s"
check_metrics "after 100 MiB"

# Two more scrapes after ferry showed the final count.
wait_for 20 "two scrapes after the transfer" after "$(awk -v t="$t_done" 'BEGIN { printf "%.3f", t + 1.5 }')"
q_time=$(scrape_ts)

out=$(promtool query instant -o json "$prom" \
        'sum(ferry_bytes_total{rule="bulk",direction="to_target"})' 2>&1) ||
  fatal "promtool query instant: $out"
got=$(jq -r '.[0].value[1] // "none"' <<<"$out" 2>/dev/null || echo "unparsable: $out")
[[ $got == "$bytes" ]] &&
  pass "promtool query: sum(ferry_bytes_total{rule=\"bulk\",direction=\"to_target\"}) = $got" ||
  check_fail "promtool query: sum(ferry_bytes_total{to_target}) = $got, want $bytes"

out=$(promtool query instant -o json --time="$q_time" "$prom" \
        'sum(rate(ferry_bytes_total{job="ferry",rule="bulk",direction="to_target"}[30s]))' 2>&1) ||
  fatal "promtool query instant (rate): $out"
rate=$(jq -r '.[0].value[1] // "none"' <<<"$out" 2>/dev/null || echo "unparsable")
awk -v r="$rate" 'BEGIN { exit !(r + 0 > 0) }' &&
  pass "rate(ferry_bytes_total[30s]) at $q_time = $rate B/s" ||
  check_fail "rate(ferry_bytes_total[30s]) at $q_time = $rate, want > 0"

# Prometheus itself scraped ferry without error.
if curl -sS --max-time 10 "$prom/api/v1/targets" |
   jq -e '[.data.activeTargets[] | select(.labels.job == "ferry")] |
          length == 1 and all(.health == "up" and .lastError == "")' >/dev/null; then
  pass "Prometheus target ferry: health up, no scrape error"
else
  check_fail "Prometheus target ferry: $(curl -sS --max-time 10 "$prom/api/v1/targets" | jq -c '.data.activeTargets')"
fi

# ---------------------------------------------------------------- every dashboard query
# The names ferry exports now (histograms also as _bucket/_sum/_count): queries
# over only those must return data; the others (later features) must parse.
mapfile -t exported < <(awk '/^# TYPE / { print $3; if ($4 == "histogram") {
                               print $3 "_bucket"; print $3 "_sum"; print $3 "_count" } }' \
                          "$work/metrics.txt")
is_exported() { local n; for n in "${exported[@]}"; do [[ $n == "$1" ]] && return 0; done; return 1; }
range_start=$(awk -v t="$prom_started" 'BEGIN { printf "%.3f", t }')
range_end=$(now)
q_with_data=0 q_later=0 q_bad=0
for q in "${queries[@]}"; do
  title=$(dec "$q" .t) expr=$(dec "$q" .e)
  e=${expr//'$__rate_interval'/5s}
  e=${e//'$__interval_ms'/1000}
  e=${e//'$__interval'/1s}
  e=${e//'$__range'/5m}
  e=${e//'${job}'/ferry}
  e=${e//'$job'/ferry}
  e=${e//'${instance}'/$admin}
  e=${e//'$instance'/$admin}
  e=${e//'${rule}'/bulk}
  e=${e//'$rule'/bulk}
  if [[ $e == *'$'* ]]; then
    check_fail "\"$title\": unsubstituted variable in $e"; q_bad=1; continue
  fi
  resp=$(curl -sS --max-time 10 -w '\n%{http_code}' --data-urlencode "query=$e" \
           --data-urlencode "start=$range_start" --data-urlencode "end=$range_end" \
           --data-urlencode "step=1" "$prom/api/v1/query_range")
  code=${resp##*$'\n'} body=${resp%$'\n'*}
  if [[ $code != 200 ]] || ! jq -e '.status == "success"' <<<"$body" >/dev/null 2>&1; then
    check_fail "\"$title\": HTTP $code: $(head -c 300 <<<"$body") for: $e"; q_bad=1; continue
  fi
  n=$(jq '.data.result | length' <<<"$body")
  all_now=1
  while read -r m; do
    is_exported "$m" || all_now=0
  done < <(grep -oE '(ferry|process)_[a-z_]+' <<<"$e" | sort -u)
  if ((all_now)); then
    if ((n > 0)); then
      q_with_data=$((q_with_data + 1))
    else
      check_fail "\"$title\": no data for a query over exported series: $e"; q_bad=1
    fi
  else
    q_later=$((q_later + 1))
  fi
done
((q_bad == 0)) &&
  pass "dashboard: ${#queries[@]} queries run in Prometheus: $q_with_data return data, $q_later over series not exported yet parse"

# The template variables' label_values(SELECTOR, LABEL) find this job, instance and rule.
while IFS=$'\t' read -r name def; do
  [[ $def =~ ^label_values\((.*),[[:space:]]*([a-z_]+)\)$ ]] ||
    { check_fail "variable $name: cannot read $def"; continue; }
  sel=${BASH_REMATCH[1]} label=${BASH_REMATCH[2]}
  sel=${sel//'$job'/ferry}
  sel=${sel//'$instance'/$admin}
  want=$(case $name in job) echo ferry ;; instance) echo "$admin" ;; rule) echo bulk ;; esac)
  vals=$(curl -sS --max-time 10 -G --data-urlencode "match[]=$sel" \
           --data-urlencode "start=$range_start" --data-urlencode "end=$range_end" \
           "$prom/api/v1/series" | jq -r --arg l "$label" '[.data[][$l]] | unique | .[]')
  grep -qxF "$want" <<<"$vals" && pass "variable $name: $def -> $want" ||
    check_fail "variable $name: $def gave \"$vals\", want $want"
done < <(jq -r '.templating.list[] | select(.type == "query") | [.name, .definition] | @tsv' "$dashboard")

# ---------------------------------------------------------------- the rules, live
# Wait until every rule has been evaluated once after the transfer.
rules_evaluated() {
  local ts n=0
  while read -r ts; do
    awk -v a="$(date -d "$ts" +%s.%N)" -v b="$t_done" 'BEGIN { exit !(a + 0 > b + 0) }' || return 1
    n=$((n + 1))
  done < <(curl -sS --max-time 10 "$prom/api/v1/rules" | jq -r '.data.groups[].rules[].lastEvaluation')
  ((n == 5))
}
wait_for 20 "the rules to be evaluated after the transfer" rules_evaluated
rules_json=$(curl -sS --max-time 10 "$prom/api/v1/rules")
if jq -e '[.data.groups[].rules[]] | length == 5 and all(.health == "ok" and .state == "inactive")' \
     <<<"$rules_json" >/dev/null; then
  pass "live Prometheus: 5 ferry alert rules evaluate without error, none pending or firing"
else
  check_fail "live rules: $(jq -c '[.data.groups[].rules[] | {name, health, state, lastError}]' <<<"$rules_json")"
fi

echo "run time: $((SECONDS - start)) s"
echo "prometheus: $passed passed, $failed failed"
((failed == 0))
