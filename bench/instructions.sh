#!/usr/bin/env bash
# User-space instructions per proxied request, from callgrind: repeatable on a noisy
# machine where timings are not. Runs Sinew (one worker) under callgrind in front of an
# nginx upstream twice, with h2load sending exactly N1 and then N2 HTTP/1.1 keep-alive
# requests, and prints (Ir(N2) - Ir(N1)) / (N2 - N1), which cancels startup and shutdown.
#
# Usage: bench/instructions.sh [N1] [N2]   (needs valgrind, nginx, h2load: apt-get install
# valgrind nginx nghttp2-client). SINEW_BIN=path measures another build. LISTENER_EXTRA,
# HTTP_EXTRA, ROUTE_EXTRA and CLUSTER_EXTRA are YAML spliced into the config (indented for
# their blocks: 4, 6, 14 and 4 spaces), to count what a feature costs per request.
# CALLGRIND_KEEP=prefix keeps each run's callgrind output as prefix.N (for
# callgrind_annotate --inclusive=yes), to see where a difference goes.
set -euo pipefail
cd "$(dirname "$0")/.."
n1=${1:-2000}; n2=${2:-6000}
for cmd in valgrind nginx h2load; do
  command -v $cmd >/dev/null || { echo "missing $cmd (apt-get install valgrind nginx nghttp2-client)"; exit 1; }
done
sinew=${SINEW_BIN:-./target/release/sinew}
[ -n "${SINEW_BIN:-}" ] || cargo build --release -q -p sinew
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

count() { # requests -> total Ir
  local n=$1 dir up px
  dir=$(mktemp -d); up=$(free_port); px=$(free_port)
  cat > $dir/up.conf <<CONF
daemon off; worker_processes 1; pid $dir/up.pid; error_log $dir/up.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$up; location / { return 200 "$(printf 'x%.0s' $(seq 64))"; } } }
CONF
  cat > $dir/s.yaml <<CONF
listeners:
  - name: bench
    address: 127.0.0.1:$px
${LISTENER_EXTRA:-}
    http:
      generate_request_id: false
${HTTP_EXTRA:-}
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {prefix: /}
              cluster: up
${ROUTE_EXTRA:-}
clusters:
  - name: up
    endpoints: [{address: 127.0.0.1:$up}]
${CLUSTER_EXTRA:-}
CONF
  nginx -c $dir/up.conf &
  valgrind --tool=callgrind --callgrind-out-file=$dir/cg.out "$sinew" --workers 1 proxy -c $dir/s.yaml 2>$dir/vg.err &
  local vp=$!
  for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/$px) 2>/dev/null && break; sleep 0.1; done
  h2load --h1 -n "$n" -c 10 -m 1 "http://127.0.0.1:$px/" | grep -q "$n succeeded" || { echo "h2load did not complete $n requests" >&2; exit 1; }
  kill -TERM $vp; wait $vp 2>/dev/null || true
  kill "$(cat $dir/up.pid)"
  grep -E "^(summary|totals):" $dir/cg.out | head -1 | awk '{print $2}'
  [ -z "${CALLGRIND_KEEP:-}" ] || cp $dir/cg.out "$CALLGRIND_KEEP.$n"
  rm -rf "$dir"
}
a=$(count "$n1"); b=$(count "$n2")
echo "instructions per proxied request: $(( (b - a) / (n2 - n1) ))  (Ir $a for $n1 requests, $b for $n2)"
