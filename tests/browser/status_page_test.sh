#!/usr/bin/env bash
# The status page at "/" in a real browser: the real ferry binary relays two
# connections that keep streaming (zeros to an echo target), headless Chromium
# loads ADMIN/?refresh=500 (through a pacing proxy, see below), runs the page's
# JavaScript for a few (virtual) seconds, and the rendered DOM is checked:
#   - "/" is text/html, /endpoints is JSON, an unknown path is still 404;
#   - readiness shows "ready" and ?refresh=500 is honoured;
#   - the row of rule "web": its listener, 2 active connections (the two held
#     open), throughput > 0 both ways, the one closed connection counted "ok";
#   - the row of the target endpoint: no health claimed, 2 active, share 100%;
#   - the same page opened without its admin server says "admin unreachable".
# The screenshot and the rendered DOM are kept in $FERRY_ARTIFACT_DIR (default:
# the current directory) and the screenshot's path printed. Exits 77 (skipped) without chromium or socat.
set -euo pipefail
FERRY=${FERRY_BINARY:?set FERRY_BINARY to the ferry binary}
artifacts=${FERRY_ARTIFACT_DIR:-$PWD}
chrome=$(command -v chromium || command -v chromium-browser || true)
[[ -n $chrome ]] || { echo "skip: needs chromium (apt-get install chromium)"; exit 77; }
if ! command -v socat >/dev/null || ! command -v ss >/dev/null; then
  echo "skip: needs socat and ss"
  exit 77
fi

work=$(mktemp -d)
pids=()
browser_pid=
cleanup() {
  [[ -z $browser_pid ]] || kill "$browser_pid" 2>/dev/null || true
  # socat forks a child per connection: end those (by parent pid) first.
  for p in "${pids[@]}"; do pkill -P "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}" $browser_pid; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  [[ ! -f $work/ferry.log ]] || { echo "--- ferry log" >&2; tail -n 20 "$work/ferry.log" >&2; }
  [[ ! -f $work/chromium.log ]] ||
    { echo "--- chromium log" >&2; grep -v dbus "$work/chromium.log" | tail -n 20 >&2; }
  exit 1
}
# until TRIES CMD...: runs CMD every 0.1 s until it succeeds, at most TRIES times.
until_ok() {
  local tries=$1 i; shift
  for ((i = 0; i < tries; i++)); do "$@" && return 0; sleep 0.1; done
  return 1
}
# http PORT PATH: the raw HTTP/1.0 response (headers and body), bounded.
http() {
  timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/$0 && printf "GET %s HTTP/1.0\r\n\r\n" "$1" >&3 &&
                     cat <&3' "$1" "$2"
}
# endpoints_have TEXT: /endpoints contains TEXT.
endpoints_have() { http "${admin##*:}" /endpoints | grep -qF "$1"; }
# browse ARGS...: headless Chromium with a fresh profile, no network but
# loopback, 3 s of virtual time for the page's timers; bounded to 60 s.
browse() {
  timeout -k 5 60 "$chrome" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --disable-dev-shm-usage --user-data-dir="$(mktemp -d -p "$work")" \
    --virtual-time-budget=3000 "$@" 2>>"$work/chromium.log" &
  browser_pid=$!
  local rc=0
  wait "$browser_pid" || rc=$?
  browser_pid=
  return "$rc"
}
# attr TEXT NAME: the value of the first NAME="..." attribute in TEXT.
attr() { grep -oP "\b$2=\"\K[^\"]*" <<<"$1" | head -n 1 || true; }
# row DOM SELECTOR: the first <tr ...SELECTOR...>...</tr> (the page builds rows on one line).
row() { grep -oP "<tr[^>]*$2[^>]*>.*?</tr>" <<<"$1" | head -n 1 || true; }
# cell ROW FIELD: the opening tag of the cell with data-field="FIELD".
cell() { grep -oP "<t[dh][^>]*data-field=\"$2\"[^>]*>" <<<"$1" | head -n 1 || true; }
value() { attr "$(cell "$1" "$2")" data-value; }
# text ROW FIELD: the text of that cell (up to its first child element).
text() { grep -oP "data-field=\"$2\"[^>]*>\K[^<]*" <<<"$1" | head -n 1 || true; }

