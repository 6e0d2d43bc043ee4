#!/usr/bin/env bash
# Redis GET/SET through Sinew, through twemproxy (Debian's nutcracker) and direct, with
# and without pipelining (redis-benchmark -P 16): requests per second and the proxy's CPU
# per request (its utime+stime from /proc/PID/stat over the run, divided by requests,
# as bench/harness.py measures a proxy's CPU). One redis-server shard; each proxy on one
# worker/thread. Usage: bench/redis.sh [REQUESTS] (default 200000).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200000}
for cmd in redis-server:redis-server redis-benchmark:redis-tools nutcracker:nutcracker; do
  command -v "${cmd%%:*}" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${cmd##*:}"; }
done
sinew=${SINEW_BIN:-target/release/sinew}
dir=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rp=$(port); sp=$(port); np=$(port); ns=$(port)
redis-server --port "$rp" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids=($!)
cat > "$dir/sinew.yaml" <<YAML
listeners:
  - name: redis
    address: 127.0.0.1:$sp
    redis: { catch_all_cluster: shards, op_timeout: 5s }
clusters:
  - { name: shards, endpoints: [{address: 127.0.0.1:$rp}] }
YAML
"$sinew" proxy -c "$dir/sinew.yaml" --workers 1 >/dev/null 2>&1 &
sinew_pid=$!; pids+=($sinew_pid)
printf 'pool:\n  listen: 127.0.0.1:%s\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  servers:\n   - 127.0.0.1:%s:1\n' "$np" "$rp" > "$dir/nc.yml"
nutcracker -c "$dir/nc.yml" -a 127.0.0.1 -s "$ns" -o "$dir/nc.log" &
nc_pid=$!; pids+=($nc_pid)
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$dir"' EXIT
for p in $rp $sp $np; do
  for _ in $(seq 100); do [ "$(redis-cli -p "$p" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
done
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
printf '| target | pipeline | test | requests/s | proxy CPU µs/request |\n| --- | --- | --- | --- | --- |\n'
for target in direct:$rp:0 sinew:$sp:$sinew_pid twemproxy:$np:$nc_pid; do
  IFS=: read -r name p pid <<<"$target"
  for pipe in 1 16; do
    for t in set get; do
      before=0; [ "$pid" != 0 ] && before=$(ticks "$pid")
      rps=$(redis-benchmark -p "$p" -t "$t" -n "$n" -P "$pipe" -c 50 -r 100000 -q --csv 2>/dev/null | tail -1 | cut -d, -f2 | tr -d '"')
      cpu="-"
      if [ "$pid" != 0 ]; then
        after=$(ticks "$pid")
        cpu=$(python3 -c "print(f'{($after-$before)/$hz*1e6/$n:.2f}')")
      fi
      printf '| %s | %s | %s | %s | %s |\n' "$name" "$pipe" "$t" "$rps" "$cpu"
    done
  done
done
