#!/usr/bin/env bash
# A first side-by-side of Sinew, nginx and HAProxy: HTTP/1.1 keep-alive, 64-byte
# responses, each proxy with one worker pinned to core 0, wrk and the upstream (nginx
# returning a fixed body) pinned to core 1. Same for all: upstream keep-alive pooling on,
# access logs off. Reports requests/s, p99 and the proxy's CPU time per request
# (user+system from /proc/PID/stat). The full harness (issue 3) will replace this; it is
# kept small on purpose.
#
# Usage: bench/compare.sh [seconds]   (needs wrk, nginx, haproxy: apt-get install wrk nginx haproxy)
# SINEW_BIN=path runs another build of sinew (for A/B comparisons).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
for cmd in wrk nginx haproxy taskset; do
  command -v $cmd >/dev/null || { echo "missing $cmd (apt-get install wrk nginx haproxy util-linux)"; exit 1; }
done
sinew=${SINEW_BIN:-./target/release/sinew}
[ -n "${SINEW_BIN:-}" ] || cargo build --release -q -p sinew
dir=$(mktemp -d)
trap 'kill $(cat $dir/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf $dir' EXIT
body=$(printf 'x%.0s' $(seq 64))
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); NG=$(free_port); SW=$(free_port); HA=$(free_port)

cat > $dir/upstream.conf <<CONF
daemon off; worker_processes 1; pid $dir/upstream.pid; error_log $dir/upstream.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP; location / { return 200 "$body"; } } }
CONF
cat > $dir/nginx.conf <<CONF
daemon off; worker_processes 1; pid $dir/nginx.pid; error_log $dir/nginx.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$NG; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
cat > $dir/haproxy.cfg <<CONF
global
  nbthread 1
  maxconn 4000
  pidfile $dir/haproxy.pid
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend bench
  bind 127.0.0.1:$HA
  default_backend up
backend up
  server up1 127.0.0.1:$UP
CONF
cat > $dir/sinew.yaml <<CONF
listeners:
  - name: bench
    address: 127.0.0.1:$SW
    http:
      generate_request_id: false
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {prefix: /}
              cluster: up
clusters:
  - name: up
    endpoints: [{address: 127.0.0.1:$UP}]
CONF

taskset -c 1 nginx -c $dir/upstream.conf & 
taskset -c 0 nginx -c $dir/nginx.conf &
taskset -c 0 haproxy -f $dir/haproxy.cfg & echo $! > $dir/haproxy.pid
taskset -c 0 $sinew --workers 1 proxy -c $dir/sinew.yaml 2>$dir/sinew.err & echo $! > $dir/sinew.pid
for p in $UP $NG $SW $HA; do
  for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.05; done
done

cpu_ticks() { awk '{print $14+$15}' /proc/$1/stat; }
worker_pid() { # nginx: the worker is the master's child
  case $1 in
    nginx) pgrep -P $(cat $dir/nginx.pid) | head -1 ;;
    haproxy) cat $dir/haproxy.pid ;;
    *) cat $dir/sinew.pid ;;
  esac; }
hz=$(getconf CLK_TCK)

run() { # name port
  local name=$1 port=$2 pid="" t0=0
  taskset -c 1 wrk -t1 -c50 -d2s http://127.0.0.1:$port/ >/dev/null  # warm-up
  [ "$name" != direct ] && pid=$(worker_pid $name) && t0=$(cpu_ticks $pid)
  out=$(taskset -c 1 wrk -t1 -c50 -d${secs}s --latency http://127.0.0.1:$port/)
  local rps p99 reqs us="-"
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  if [ -n "$pid" ]; then
    us=$(echo "$(cpu_ticks $pid) $t0 $hz $reqs" | awk '{printf "%.1f", ($1-$2)/$3*1e6/$4}')
  fi
  printf "%-8s %12s req/s   p99 %-8s   proxy CPU %s us/req\n" $name $rps $p99 $us
}
echo "HTTP/1.1 keep-alive, 64-byte body, wrk -t1 -c50 -d${secs}s; proxy on core 0 (1 worker), wrk+upstream on core 1"
run direct $UP
run sinew $SW
run nginx $NG
run haproxy $HA