start=$SECONDS
passed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }

# serve VAR ADDRESS: socat on a free loopback port, handing each connection
# to ADDRESS; sets VAR to the port. socat cannot bind port 0 and report it, so
# take a port ss says is free, and another if socat loses the race for it.
serve() {
  local port pid low=32768
  # Below the ephemeral range, where a busy host's outgoing connections sit.
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  ((low > 11000)) || low=32768
  for _ in 1 2 3 4 5; do
    port=$((10000 + RANDOM % (low - 10000)))
    [[ -z $(ss -Htan "sport = :$port") ]] || continue
    socat TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr "$2" 2>>"$work/socat.log" &
    pid=$!
    pids+=("$pid")
    if until_ok 50 bash -c '[[ -n $(ss -Htln "sport = :$0") ]] && kill -0 $1' "$port" "$pid"; then
      printf -v "$1" %s "$port"
      return 0
    fi
  done
  fail "socat could not listen for $2"
}

# The target: an echo server.
tport=
serve tport EXEC:cat
target=127.0.0.1:$tport

"$FERRY" forward --admin 127.0.0.1:0 --name web 127.0.0.1:0 "$target" 2>"$work/ferry.log" &
pids+=($!)
until_ok 100 grep -q 'msg="started"' "$work/ferry.log" || fail "ferry did not start"
admin=$(grep -oP 'msg="admin listening" address=\K\S+' "$work/ferry.log")
listen=$(grep -oP 'msg="listening" rule=web address=\K\S+' "$work/ferry.log")
[[ -n $admin && -n $listen ]] || fail "no admin or listen address in ferry's log"
echo "ferry: rule web $listen -> $target, admin $admin"

