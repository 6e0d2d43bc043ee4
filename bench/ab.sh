#!/usr/bin/env bash
# A/B CPU time and throughput per proxied request: Sinew on a plain config against the
# same config with YAML spliced in (the same env vars as bench/instructions.sh:
# LISTENER_EXTRA, HTTP_EXTRA, ROUTE_EXTRA, CLUSTER_EXTRA, indented 4, 6, 14 and 4), in
# interleaved rounds, so slow drifts of a shared machine hit both sides alike. Each round
# starts the proxy, warms it with 20,000 requests, then sends N keep-alive requests
# (h2load, 50 connections) to an nginx upstream, and reads the proxy's utime + stime.
#
# Usage: bench/ab.sh [ROUNDS] [N]   (defaults 8 and 100000; WORKERS=1 by default).
# Needs nginx and h2load (apt-get install nginx nghttp2-client). SINEW_BIN=path measures
# another build. Prints one line per run, then the medians and the median of the paired
# ratios (B over A).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-8}; n=${2:-100000}; workers=${WORKERS:-1}
for cmd in nginx h2load python3; do
  command -v $cmd >/dev/null || { echo "missing $cmd (apt-get install nginx nghttp2-client)"; exit 1; }
done
sinew=${SINEW_BIN:-./target/release/sinew}
[ -n "${SINEW_BIN:-}" ] || cargo build --release -q -p sinew
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dir=$(mktemp -d); up=$(free_port); px=$(free_port)
trap '[ -f $dir/up.pid ] && kill "$(cat $dir/up.pid)" 2>/dev/null; rm -rf "$dir"' EXIT
cat > $dir/up.conf <<CONF
daemon off; worker_processes 1; pid $dir/up.pid; error_log $dir/up.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$up; location / { return 200 "$(printf 'x%.0s' $(seq 64))"; } } }
CONF
config() { # listener http route cluster
  cat <<CONF
listeners:
  - name: bench
    address: 127.0.0.1:$px
$1
    http:
      generate_request_id: false
$2
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {prefix: /}
              cluster: up
$3
clusters:
  - name: up
    endpoints: [{address: 127.0.0.1:$up}]
$4
CONF
}
config "" "" "" "" > $dir/A.yaml
config "${LISTENER_EXTRA:-}" "${HTTP_EXTRA:-}" "${ROUTE_EXTRA:-}" "${CLUSTER_EXTRA:-}" > $dir/B.yaml
nginx -c $dir/up.conf &
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$up) 2>/dev/null && break; sleep 0.1; done
for _ in $(seq "$rounds"); do
  for side in A B; do
    "$sinew" --workers "$workers" proxy -c $dir/$side.yaml 2>/dev/null &
    pid=$!
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$px) 2>/dev/null && break; sleep 0.1; done
    h2load --h1 -n 20000 -c 50 "http://127.0.0.1:$px/" >/dev/null
    before=$(awk '{print $14 + $15}' /proc/$pid/stat)
    rps=$(h2load --h1 -n "$n" -c 50 "http://127.0.0.1:$px/" | awk '/^finished/{print $4}')
    after=$(awk '{print $14 + $15}' /proc/$pid/stat)
    ticks=$(getconf CLK_TCK)
    echo "$side rps=$rps cpu_us_per_req=$(python3 -c "print(round(($after - $before) * 1e6 / $ticks / $n, 2))")" | tee -a $dir/runs
    kill $pid; wait $pid 2>/dev/null || true
  done
done
python3 - $dir/runs <<'PY'
import sys, statistics as st
rows = [line.split() for line in open(sys.argv[1])]
def values(side, key):
    return [float(f.split("=")[1]) for r in rows if r[0] == side for f in r[1:] if f.startswith(key)]
for key in ("rps", "cpu_us_per_req"):
    a, b = values("A", key), values("B", key)
    paired = st.median(y / x for x, y in zip(a, b))
    print(f"{key}: A median {st.median(a):.2f}, B median {st.median(b):.2f}, "
          f"B/A {st.median(b) / st.median(a):.3f}, paired median {paired:.3f}")
PY
