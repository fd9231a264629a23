#!/usr/bin/env bash
# Installs what is missing, builds the static ferry, starts a demo web server
# on 127.0.0.1:8081 and runs ferry on examples/quickstart.yaml in the
# foreground (127.0.0.1:8080 -> 127.0.0.1:8081). In another terminal:
#   curl http://127.0.0.1:8080/               # the demo backend, through ferry
#   curl http://127.0.0.1:9901/metrics        # ferry's Prometheus metrics
# and http://127.0.0.1:9901/ in a browser is the status page.
# Ctrl-C stops ferry (it drains first) and the demo server.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/install-deps.sh
command -v busybox >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox >/dev/null
}
scripts/build.sh release >/dev/null

site=$(mktemp -d)
echo "hello from the demo backend, through ferry" >"$site/index.html"
busybox httpd -f -p 127.0.0.1:8081 -h "$site" &
backend=$!
trap 'kill "$backend" 2>/dev/null; rm -rf "$site"' EXIT

echo
echo "ferry is relaying 127.0.0.1:8080 -> 127.0.0.1:8081. In another terminal:"
echo "  curl http://127.0.0.1:8080/                # the demo backend, through ferry"
echo "  curl http://127.0.0.1:9901/metrics         # ferry's metrics"
echo "  (http://127.0.0.1:9901/ in a browser is the status page)"
echo
build/release/cmd/ferry/ferry run --config examples/quickstart.yaml