# 1. The routes, as any HTTP client sees them.
page=$(http "${admin##*:}" /) || fail "GET / failed"
grep -q '^HTTP/1.1 200' <<<"$page" || fail "GET /: $(head -n 1 <<<"$page")"
grep -qi '^Content-Type: text/html; charset=utf-8' <<<"$page" || fail "GET / is not text/html"
grep -q '<title>ferry status</title>' <<<"$page" || fail "GET / is not the status page"
grep -q '^HTTP/1.1 404' <<<"$(http "${admin##*:}" /index.html)" || fail "/index.html is not 404"
grep -q '"name":"web"' <<<"$(http "${admin##*:}" /endpoints)" || fail "/endpoints has no rule web"
ok "/ serves the page as text/html; /endpoints is JSON; other paths are 404"

# Traffic: one connection that closes (outcome ok), then two that stay open
# and stream zeros through the echo target until the test ends, each paced at
# 64 KiB per 50 ms (about 1.2 MiB/s, so the test costs little CPU); what comes
# back is read and dropped.
chunk=65536 pause=0.05
[[ $(echo hello | timeout 10 socat -t 2 - "TCP:$listen") == hello ]] || fail "echo through ferry"
until_ok 50 endpoints_have '"ok":1' ||
  fail "the closed connection was not counted: $(http "${admin##*:}" /endpoints)"
for i in 1 2; do
  socat "SYSTEM:while head -c $chunk /dev/zero; do sleep $pause; done & exec cat >/dev/null" \
    "TCP:$listen" 2>>"$work/client.log" &
  pids+=($!)
done
until_ok 50 endpoints_have '"active":2' ||
  fail "two connections are not active: $(http "${admin##*:}" /endpoints)"

# Chromium's virtual time (--virtual-time-budget) runs the page's timers at
# once but stands still while a fetch is pending. The page is therefore read
# through a proxy that holds each request for the refresh interval: the page's
# clock then keeps pace with the real one, and the rates it computes from two
# polls are real rates.
refresh=500
delay=$(printf %d.%03d $((refresh / 1000)) $((refresh % 1000)))
slow=
serve slow "SYSTEM:'sleep $delay; exec socat - TCP:$admin'"
url="http://127.0.0.1:$slow/?refresh=$refresh"

# 2. The page in the browser, after its JavaScript polled several times.
dom=$(browse --dump-dom "$url") || fail "chromium --dump-dom failed"
printf '%s\n' "$dom" >"$artifacts/status_page.dom.html"
[[ $(attr "$(grep -oP '<[^>]*id="ready"[^>]*>' <<<"$dom")" data-value) == true ]] ||
  fail "readiness is not shown as ready"
[[ $(attr "$(grep -oP '<[^>]*id="refresh"[^>]*>' <<<"$dom")" data-value) == "$refresh" ]] ||
  fail "?refresh=$refresh not honoured"
alert=$(grep -oP '<p id="alert"[^>]*>.*?</p>' <<<"$dom" || true)
[[ $alert == *'hidden'* ]] || fail "an alert is shown: $alert"
ok "readiness shown as ready, refresh $refresh ms, no alert"

rule=$(row "$dom" 'data-rule="web"')
[[ -n $rule ]] || fail "no row for rule web in the rendered page"
[[ $(text "$rule" listen) == "$listen" ]] || fail "rule web does not show its listener $listen"
[[ $(value "$rule" active) == 2 ]] || fail "rule web: active is '$(value "$rule" active)', want 2"
# Two connections paced at most chunk/pause each. The bounds are loose (a busy
# machine sleeps longer) but catch unit mistakes: bits (x8), milliseconds (x1000).
most=$((2 * chunk * 20))
for f in to_target_rate to_client_rate; do
  v=$(value "$rule" $f)
  [[ $v =~ ^[0-9]+$ ]] || fail "rule web: $f is '$v', want a number"
  ((v > 0)) || fail "rule web: $f is 0 while traffic flows"
  ((v > most / 5 && v < most * 4)) || fail "rule web: $f is $v B/s; the clients send about $most"
  echo "  rule web: $f = $v B/s, shown as \"$(text "$rule" $f)\""
done
[[ $(attr "$(grep -oP '<span[^>]*data-outcome="ok"[^>]*>' <<<"$rule")" data-value) == 1 ]] ||
  fail "rule web does not show 1 ok connection"
ok "rule web: listener, 2 active, throughput > 0 both ways, 1 ok connection"

ep=$(row "$dom" "data-endpoint=\"$target\"")
[[ -n $ep ]] || fail "no row for endpoint $target"
[[ $(attr "$ep" data-parent) == web ]] || fail "endpoint $target is not under rule web"
# No health checking yet: /endpoints has no "up", and the page must not claim one.
[[ -z $(value "$ep" up) ]] || fail "endpoint $target shows health '$(value "$ep" up)' nobody checked"
[[ $(value "$ep" active) == 2 ]] || fail "endpoint $target: active is '$(value "$ep" active)'"
[[ $(value "$ep" share) == 100.0 ]] || fail "endpoint $target: share is '$(value "$ep" share)'"
[[ $ep == *'>100%<'* ]] || fail "endpoint $target: share is not shown as 100%"
ok "endpoint $target: health unknown (not claimed), 2 active, share 100%"

# 3. A screenshot for people (and reviewers) to look at.
shot=$artifacts/status_page.png
rm -f "$shot"
browse --screenshot="$shot" --window-size=1200,800 --hide-scrollbars \
  "$url" >/dev/null || fail "chromium --screenshot failed"
[[ -s $shot ]] || fail "no screenshot written"
ok "screenshot: $shot"

# 4. The page without its admin server: the poll fails, and the page says so.
printf '%s' "${page#*$'\r\n\r\n'}" >"$work/status.html"
dom=$(browse --dump-dom "file://$work/status.html?refresh=200") ||
  fail "chromium --dump-dom (offline) failed"
alert=$(grep -oP '<p id="alert"[^>]*>.*?</p>' <<<"$dom" || true)
[[ $alert == *"admin unreachable"* && $alert != *hidden* ]] ||
  fail "offline page shows no 'admin unreachable': $alert"
ok "without the admin server the page says: $(text "$alert" alert)"

echo "browser status page: $passed passed, 0 failed in $((SECONDS - start)) s"
