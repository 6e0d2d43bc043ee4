#!/usr/bin/env bash
# The harness's redis scenario alone (issue 21): Redis SET and GET direct, through Sinew and
# through twemproxy (Debian's nutcracker), with and without pipelining (redis-benchmark -P 1
# and -P 16), requests per second and each proxy's CPU per request; see bench/README.md.
# It measures the release build (built here) unless SINEW_BIN names another; the tables
# go to bench/.run/redis.md. Harness options given are added (later ones win):
#   bench/redis.sh                       one run, 4 s per case and target
#   bench/redis.sh --runs 3 --secs 10    medians of three
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${SINEW_BIN:-}" ]; then
  cargo build --release -q -p sinew
  export SINEW_BIN="$PWD/target/release/sinew"
fi
exec bench/run --scenarios redis --targets direct,sinew,twemproxy --runs 1 --secs 4 \
  --report bench/.run/redis.md "$@"
