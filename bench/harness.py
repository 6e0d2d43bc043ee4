#!/usr/bin/env python3
"""Sinew's benchmark harness: direct, Sinew, nginx and HAProxy side by side, in one run.

bench/run installs the tools and builds the binaries, then runs this. It writes the
proxies' configs to bench/configs/ (committed, so anyone can check they are fair), starts
the upstream and the proxies pinned with taskset (proxy on core 0; load generator and
upstream on core 1), runs each scenario against each target, and writes the raw figures
as JSON to bench/results/ and, for a full run, the tables to BENCHMARKS.md.

Every proxied figure comes with the proxy's CPU time per request (user + system of all
its processes and threads, from /proc/PID/stat before and after, and each of the two
apart) and its RSS, because on two cores the load generator can saturate its core before
the proxy does. The report opens with issue 18's targets, judged met or not met.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "bench", "configs")
RESULTS = os.path.join(ROOT, "bench", "results")
# Pid files, error logs and temp files of one run; relative paths in the committed
# configs point here.
RUN_DIR = os.path.join(ROOT, "bench", ".run")
TOOLS = os.path.join(ROOT, "bench", ".tools", "bin")

SINEW = os.environ.get("SINEW_BIN", os.path.join(ROOT, "target", "release", "sinew"))
BENCH_TOOL = os.path.join(ROOT, "target", "release", "sinew-bench")

PROXY_CORES = "0"
LOAD_CORES = "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# Fixed loopback ports, so the committed configs are the ones that run.
UPSTREAM = {"http": 19000, "tcp": 19001, "tls": 19002}
PORTS = {
    "direct": {"http": 19000, "h2c": 19000, "tls": 19002, "tcp": 19001},
    # tls-ecdsa, tls-rsa and mtls: the TLS scenarios' listeners (TLS_SCENARIOS), on the
    # three proxies compared only.
    "sinew": {"http": 19100, "h2c": 19100, "tls": 19101, "tcp": 19102,
              "tls-ecdsa": 19103, "tls-rsa": 19104, "mtls": 19105},
    "nginx": {"http": 19200, "h2c": 19203, "tls": 19201, "tcp": 19202,
              "tls-ecdsa": 19204, "tls-rsa": 19205, "mtls": 19206},
    "haproxy": {"http": 19300, "h2c": 19300, "tls": 19301, "tcp": 19302,
                "tls-ecdsa": 19303, "tls-rsa": 19304, "mtls": 19305},
    # The Sinew variants have the TLS listeners too, so that their configs differ from
    # plain Sinew's only in what they are for; the TLS scenarios do not measure them.
    "sinew-resilience": {"http": 19400, "h2c": 19400, "tls": 19401, "tcp": 19402,
                         "tls-ecdsa": 19403, "tls-rsa": 19404, "mtls": 19405},
    "sinew-nometrics": {"http": 19500, "h2c": 19500, "tls": 19501, "tcp": 19502,
                        "tls-ecdsa": 19503, "tls-rsa": 19504, "mtls": 19505},
    "sinew-accesslog": {"http": 19600, "h2c": 19600, "tls": 19601, "tcp": 19602,
                        "tls-ecdsa": 19603, "tls-rsa": 19604, "mtls": 19605},
}
TARGETS = ["direct", "sinew", "nginx", "haproxy", "sinew-resilience", "sinew-nometrics",
           "sinew-accesslog"]
PROXIES = ["sinew", "nginx", "haproxy", "sinew-resilience", "sinew-nometrics", "sinew-accesslog"]
# The RPC and Redis scenarios (issue 21) have upstreams of their own (a Bolt and a Dubbo
# `sinew-bench rpc-upstream`, one redis-server), on the load's core as the HTTP upstream
# is, and a Sinew of their own: target `sinew` run with config sinew-rpc.yaml (one `rpc`
# listener per protocol and a `redis` one), so that the HTTP scenarios' config stays as it
# was. twemproxy (Debian's nutcracker, one thread) is the Redis scenario's other proxy.
RPC_UPSTREAM = {"bolt": 19003, "dubbo": 19004}
REDIS_SERVER = 19005
PORTS["direct"].update(RPC_UPSTREAM, redis=REDIS_SERVER)
PORTS["sinew-rpc"] = {"bolt": 19700, "dubbo": 19701, "redis": 19702}
PORTS["twemproxy"] = {"redis": 19800, "stats": 19801}
ISSUE_21_SCENARIOS = ["rpc-bolt", "rpc-dubbo", "redis"]
# What rpc-load keeps in flight: connections × calls pipelined on each, of 1 KB payloads.
RPC_CONNS = 10
RPC_PIPELINE = 16
RPC_SIZE = 1024
# The anchor the RPC scenarios are read against: MOSN's published figure for 1 KB Bolt
# requests on one core (about 103,500 QPS). Sinew's own figure to put beside it is its
# requests per second of CPU time (requests/s ÷ (CPU seconds / wall seconds)), what it
# would serve with one core fully its own.
MOSN_BOLT_QPS_PER_CORE = 103_500
# redis-benchmark runs a count of requests, not a time: each of the redis scenario's four
# cases (SET and GET, -P 1 and -P 16) is sized to about a quarter of --secs at these
# rates (through a proxy, on this machine), so the scenario takes about as long as one
# of the others per target.
REDIS_CASES = [("SET", 1), ("GET", 1), ("SET", 16), ("GET", 16)]
REDIS_RATE_GUESS = {1: 40_000, 16: 150_000}
REDIS_CLIENTS = 50
REDIS_TARGETS = ("direct", "sinew", "twemproxy")
# Where target sinew-accesslog writes its access log (bench/.run is scratch, not committed).
ACCESS_LOG = "bench/.run/sinew-accesslog-access.log"

# The same limits for every proxy.
CONNECT_TIMEOUT = "5s"
IDLE_TIMEOUT = "60s"
BUFFER = "16k"
MAX_CONNECTIONS = 16384
CERT = "examples/certs/server.crt"
KEY = "examples/certs/server.key"
# The CA that signed CERT, for clients that verify it (curl and hold in (h)).
CA = "examples/certs/ca.crt"

# The TLS scenarios' certificates, made by make_tls_certs() with openssl on the first run
# and kept in the scratch dir: a CA (RSA 2048), an ECDSA P-256 and an RSA 2048 server
# certificate for 127.0.0.1 signed by it, and an ECDSA P-256 client certificate for mTLS.
TLS_CERTS = "bench/.run/certs"
# The session cache every proxy keeps in the TLS scenarios: Sinew's default
# (session_cache_size), HAProxy's tune.ssl.cachesize, and about what nginx's 1 MB shared
# cache holds (4,000 sessions by its documentation).
SESSION_CACHE = 4096
# The TLS scenarios run on the three proxies compared, each with the same listeners.
TLS_TARGETS = ("sinew", "nginx", "haproxy")
# Concurrent connections of sinew-bench load in the TLS scenarios.
TLS_CONNS = 50

# (h-return): the burst, how long RSS is watched after it, and how close to idle it must come.
RETURN_CONNS = 1000
RETURN_SECS = 30
RETURN_WITHIN_MB = 2.0
# Only the three compared: the Sinew variants differ in features, not in buffers.
RETURN_TARGETS = ("sinew", "nginx", "haproxy")


SCENARIOS = {
    "a": "HTTP/1.1 keep-alive, 64-byte responses, maximum throughput (wrk -t1 -c50)",
    "b": "HTTP/1.1 keep-alive, 64-byte responses at a fixed rate (half the slowest proxy's "
    "maximum in (a)), latency corrected for coordinated omission (oha -c50 -q RATE "
    "--latency-correction)",
    "c": "HTTP/2 (h2c prior knowledge), 100 concurrent streams over 10 connections "
    "(h2load -c10 -m10); HTTP/1.1 to the upstream",
    "d": "HTTP/1.1 keep-alive, 1 MiB responses (wrk -t1 -c10)",
    "e": "HTTP/1.1, a new TCP connection for each request (wrk -c50, Connection: close)",
    "f1": "TLS termination: a new TLS handshake for each request (wrk -c50 over https, "
    "Connection: close; TLS 1.3, RSA 2048 certificate)",
    "f2": "TLS termination: keep-alive requests over TLS (wrk -t1 -c50 over https)",
    "g": "TCP proxy: bulk transfer from the upstream, one connection (sinew-bench tcp-read)",
    "h": "Memory: RSS at idle (after one request), and with N idle keep-alive client "
    "connections open, each having made one request (sinew-bench hold); then, each proxy "
    "started afresh, the same over TLS (N idle TLS connections, HTTP/1.1 by ALPN)",
    "h-return": f"Memory comes back: each proxy started fresh with 2 workers; RSS at idle "
    f"(after one request), its peak while {RETURN_CONNS:,} keep-alive connections each make one "
    f"request and stay open (sinew-bench hold), and each second for {RETURN_SECS} s after the "
    "last of them closed",
    "a-all": "(a) with every proxy given all cores (2 workers/threads, not pinned)",
    "tls-full-ecdsa": f"TLS 1.3 full handshakes, ECDSA P-256 certificate: a new connection and "
    f"handshake for each request, resumption off in the client (sinew-bench load --close, "
    f"{TLS_CONNS} connections); CPU per request is per handshake",
    "tls-full-rsa": f"TLS 1.3 full handshakes, RSA 2048 certificate: a new connection and "
    f"handshake for each request, resumption off in the client (sinew-bench load --close, "
    f"{TLS_CONNS} connections); CPU per request is per handshake",
    "tls-resumed-ecdsa": f"TLS 1.3 resumed handshakes (session tickets, PSK with ECDHE), ECDSA "
    f"P-256 certificate: a new connection for each request, every one after each connection's "
    f"first resuming (sinew-bench load --close --resume, {TLS_CONNS} connections; a run where "
    f"fewer than 95% resumed fails)",
    "tls-resumed-rsa": f"TLS 1.3 resumed handshakes, RSA 2048 certificate, as tls-resumed-ecdsa",
    "mtls": f"keep-alive requests over mTLS: TLS 1.3, ECDSA P-256 server certificate, the client "
    f"presents an ECDSA P-256 certificate the proxy verifies and requires (sinew-bench load, "
    f"{TLS_CONNS} connections)",
    "plain": f"keep-alive requests over cleartext HTTP/1.1, the same client as mtls "
    f"(sinew-bench load, {TLS_CONNS} connections)",
    "rpc-bolt": f"SOFA Bolt v1 echo, {RPC_SIZE}-byte payloads, {RPC_CONNS} connections with "
    f"{RPC_PIPELINE} calls in flight on each (sinew-bench rpc-load against sinew-bench "
    f"rpc-upstream); direct and through Sinew (1 worker)",
    "rpc-dubbo": f"Dubbo (Hessian 2.0) echo, a {RPC_SIZE}-character string argument, "
    f"{RPC_CONNS} connections with {RPC_PIPELINE} calls in flight on each (sinew-bench "
    f"rpc-load against sinew-bench rpc-upstream); direct and through Sinew (1 worker)",
    "redis": f"Redis SET and GET, without and with pipelining (redis-benchmark -c "
    f"{REDIS_CLIENTS} -r 100000 -P 1 and -P 16) against one redis-server: direct, through "
    f"Sinew (1 worker) and through twemproxy (nutcracker, one thread)",
}
# Run by `--scenarios tls`.
TLS_SCENARIOS = ["tls-full-ecdsa", "tls-full-rsa", "tls-resumed-ecdsa", "tls-resumed-rsa",
                 "mtls", "plain"]


# --- configs -----------------------------------------------------------------------------


def sinew_config(resilience=False, metrics=True, access_log=False):
    """Sinew's config; with `resilience`, every resilience feature of issue 4 that runs
    locally is configured but does not fire, to show what it costs per request. Without
    `metrics`, the same config with metrics off (`stats_config` reject_all), to show what
    metrics cost: plain `sinew` keeps them, as Sinew does by default. With `access_log`,
    Envoy's default access-log line for every request goes to a file."""
    p = PORTS["sinew-resilience" if resilience else "sinew-accesslog" if access_log
              else "sinew" if metrics else "sinew-nometrics"]
    # Indented for their places: listener fields 4 spaces, `http` fields 6, route fields
    # 14, cluster fields 4.
    listener = http = route = cluster = tcp_cluster = ""
    if resilience:
        listener = """
    connection_rate_limit:
      token_bucket: {max_tokens: 1000000000, tokens_per_fill: 1000000000, fill_interval: 1s}
    tcp_keepalive: {keepalive_time: 60s}"""
        http = """
      local_rate_limit:
        token_bucket: {max_tokens: 1000000000, tokens_per_fill: 1000000000, fill_interval: 1s}"""
        route = f"""
              retry: {{retry_on: [5xx, connect-failure, reset], num_retries: 2, retry_host_predicate: [previous_hosts]}}
              local_rate_limit:
                token_bucket: {{max_tokens: 1000000000, tokens_per_fill: 1000000000, fill_interval: 1s}}
                key: client_ip
              fault:
                headers: [{{name: x-chaos, present: true}}]
                delay: {{fixed_delay: 1s, percentage: 100}}
                abort: {{http_status: 503, percentage: 100}}
              request_mirror_policies: [{{cluster: up, percentage: 0}}]"""
        cluster = f"""
    health_checks:
      - {{interval: 1s, timeout: 1s, unhealthy_threshold: 2, healthy_threshold: 1, http_health_check: {{path: /}}}}
    outlier_detection: {{consecutive_5xx: 5, enforcing_consecutive_gateway_failure: 100, enforcing_failure_percentage: 100}}
    circuit_breakers:
      retry_budget: {{budget_percent: 20, min_retry_concurrency: 3}}
    upstream_connection_options:
      tcp_keepalive: {{keepalive_time: 60s}}"""
        tcp_cluster = cluster.replace("http_health_check: {path: /}", "tcp_health_check: {}")
    if access_log:
        http = f"""
      access_log:
        - path: {ACCESS_LOG}"""
    title = ("Sinew with every resilience feature configured and none firing"
             if resilience else "Sinew with an access log to a file (Envoy's default format)"
             if access_log else "Sinew's side of the benchmark" if metrics
             else "Sinew with metrics off (stats_config reject_all)")
    stats = "" if metrics else "stats_config: {stats_matcher: {reject_all: true}}\n"
    tls_listeners = sinew_tls_listeners(p)
    return f"""# Generated by bench/harness.py: {title}. Do not edit by hand.
# Request ids are off: nginx and HAProxy do not make them either.
listeners:
  - name: http
    address: 127.0.0.1:{p['http']}{listener}
    http: &http
      generate_request_id: false
      idle_timeout: {IDLE_TIMEOUT}{http}
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{prefix: /}}
              cluster: up
              timeout: {IDLE_TIMEOUT}{route}
  - name: https
    address: 127.0.0.1:{p['tls']}
    tls:
      cert: {CERT}
      key: {KEY}
    http: *http{tls_listeners}
  - name: tcp
    address: 127.0.0.1:{p['tcp']}
    tcp:
      cluster: tcp-up
clusters:
  - name: up
    connect_timeout: {CONNECT_TIMEOUT}
    endpoints: [{{address: 127.0.0.1:{UPSTREAM['http']}}}]{cluster}
  - name: tcp-up
    connect_timeout: {CONNECT_TIMEOUT}
    endpoints: [{{address: 127.0.0.1:{UPSTREAM['tcp']}}}]{tcp_cluster}
{stats}"""


def sinew_tls_listeners(p):
    """The TLS scenarios' listeners: tickets and the session cache as Sinew's defaults
    (written out, so the config says what is compared), ALPN http/1.1 as for the others."""
    def listener(name, port, kind, extra=""):
        return f"""
  - name: {name}
    address: 127.0.0.1:{port}
    tls:
      cert: {TLS_CERTS}/{kind}.crt
      key: {TLS_CERTS}/{kind}.key
      min_version: TLSv1_2
      max_version: TLSv1_3
      session_tickets: true
      session_cache_size: {SESSION_CACHE}
      alpn: [http/1.1]{extra}
    http: *http"""
    mtls = f"""
      client_ca: {TLS_CERTS}/ca.crt
      require_client_certificate: true"""
    return (listener("https-ecdsa", p["tls-ecdsa"], "ecdsa")
            + listener("https-rsa", p["tls-rsa"], "rsa")
            + listener("mtls", p["mtls"], "ecdsa", mtls))


def nginx_config(workers):
    p = PORTS["nginx"]
    return f"""# Generated by bench/harness.py: nginx's side of the benchmark. Do not edit by hand.
# Run as: nginx -p <repo>/ -e bench/.run/nginx.err -c bench/configs/nginx-{workers}.conf
daemon off;
worker_processes {workers};
pid bench/.run/nginx.pid;
error_log bench/.run/nginx.err warn;
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
events {{ worker_connections {MAX_CONNECTIONS}; }}
http {{
  access_log off;
  client_body_temp_path bench/.run/nginx-client-body;
  proxy_temp_path bench/.run/nginx-proxy;
  fastcgi_temp_path bench/.run/nginx-fastcgi;
  uwsgi_temp_path bench/.run/nginx-uwsgi;
  scgi_temp_path bench/.run/nginx-scgi;
  keepalive_requests 1000000;
  keepalive_timeout {IDLE_TIMEOUT};
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_connect_timeout {CONNECT_TIMEOUT};
  proxy_read_timeout {IDLE_TIMEOUT};
  proxy_send_timeout {IDLE_TIMEOUT};
  proxy_buffer_size {BUFFER};
  proxy_buffers 4 {BUFFER};
  # Buffer in memory only, never in temp files: the others stream.
  proxy_max_temp_file_size 0;
  upstream up {{ server 127.0.0.1:{UPSTREAM['http']}; keepalive 64; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{p['http']};
    listen 127.0.0.1:{p['tls']} ssl;
    ssl_certificate ../../{CERT};
    ssl_certificate_key ../../{KEY};
    location / {{ proxy_pass http://up; }}
  }}
  # The TLS scenarios: tickets on (nginx's default), a shared session cache of about
  # {SESSION_CACHE} sessions, TLS 1.2 and 1.3, ALPN http/1.1 (nginx's only, without http2).
  server {{
    listen 127.0.0.1:{p['tls-ecdsa']} ssl;
    ssl_certificate ../../{TLS_CERTS}/ecdsa.crt;
    ssl_certificate_key ../../{TLS_CERTS}/ecdsa.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets on;
    ssl_session_cache shared:bench-ecdsa:1m;
    location / {{ proxy_pass http://up; }}
  }}
  server {{
    listen 127.0.0.1:{p['tls-rsa']} ssl;
    ssl_certificate ../../{TLS_CERTS}/rsa.crt;
    ssl_certificate_key ../../{TLS_CERTS}/rsa.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets on;
    ssl_session_cache shared:bench-rsa:1m;
    location / {{ proxy_pass http://up; }}
  }}
  server {{
    listen 127.0.0.1:{p['mtls']} ssl;
    ssl_certificate ../../{TLS_CERTS}/ecdsa.crt;
    ssl_certificate_key ../../{TLS_CERTS}/ecdsa.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets on;
    ssl_session_cache shared:bench-mtls:1m;
    ssl_client_certificate ../../{TLS_CERTS}/ca.crt;
    ssl_verify_client on;
    location / {{ proxy_pass http://up; }}
  }}
  # nginx 1.22 serves h2c (prior knowledge) only on a port of its own.
  server {{
    listen 127.0.0.1:{p['h2c']} http2;
    http2_max_concurrent_streams 128;
    location / {{ proxy_pass http://up; }}
  }}
}}
stream {{
  server {{
    listen 127.0.0.1:{p['tcp']};
    proxy_connect_timeout {CONNECT_TIMEOUT};
    proxy_buffer_size {BUFFER};
    proxy_pass 127.0.0.1:{UPSTREAM['tcp']};
  }}
}}
"""


def haproxy_config(workers):
    p = PORTS["haproxy"]
    return f"""# Generated by bench/harness.py: HAProxy's side of the benchmark. Do not edit by hand.
# Run from the repository root as: haproxy -f bench/configs/haproxy-{workers}.cfg
global
  nbthread {workers}
  maxconn {MAX_CONNECTIONS}
  # HAProxy wants two descriptors per connection and by default will not start without
  # them; a machine with a hard limit of 20,000 still has enough for the 10,000 idle
  # client connections of scenario (h), whose server side is a few pooled connections.
  no strict-limits
  pidfile bench/.run/haproxy.pid
  tune.bufsize {int(BUFFER[:-1]) * 1024}
  # The session cache of the TLS scenarios (TLS 1.2 session ids; the default is 20,000).
  tune.ssl.cachesize {SESSION_CACHE}
  # Find the key beside the certificate as server.key.
  ssl-load-extra-del-ext
defaults
  mode http
  maxconn {MAX_CONNECTIONS}
  timeout connect {CONNECT_TIMEOUT}
  timeout client {IDLE_TIMEOUT}
  timeout server {IDLE_TIMEOUT}
  timeout http-keep-alive {IDLE_TIMEOUT}
  http-reuse always
# Cleartext HTTP/1.1 and h2c (HAProxy recognises the HTTP/2 preface) on one port.
frontend http
  bind 127.0.0.1:{p['http']}
  bind 127.0.0.1:{p['tls']} ssl crt {CERT}
  default_backend up
# The TLS scenarios: tickets on (HAProxy's default), TLS 1.2 and 1.3, ALPN http/1.1.
frontend tls
  bind 127.0.0.1:{p['tls-ecdsa']} ssl crt {TLS_CERTS}/ecdsa.crt ssl-min-ver TLSv1.2 alpn http/1.1
  bind 127.0.0.1:{p['tls-rsa']} ssl crt {TLS_CERTS}/rsa.crt ssl-min-ver TLSv1.2 alpn http/1.1
  bind 127.0.0.1:{p['mtls']} ssl crt {TLS_CERTS}/ecdsa.crt ssl-min-ver TLSv1.2 alpn http/1.1 ca-file {TLS_CERTS}/ca.crt verify required
  default_backend up
backend up
  server up1 127.0.0.1:{UPSTREAM['http']}
listen tcp
  mode tcp
  bind 127.0.0.1:{p['tcp']}
  server up1 127.0.0.1:{UPSTREAM['tcp']}
"""


def sinew_rpc_config():
    """Sinew's side of the RPC and Redis scenarios: a Bolt and a Dubbo `rpc` listener that
    route the echo service to the matching echo upstream, and a `redis` listener with the
    one redis-server as its only shard."""
    p = PORTS["sinew-rpc"]

    def rpc(protocol):
        return f"""
  - name: {protocol}
    address: 127.0.0.1:{p[protocol]}
    rpc:
      protocol: {protocol}
      request_timeout: {IDLE_TIMEOUT}
      virtual_hosts:
        - name: echo
          domains: ["com.example.EchoService"]
          routes:
            - match: {{prefix: /}}
              cluster: {protocol}-up"""

    def cluster(name, port):
        return f"""
  - name: {name}
    connect_timeout: {CONNECT_TIMEOUT}
    endpoints: [{{address: 127.0.0.1:{port}}}]"""

    return (f"""# Generated by bench/harness.py: Sinew's side of the RPC and Redis scenarios (issue 21).
# Do not edit by hand.
listeners:{rpc("bolt")}{rpc("dubbo")}
  - name: redis
    address: 127.0.0.1:{p['redis']}
    redis: {{catch_all_cluster: redis-up, op_timeout: 5s}}
clusters:{cluster("bolt-up", RPC_UPSTREAM["bolt"])}{cluster("dubbo-up", RPC_UPSTREAM["dubbo"])}"""
            f"""{cluster("redis-up", REDIS_SERVER)}
""")


def twemproxy_config():
    """twemproxy's pool: the one redis-server, ketama over fnv1a_64 as Sinew's default, one
    server connection (twemproxy's default, as Sinew keeps one per worker)."""
    return f"""# Generated by bench/harness.py: twemproxy's side of the redis scenario. Do not edit by hand.
# Run as: nutcracker -c bench/configs/twemproxy.yml -a 127.0.0.1 -s {PORTS['twemproxy']['stats']}
bench:
  listen: 127.0.0.1:{PORTS['twemproxy']['redis']}
  hash: fnv1a_64
  distribution: ketama
  redis: true
  timeout: 5000
  server_connections: 1
  servers:
    - 127.0.0.1:{REDIS_SERVER}:1
"""


def write_configs():
    os.makedirs(CONFIGS, exist_ok=True)
    files = {"sinew.yaml": sinew_config(), "sinew-resilience.yaml": sinew_config(resilience=True),
             "sinew-nometrics.yaml": sinew_config(metrics=False),
             "sinew-accesslog.yaml": sinew_config(access_log=True),
             "sinew-rpc.yaml": sinew_rpc_config(), "twemproxy.yml": twemproxy_config()}
    for workers in (1, 2):
        files[f"nginx-{workers}.conf"] = nginx_config(workers)
        files[f"haproxy-{workers}.cfg"] = haproxy_config(workers)
    for name, text in files.items():
        with open(os.path.join(CONFIGS, name), "w") as f:
            f.write(text)


def make_tls_certs():
    """The TLS scenarios' certificates (TLS_CERTS), made with openssl unless they exist: a
    CA (RSA 2048), server certificates for 127.0.0.1 and localhost with an ECDSA P-256 key
    and with an RSA 2048 key, and a client certificate (ECDSA P-256) for mTLS."""
    where = os.path.join(ROOT, TLS_CERTS)
    made = ["ca.crt", "ecdsa.crt", "ecdsa.key", "rsa.crt", "rsa.key", "client.crt", "client.key"]
    if all(os.path.exists(os.path.join(where, name)) for name in made):
        return
    os.makedirs(where, exist_ok=True)

    def openssl(*args):
        out = subprocess.run(["openssl", *args], cwd=where, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"openssl {' '.join(args)} failed: {out.stderr.strip()[:400]}")

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj",
            "/CN=Sinew bench CA", "-keyout", "ca.key", "-out", "ca.crt")
    ecdsa = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    for name, key, usage in (("ecdsa", ecdsa, "serverAuth"), ("rsa", ["-newkey", "rsa:2048"], "serverAuth"),
                             ("client", ecdsa, "clientAuth")):
        openssl("req", *key, "-nodes", "-subj", f"/CN=sinew bench {name}", "-keyout", f"{name}.key",
                "-out", f"{name}.csr")
        with open(os.path.join(where, f"{name}.ext"), "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                    f"extendedKeyUsage={usage}\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "3650", "-extfile", f"{name}.ext", "-out", f"{name}.crt")


# --- processes ---------------------------------------------------------------------------


def wait_for_port(port, what, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"{what} did not start listening on 127.0.0.1:{port}; see {RUN_DIR}")


def port_is_free(port):
    s = socket.socket()
    # As the servers do, so that connections in TIME_WAIT from a previous run do not count.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class Target:
    """A running proxy: its process tree, CPU time and RSS."""

    def __init__(self, name, workers, config=None):
        self.name = name
        self.workers = workers
        # The config (and PORTS entry) it runs with: its name's, or another one's, as
        # `sinew` runs sinew-rpc in the issue 21 scenarios.
        self.config = config or name
        self.proc = None

    def command(self):
        cores = PROXY_CORES if self.workers == 1 else "0-1"
        pin = ["taskset", "-c", cores]
        if self.name.startswith("sinew"):
            return pin + [SINEW, "--workers", str(self.workers), "proxy", "-c",
                          f"bench/configs/{self.config}.yaml"]
        if self.name == "nginx":
            return pin + ["nginx", "-p", ROOT + "/", "-e", "bench/.run/nginx.err", "-c",
                          f"bench/configs/nginx-{self.workers}.conf"]
        if self.name == "haproxy":
            return pin + ["haproxy", "-f", f"bench/configs/haproxy-{self.workers}.cfg"]
        if self.name == "twemproxy":
            # nutcracker has one thread, whatever `workers` says.
            return pin + ["nutcracker", "-c", "bench/configs/twemproxy.yml", "-a", "127.0.0.1",
                          "-s", str(PORTS["twemproxy"]["stats"]), "-o", "bench/.run/twemproxy.err"]
        raise ValueError(self.name)

    def start(self):
        if self.name == "sinew-accesslog" and os.path.exists(os.path.join(ROOT, ACCESS_LOG)):
            os.remove(os.path.join(ROOT, ACCESS_LOG))  # each run starts a fresh file
        log = open(os.path.join(RUN_DIR, f"{self.config}.log"), "w")
        env = dict(os.environ, RUST_LOG="warn")
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, stdout=log, stderr=log, env=env,
                                     start_new_session=True)
        for port in sorted(set(PORTS[self.config].values())):
            wait_for_port(port, self.name)
        if self.name == "nginx":
            # The workers start after the master listens.
            deadline = time.time() + 5
            while len(self.pids()) < 1 + self.workers and time.time() < deadline:
                time.sleep(0.02)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def pids(self):
        """The proxy's processes: the one we started and its descendants (nginx workers)."""
        pids, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as f:
                        todo.extend(int(c) for c in f.read().split())
            except OSError:
                pass
        # taskset execs the proxy, so the pid we started is the proxy's.
        return pids

    def cpu_seconds(self):
        """(user, system) CPU seconds of the proxy's processes, each summed over its threads."""
        user = system = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                # utime and stime are fields 14 and 15; fields[0] here is field 3. A
                # process's own stat sums all its threads, live and exited.
                user += int(fields[11])
                system += int(fields[12])
            except OSError:
                pass
        return user / CLK_TCK, system / CLK_TCK

    def rss_bytes(self):
        return sum(rss_of(pid) for pid in self.pids())


def rss_of(pid):
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


class Direct:
    """The direct baseline: no proxy; the client talks to the upstream."""

    name = "direct"

    def cpu_seconds(self):
        return None

    def rss_bytes(self):
        return None


def start_upstream():
    log = open(os.path.join(RUN_DIR, "upstream.log"), "w")
    proc = subprocess.Popen(
        ["taskset", "-c", LOAD_CORES, BENCH_TOOL, "upstream",
         "--http", f"127.0.0.1:{UPSTREAM['http']}", "--tcp-source", f"127.0.0.1:{UPSTREAM['tcp']}",
         "--tls", f"127.0.0.1:{UPSTREAM['tls']}", "--cert", CERT, "--key", KEY],
        cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
    for port in UPSTREAM.values():
        wait_for_port(port, "the upstream")
    return proc


def start_server(name, cmd, port):
    """A process of the load's core (an upstream of the issue 21 scenarios), listening on
    `port` when this returns."""
    log = open(os.path.join(RUN_DIR, f"{name}.log"), "w")
    proc = subprocess.Popen(["taskset", "-c", LOAD_CORES] + cmd, cwd=ROOT, stdout=log,
                            stderr=log, start_new_session=True)
    try:
        wait_for_port(port, name)
    except SystemExit:
        stop_server(proc)
        raise
    return proc


def stop_server(proc):
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def start_rpc_upstream(protocol):
    """The echo server of an RPC scenario: one thread, as the HTTP upstream has."""
    port = RPC_UPSTREAM[protocol]
    return start_server(f"rpc-upstream-{protocol}",
                        [BENCH_TOOL, "rpc-upstream", "--protocol", protocol, "--listen",
                         f"127.0.0.1:{port}", "--threads", "1"], port)


def start_redis_server():
    """The redis scenario's one shard: no persistence, nothing but memory."""
    return start_server("redis-server",
                        ["redis-server", "--port", str(REDIS_SERVER), "--bind", "127.0.0.1",
                         "--save", "", "--appendonly", "no", "--logfile", ""], REDIS_SERVER)


# --- load generators ---------------------------------------------------------------------


def run_load(cmd, timeout):
    full = ["taskset", "-c", LOAD_CORES] + cmd
    out = subprocess.run(full, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()[:400]}")
    return out.stdout


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def wrk_latency_ms(text):
    value = re.match(r"([\d.]+)(us|ms|s|m|h)$", text)
    if not value:
        raise RuntimeError(f"cannot read the latency {text!r}")
    return float(value.group(1)) * UNITS[value.group(2)]


def find(pattern, out, what):
    """The first match of `pattern` in a load generator's output; a clear error if none."""
    match = re.search(pattern, out)
    if not match:
        raise RuntimeError(f"no {what} in the output: {out.strip()[-300:]!r}")
    return match


def wrk(url, secs, conns, headers=()):
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    out = run_load(cmd + [url], secs + 30)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    transfer = find(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB)", out, "transfer rate")
    scale = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[transfer.group(2)]
    result = {
        "requests": int(find(r"(\d+) requests in", out, "request count").group(1)),
        "rps": float(find(r"Requests/sec:\s+([\d.]+)", out, "request rate").group(1)),
        "mb_per_s": float(transfer.group(1)) * scale / 1e6,
        # Anchored to the start of a line: "+/- Stdev" columns such as "87.99%" end lines too.
        "p50_ms": wrk_latency_ms(find(r"(?m)^\s+50%\s+(\S+)", out, "p50").group(1)),
        "p99_ms": wrk_latency_ms(find(r"(?m)^\s+99%\s+(\S+)", out, "p99").group(1)),
        "errors": int(errors.group(1)) if errors else 0,
    }
    if socket_errors:
        result["socket_errors"] = sum(int(x) for x in socket_errors.groups())
    return result


def oha_binary():
    local = os.path.join(TOOLS, "oha")
    return local if os.path.exists(local) else shutil.which("oha")


def oha(url, secs, conns, rate):
    out = run_load([oha_binary(), "-z", f"{secs}s", "-c", str(conns), "-q", str(rate),
                    "--latency-correction", "--no-tui", "--output-format", "json", url], secs + 30)
    data = json.loads(out)
    pct = data["latencyPercentiles"]
    codes = data.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    total = sum(codes.values())
    # oha cancels the requests in flight when the time is up; those are not errors.
    errors = sum(n for kind, n in data.get("errorDistribution", {}).items()
                 if kind != "aborted due to deadline")
    return {
        "requests": total,
        "rps": data["summary"]["requestsPerSec"],
        "p50_ms": pct["p50"] * 1e3,
        "p99_ms": pct["p99"] * 1e3,
        "p99.9_ms": pct["p99.9"] * 1e3,
        "errors": total - ok + errors,
    }


def h2load(url, secs):
    out = run_load(["h2load", "-t1", "-c10", "-m10", "-D", str(secs), url], secs + 30)
    finished = find(r"finished in [\d.]+m?s, ([\d.]+) req/s, ([\d.]+)([KMG]?B)/s", out, "summary")
    status = find(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored", out, "status counts")
    scale = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[finished.group(3)]
    done, succeeded = int(status.group(1)), int(status.group(2))
    p_line = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out)
    return {
        "requests": done,
        "rps": float(finished.group(1)),
        "mb_per_s": float(finished.group(2)) * scale / 1e6,
        "mean_ms": wrk_latency_ms(p_line.group(3)) if p_line else None,
        "errors": done - succeeded,
    }


def bench_load(port, secs, close=False, tls=False, resume=False, client_cert=False):
    """`sinew-bench load` against `port`: TLS_CONNS connections, keep-alive or (`close`) a
    new connection for each request; over TLS 1.3 with `tls`, resuming sessions with
    `resume`, presenting the client certificate with `client_cert`."""
    cmd = [BENCH_TOOL, "load", "--connect", f"127.0.0.1:{port}", "--conns", str(TLS_CONNS),
           "--secs", str(secs)]
    if close:
        cmd.append("--close")
    if tls:
        cmd += ["--ca", os.path.join(ROOT, TLS_CERTS, "ca.crt")]
    if resume:
        cmd.append("--resume")
    if client_cert:
        cmd += ["--cert", os.path.join(ROOT, TLS_CERTS, "client.crt"),
                "--key", os.path.join(ROOT, TLS_CERTS, "client.key")]
    data = json.loads(run_load(cmd, secs + 30))
    result = {key: data[key] for key in ("requests", "rps", "errors", "full_handshakes",
                                         "resumed_handshakes", "negotiated")}
    handshakes = data["full_handshakes"] + data["resumed_handshakes"]
    if handshakes:
        result["resumed_share"] = data["resumed_handshakes"] / handshakes
    if data["errors"]:
        result["first_error"] = data["first_error"]
    return result


# The share of handshakes a resumed run must have resumed: each connection's first is full.
MIN_RESUMED_SHARE = 0.95


def check_handshakes(scenario, result):
    """A full-handshake run must not have resumed, and a resumed one must have: else its
    figures measure something else, and the run fails with the counts."""
    full, resumed = result["full_handshakes"], result["resumed_handshakes"]
    if scenario.startswith("tls-full") and resumed:
        raise RuntimeError(f"{resumed} of {full + resumed} handshakes resumed in a full-handshake run")
    if scenario.startswith("tls-resumed") and result.get("resumed_share", 0) < MIN_RESUMED_SHARE:
        raise RuntimeError(f"only {resumed} of {full + resumed} handshakes resumed (less than "
                           f"{MIN_RESUMED_SHARE:.0%})")
    return result


def openssl_resumes(port):
    """Whether an OpenSSL client resumes with the ticket of its first connection to `port`
    (openssl s_client -sess_out, then -sess_in): a check of the proxy's resumption from a
    client other than the load's. Each connection makes one request and reads the reply,
    so the TLS 1.3 tickets that come after the handshake are in."""
    session = os.path.join(RUN_DIR, f"session-{port}.pem")
    request = "GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    outputs = []
    for flag in ("-sess_out", "-sess_in"):
        out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3",
                              "-CAfile", os.path.join(ROOT, TLS_CERTS, "ca.crt"), "-ign_eof",
                              flag, session], input=request, capture_output=True, text=True,
                             timeout=10)
        outputs.append(out.stdout)
    return "Reused, TLSv1.3" in outputs[1] and "New, TLSv1.3" in outputs[0]


def rpc_load(protocol, port, secs):
    """`sinew-bench rpc-load`: RPC_CONNS connections, RPC_PIPELINE calls in flight on each."""
    cmd = [BENCH_TOOL, "rpc-load", "--protocol", protocol, "--target", f"127.0.0.1:{port}",
           "--connections", str(RPC_CONNS), "--pipeline", str(RPC_PIPELINE), "--secs", str(secs),
           "--size", str(RPC_SIZE)]
    data = json.loads(run_load(cmd, secs + 30))
    result = {key: data[key] for key in ("requests", "rps", "errors")}
    if data["errors"]:
        result["first_error"] = data["first_error"]
    return result


def add_per_core(result):
    """The requests a fully used core would serve: requests/s ÷ (CPU seconds / wall
    seconds), which is requests per CPU second (MOSN's one-core QPS is read the same way)."""
    if result and result.get("cpu_s") and result.get("requests"):
        result["qps_per_core"] = result["requests"] / result["cpu_s"]
    return result


def redis_requests(pipeline, secs):
    """redis-benchmark's -n for one case: about a quarter of `secs` at REDIS_RATE_GUESS."""
    return max(10_000, int(REDIS_RATE_GUESS[pipeline] * secs / 4))


def read_redis_benchmark(out, command):
    """`command`'s requests/s, and its p50 and p99 latency where given, from redis-benchmark
    --csv: a header line (`"test","rps",...,"p50_latency_ms",...`), then one line per test
    (`"SET","123.45",...`); versions before 7 print no header and the rate only."""
    header = []
    for line in out.splitlines():
        fields = [f.strip('"') for f in line.strip().split(",")]
        if fields[0] == "test":
            header = fields
        elif len(fields) >= 2 and fields[0] == command:
            result = {"rps": float(fields[1])}
            for name, key in (("p50_latency_ms", "p50_ms"), ("p99_latency_ms", "p99_ms")):
                if name in header and header.index(name) < len(fields):
                    result[key] = float(fields[header.index(name)])
            return result
    raise RuntimeError(f"no {command} rate in redis-benchmark's output: {out.strip()[-300:]!r}")


def redis_benchmark(port, command, pipeline, requests):
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", command.lower(),
           "-n", str(requests), "-P", str(pipeline), "-c", str(REDIS_CLIENTS), "-r", "100000",
           "-q", "--csv"]
    out = run_load(cmd, 120)
    return {"requests": requests, **read_redis_benchmark(out, command)}


def tcp_read(port, secs):
    out = run_load([BENCH_TOOL, "tcp-read", "--connect", f"127.0.0.1:{port}", "--secs", str(secs)],
                   secs + 30)
    data = json.loads(out)
    return {"bytes": data["bytes"], "gb_per_s": data["bytes_per_sec"] / 1e9}


# --- scenarios ---------------------------------------------------------------------------


def measure(target, action):
    """Runs one load against one target, with the target's CPU time and RSS around it."""
    cpu_before = target.cpu_seconds()
    result = action()
    cpu_after = target.cpu_seconds()
    if cpu_before is not None:
        add_cpu(result, cpu_before, cpu_after)
        result["rss_mb"] = target.rss_bytes() / 1e6
    return result


def add_cpu(result, before, after):
    """Puts the CPU time between two (user, system) readings into `result`: in seconds,
    and per request and per GB where the result counts them, as total, user and system."""
    user = after[0] - before[0]
    system = after[1] - before[1]
    parts = {"cpu": user + system, "user": user, "sys": system}
    for part, seconds in parts.items():
        result[f"{part}_s"] = seconds
        if result.get("requests"):
            result[f"{part}_us_per_request"] = seconds * 1e6 / result["requests"]
        if result.get("bytes"):
            result[f"{part}_s_per_gb"] = seconds * 1e9 / result["bytes"]


def scenario_action(scenario, target, secs, rate=None):
    ports = PORTS[getattr(target, "config", target.name)]
    if scenario in ("rpc-bolt", "rpc-dubbo"):
        protocol = scenario[len("rpc-"):]
        return lambda: rpc_load(protocol, ports[protocol], secs)
    http = f"http://127.0.0.1:{ports['http']}/"
    if scenario in ("a", "a-all"):
        return lambda: wrk(http, secs, 50)
    if scenario == "b":
        return lambda: oha(http, secs, 50, rate)
    if scenario == "c":
        return lambda: h2load(f"http://127.0.0.1:{ports['h2c']}/", secs)
    if scenario == "d":
        return lambda: wrk(http + "1m", secs, 10)
    if scenario == "e":
        return lambda: wrk(http, secs, 50, ["Connection: close"])
    if scenario == "f1":
        return lambda: wrk(f"https://127.0.0.1:{ports['tls']}/", secs, 50, ["Connection: close"])
    if scenario == "f2":
        return lambda: wrk(f"https://127.0.0.1:{ports['tls']}/", secs, 50)
    if scenario == "g":
        return lambda: tcp_read(ports["tcp"], secs)
    if scenario.startswith(("tls-full-", "tls-resumed-")):
        port = ports["tls-ecdsa" if scenario.endswith("ecdsa") else "tls-rsa"]
        resume = scenario.startswith("tls-resumed-")
        return lambda: check_handshakes(scenario, bench_load(port, secs, close=True, tls=True,
                                                             resume=resume))
    if scenario == "mtls":
        return lambda: bench_load(ports["mtls"], secs, tls=True, client_cert=True)
    if scenario == "plain":
        return lambda: bench_load(ports["http"], secs)
    raise ValueError(scenario)


def run_throughput(scenarios, chosen, workers, args, results):
    """Starts the chosen proxies with `workers` workers each and runs `scenarios` (not (h))
    against them and, if chosen, direct; stops the proxies again."""
    targets = [Direct()] if "direct" in chosen else []
    try:
        for name in PROXIES:
            if name in chosen:
                targets.append(Target(name, workers))
                targets[-1].start()
        run_scenarios(scenarios, targets, args, results)
    finally:
        for target in targets:
            if isinstance(target, Target):
                target.stop()


def run_rpc(scenario, chosen, args, results):
    """An RPC scenario: its echo upstream, direct and Sinew (1 worker, config sinew-rpc)
    as chosen; each Sinew result gets its QPS per fully used core."""
    upstream = start_rpc_upstream(scenario[len("rpc-"):])
    targets = [Direct()] if "direct" in chosen else []
    try:
        if "sinew" in chosen:
            targets.append(Target("sinew", 1, config="sinew-rpc"))
            targets[-1].start()
        run_scenarios([scenario], targets, args, results)
    finally:
        for target in targets:
            if isinstance(target, Target):
                target.stop()
        stop_server(upstream)
    for runs in results.get(scenario, {}).get("runs", {}).values():
        for result in runs:
            add_per_core(result)


def run_redis(chosen, args, results):
    """The redis scenario: one redis-server; direct, Sinew (1 worker, config sinew-rpc) and
    twemproxy as chosen; each of REDIS_CASES warmed on every target, then run `--runs`
    times taking the targets in turn."""
    print(f"(redis) {SCENARIOS['redis']}", flush=True)
    server = start_redis_server()
    targets = []
    try:
        for name in REDIS_TARGETS:
            if name not in chosen:
                continue
            if name == "direct":
                targets.append(Direct())
                continue
            targets.append(Target(name, 1, config="sinew-rpc" if name == "sinew" else None))
            targets[-1].start()
        cases, requests = {}, {}
        for command, pipeline in REDIS_CASES:
            case = f"{command} -P {pipeline}"
            requests[case] = redis_requests(pipeline, args.secs)
            runs = {t.name: [] for t in targets}
            print(f"  {case}, {requests[case]:,} requests", flush=True)

            def action(target, n):
                port = PORTS[getattr(target, "config", target.name)]["redis"]
                return lambda: redis_benchmark(port, command, pipeline, n)

            for target in targets:
                try:
                    action(target, max(1000, requests[case] // 10))()
                except Exception as e:  # shows again in the measured run
                    print(f"    {target.name}: warm-up failed: {e}", file=sys.stderr)
            for _ in range(args.runs):
                for target in targets:
                    try:
                        result = measure(target, action(target, requests[case]))
                    except Exception as e:
                        result = {"failed": f"{type(e).__name__}: {str(e)[:300]}"}
                    runs[target.name].append(result)
                    print(f"    {target.name:9} {summary_line('redis', result)}", flush=True)
            cases[case] = runs
        results["redis"] = {"description": SCENARIOS["redis"], "requests": requests,
                            "cases": cases}
    finally:
        for target in targets:
            if isinstance(target, Target):
                target.stop()
        stop_server(server)


def run_scenarios(scenarios, targets, args, results):
    for scenario in scenarios:
        rate = None
        if scenario == "b":
            maxima = [statistics.median(r["rps"] for r in results["a"]["runs"][name])
                      for name in PROXIES if name in results.get("a", {}).get("runs", {})]
            if not maxima:
                print("(b) needs (a) for its rate; skipped", file=sys.stderr)
                continue
            rate = int(min(maxima) / 2)
        # The TLS scenarios' listeners are on the three proxies compared only.
        measured = [t for t in targets if scenario not in TLS_SCENARIOS or t.name in TLS_TARGETS]
        runs = {t.name: [] for t in measured}
        print(f"({scenario}) {SCENARIOS[scenario]}", flush=True)
        # Warm every target once (pools, caches, TLS session state off), then interleave
        # the repetitions so that drift in the machine spreads over all targets.
        for target in measured:
            measure_once(scenario, target, args, rate, warm=True)
        for _ in range(args.runs):
            for target in measured:
                result = measure_once(scenario, target, args, rate)
                runs[target.name].append(result)
                print(f"    {target.name:8} {summary_line(scenario, result)}", flush=True)
        results[scenario] = {"description": SCENARIOS[scenario], "runs": runs}
        if scenario.startswith("tls-resumed-"):
            kind = "tls-ecdsa" if scenario.endswith("ecdsa") else "tls-rsa"
            results[scenario]["openssl_s_client_resumes"] = {
                t.name: openssl_resumes(PORTS[t.name][kind]) for t in measured}
            print(f"    openssl s_client resumes: {results[scenario]['openssl_s_client_resumes']}",
                  flush=True)
        if rate:
            results[scenario]["rate"] = rate


def measure_once(scenario, target, args, rate, warm=False):
    if warm:
        try:
            scenario_action(scenario, target, 1, rate)()
        except Exception as e:  # a failing warm-up shows again in the measured run
            print(f"    {target.name}: warm-up failed: {e}", file=sys.stderr)
        return None
    try:
        return measure(target, scenario_action(scenario, target, args.secs, rate))
    except Exception as e:
        where = traceback.extract_tb(e.__traceback__)[-1]
        return {"failed": f"{type(e).__name__} at line {where.lineno}: {str(e)[:300]}"}


def summary_line(scenario, r):
    if "failed" in r:
        return f"FAILED: {r['failed']}"
    parts = []
    if "gb_per_s" in r:
        parts.append(f"{r['gb_per_s']:.2f} GB/s")
    elif scenario == "d":
        parts.append(f"{r['mb_per_s']:.0f} MB/s")
    else:
        parts.append(f"{r['rps']:.0f} req/s")
    for key in ("p50_ms", "p99_ms", "p99.9_ms"):
        if r.get(key) is not None:
            parts.append(f"{key[:-3]} {r[key]:.2f} ms")
    if "cpu_us_per_request" in r:
        parts.append(f"{r['cpu_us_per_request']:.1f} µs CPU/req (user {r['user_us_per_request']:.1f}, "
                     f"sys {r['sys_us_per_request']:.1f})")
    if "cpu_s_per_gb" in r:
        parts.append(f"{r['cpu_s_per_gb']:.3f} s CPU/GB (user {r['user_s_per_gb']:.3f}, "
                     f"sys {r['sys_s_per_gb']:.3f})")
    if r.get("cpu_s") and r.get("requests") and scenario.startswith("rpc-"):
        parts.append(f"{r['requests'] / r['cpu_s']:,.0f} QPS per fully used core")
    if "resumed_share" in r:
        parts.append(f"{r['resumed_handshakes']:,} of {r['full_handshakes'] + r['resumed_handshakes']:,} "
                     f"handshakes resumed")
    if r.get("errors") or r.get("socket_errors"):
        parts.append(f"errors {r.get('errors', 0)} socket {r.get('socket_errors', 0)}")
    return ", ".join(parts)


def run_memory(args, upstream, chosen):
    """(h): each chosen target started fresh for each measurement: RSS at idle, then with N
    idle keep-alive connections; then, started afresh, the same over TLS. A fresh start for
    TLS keeps the cleartext connections' freed memory, which an allocator may keep, from
    hiding what the TLS connections cost."""
    print(f"(h) {SCENARIOS['h']}, N = {args.idle_conns}", flush=True)
    names = [name for name in TARGETS if name in chosen]
    runs = {name: [] for name in names}
    for _ in range(args.runs):
        for name in names:
            result = {}
            for tls in (False, True):
                try:
                    result.update(memory_of(name, upstream, args.idle_conns, tls))
                except Exception as e:
                    result["failed"] = f"{'TLS: ' if tls else ''}{type(e).__name__}: {str(e)[:300]}"
                    break
            runs[name].append(result)
            print(f"    {name:8} {memory_line(result, args.idle_conns)}", flush=True)
    return {"description": SCENARIOS["h"], "idle_conns": args.idle_conns, "runs": runs}


def memory_of(name, upstream, conns, tls):
    """One (h) measurement of one target: its idle RSS and the RSS with `conns` idle
    connections (keys prefixed `tls_` over TLS). Direct is the upstream's own, not fresh."""
    port = PORTS[name]["tls" if tls else "http"]
    if name == "direct":
        measured = hold_connections(lambda: rss_of(upstream.pid), port, conns, tls)
    else:
        target = Target(name, 1)
        target.start()
        try:
            measured = hold_connections(target.rss_bytes, port, conns, tls)
        finally:
            target.stop()
    prefix = "tls_" if tls else ""
    return {prefix + key: value for key, value in measured.items()}


def memory_line(r, conns):
    parts = []
    if "kb_per_conn" in r:
        parts.append(f"idle {r['idle_rss_mb']:.2f} MB, with {conns} conns {r['held_rss_mb']:.2f} MB: "
                     f"{r['kb_per_conn']:.2f} KB per connection")
    if "tls_kb_per_conn" in r:
        parts.append(f"TLS: idle {r['tls_idle_rss_mb']:.2f} MB, with {conns} conns "
                     f"{r['tls_held_rss_mb']:.2f} MB: {r['tls_kb_per_conn']:.2f} KB per connection")
    if "failed" in r:
        parts.append(f"FAILED: {r['failed']}")
    return "; ".join(parts)


def one_request(port, tls):
    """One request, so that idle means "has served traffic", pools (and TLS state) included."""
    if tls:
        url = [f"https://127.0.0.1:{port}/", "--cacert", os.path.join(ROOT, CA)]
    else:
        url = [f"http://127.0.0.1:{port}/"]
    subprocess.run(["curl", "-sf", "-o", "/dev/null"] + url, check=True)


def start_holding(port, conns, tls):
    """`sinew-bench hold` with `conns` connections open, each having made one request; it
    holds them until its standard input is closed."""
    cmd = ["taskset", "-c", LOAD_CORES, BENCH_TOOL, "hold", "--connect", f"127.0.0.1:{port}",
           "--conns", str(conns)]
    if tls:
        cmd += ["--tls", "--ca", os.path.join(ROOT, CA)]
    holder = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = holder.stdout.readline()
    if not line.startswith("{"):
        holder.stdin.close()
        holder.wait(timeout=30)
        raise RuntimeError(f"sinew-bench hold{' --tls' if tls else ''} failed against port {port}")
    return holder


def hold_connections(rss, port, conns, tls=False):
    one_request(port, tls)
    time.sleep(0.5)
    idle = rss()
    holder = start_holding(port, conns, tls)
    try:
        time.sleep(1.0)
        held = rss()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    return {"idle_rss_mb": idle / 1e6, "held_rss_mb": held / 1e6,
            "kb_per_conn": (held - idle) / conns / 1e3}


def run_memory_return(args, chosen):
    """(h-return): each proxy started fresh with 2 workers for each measurement."""
    print(f"(h-return) {SCENARIOS['h-return']}", flush=True)
    names = [name for name in RETURN_TARGETS if name in chosen]
    runs = {name: [] for name in names}
    for _ in range(args.runs):
        for name in names:
            target = Target(name, 2)
            target.start()
            try:
                result = burst_and_return(target.rss_bytes, PORTS[name]["http"], RETURN_CONNS,
                                          RETURN_SECS)
            except Exception as e:
                result = {"failed": f"{type(e).__name__}: {str(e)[:300]}"}
            finally:
                target.stop()
            runs[name].append(result)
            print(f"    {name:8} {return_line(result)}", flush=True)
    return {"description": SCENARIOS["h-return"], "conns": RETURN_CONNS, "secs": RETURN_SECS,
            "runs": runs}


def burst_and_return(rss, port, conns, secs):
    """Idle RSS after one request; the peak while `conns` connections open, make a request
    each and stay; then RSS each second for `secs` seconds after they have all closed."""
    one_request(port, False)
    time.sleep(0.5)
    idle = rss()
    peak = Peak(rss)
    peak.start()
    try:
        holder = start_holding(port, conns, False)
        try:
            time.sleep(1.0)
            held = rss()
        finally:
            holder.stdin.close()
            # hold drops every connection and exits: the last close is when it has gone.
            holder.wait(timeout=30)
    finally:
        peak.stop()
    closed = time.monotonic()
    samples = []
    for second in range(1, secs + 1):
        time.sleep(max(0.0, closed + second - time.monotonic()))
        samples.append(rss() / 1e6)
    return return_figures(idle / 1e6, peak.bytes / 1e6, held / 1e6, samples)


def return_figures(idle_mb, peak_mb, held_mb, samples_mb):
    """(h-return)'s result from its readings: `peak_mb` the highest sampled during the
    burst, `held_mb` with every connection open, `samples_mb` RSS each second after the
    last close, the last one the figure judged. The peak is the highest of them all."""
    after = samples_mb[-1]
    return {"idle_rss_mb": idle_mb, "held_rss_mb": held_mb,
            "peak_rss_mb": max([peak_mb, held_mb] + samples_mb), "after_rss_mb": after,
            "returned_mb": after - idle_mb, "rss_after_close_mb": samples_mb}


class Peak:
    """The highest RSS seen, read every 100 ms on a thread of its own while a burst runs."""

    def __init__(self, rss):
        self.rss = rss
        self.bytes = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self.thread.start()

    def run(self):
        while not self.done.is_set():
            self.bytes = max(self.bytes, self.rss())
            self.done.wait(0.1)

    def stop(self):
        self.done.set()
        self.thread.join()


def return_line(r):
    if "failed" in r:
        return f"FAILED: {r['failed']}"
    return (f"idle {r['idle_rss_mb']:.2f} MB, peak {r['peak_rss_mb']:.2f} MB, {len(r['rss_after_close_mb'])} s "
            f"after the last close {r['after_rss_mb']:.2f} MB ({r['returned_mb']:+.2f} MB)")


# --- report ------------------------------------------------------------------------------


def median_of(runs, key):
    values = [r[key] for r in runs if r and key in r and r[key] is not None]
    return statistics.median(values) if values else None


# Per scenario: the figures of its table, as (result key, column title, format, higher is better).
COLUMNS = {
    "a": [("rps", "req/s", "{:,.0f}", True), ("p50_ms", "p50 ms", "{:.2f}", False),
          ("p99_ms", "p99 ms", "{:.2f}", False)],
    "b": [("rps", "req/s", "{:,.0f}", True), ("p50_ms", "p50 ms", "{:.3f}", False),
          ("p99_ms", "p99 ms", "{:.3f}", False), ("p99.9_ms", "p99.9 ms", "{:.3f}", False)],
    "c": [("rps", "req/s", "{:,.0f}", True)],
    "d": [("mb_per_s", "MB/s", "{:,.0f}", True), ("p99_ms", "p99 ms", "{:.2f}", False)],
    "e": [("rps", "req/s", "{:,.0f}", True), ("p99_ms", "p99 ms", "{:.2f}", False)],
    "f1": [("rps", "handshakes/s", "{:,.0f}", True), ("p99_ms", "p99 ms", "{:.2f}", False)],
    "f2": [("rps", "req/s", "{:,.0f}", True), ("p99_ms", "p99 ms", "{:.2f}", False)],
    "g": [("gb_per_s", "GB/s", "{:.2f}", True)],
    "a-all": [("rps", "req/s", "{:,.0f}", True), ("p99_ms", "p99 ms", "{:.2f}", False)],
    "tls-full-ecdsa": [("rps", "handshakes/s", "{:,.0f}", True),
                       ("resumed_share", "resumed", "{:.1%}", False)],
    "mtls": [("rps", "req/s", "{:,.0f}", True), ("errors", "errors", "{:,.0f}", False)],
    "rpc-bolt": [("rps", "req/s", "{:,.0f}", True),
                 ("qps_per_core", "QPS per fully used core", "{:,.0f}", True),
                 ("errors", "errors", "{:,.0f}", False)],
    "h": [("idle_rss_mb", "idle RSS MB", "{:.2f}", False),
          ("held_rss_mb", "RSS with N conns, MB", "{:.1f}", False),
          ("kb_per_conn", "KB per idle conn", "{:.2f}", False),
          ("tls_held_rss_mb", "RSS with N TLS conns, MB", "{:.1f}", False),
          ("tls_kb_per_conn", "KB per idle TLS conn", "{:.2f}", False)],
    "h-return": [("idle_rss_mb", "idle RSS MB", "{:.2f}", False),
                 ("peak_rss_mb", "peak RSS MB", "{:.1f}", False),
                 ("after_rss_mb", f"RSS {RETURN_SECS} s after, MB", "{:.2f}", False),
                 ("returned_mb", "after − idle, MB", "{:+.2f}", False)],
}
for _like, _scenarios in (("tls-full-ecdsa", ("tls-full-rsa", "tls-resumed-ecdsa", "tls-resumed-rsa")),
                          ("mtls", ("plain",)), ("rpc-bolt", ("rpc-dubbo",))):
    for _scenario in _scenarios:
        COLUMNS[_scenario] = COLUMNS[_like]
# The scenarios whose tables are memory only: no load, so no CPU figures.
MEMORY_ONLY = ("h", "h-return")
EFFICIENCY = [("cpu_us_per_request", "CPU µs/req", "{:.1f}", False),
              ("user_us_per_request", "user µs/req", "{:.1f}", False),
              ("sys_us_per_request", "sys µs/req", "{:.1f}", False),
              ("cpu_s_per_gb", "CPU s/GB", "{:.3f}", False),
              ("user_s_per_gb", "user s/GB", "{:.3f}", False),
              ("sys_s_per_gb", "sys s/GB", "{:.3f}", False),
              ("rss_mb", "RSS MB", "{:.1f}", False)]


def table(scenario, data):
    runs = data["runs"]
    columns = list(COLUMNS[scenario])
    if scenario not in MEMORY_ONLY:
        columns += [c for c in EFFICIENCY
                    if any(median_of(runs.get(t, []), c[0]) is not None for t in PROXIES)]
    # Each target's figure over Sinew's, for the first column and CPU; Sinew's over direct.
    head = ["target"] + [c[1] for c in columns] + ["vs Sinew"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    main_key = columns[0][0]
    ratio_keys = [main_key] + [k for k in ("cpu_us_per_request", "cpu_s_per_gb", "kb_per_conn",
                                           "tls_kb_per_conn")
                               if any(k == c[0] for c in columns) and k != main_key]
    sinew = {k: median_of(runs.get("sinew", []), k) for k in ratio_keys}
    for name in TARGETS:
        if name not in runs:
            continue
        cells = [name]
        for key, _, fmt, _ in columns:
            value = median_of(runs[name], key)
            cells.append(fmt.format(value) if value is not None else "—")
        ratios = []
        for key in ratio_keys:
            value = median_of(runs[name], key)
            if value is None or not sinew.get(key):
                continue
            title = next(c[1] for c in columns if c[0] == key)
            if name == "sinew":
                direct = median_of(runs.get("direct", []), key)
                if direct and key == main_key:
                    ratios.append(f"Sinew/direct {sinew[key] / direct:.2f}× {title}")
            else:
                ratios.append(f"{value / sinew[key]:.2f}× {title}")
        failed = [r["failed"] for r in runs[name] if r and "failed" in r]
        if failed:
            ratios.append(f"{len(failed)} run(s) failed: {failed[0][:80]}")
        cells.append("; ".join(ratios) or "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


REDIS_COLUMNS = [("rps", "req/s", "{:,.0f}"), ("p50_ms", "p50 ms", "{:.3f}"),
                 ("p99_ms", "p99 ms", "{:.3f}"), ("cpu_us_per_request", "CPU µs/req", "{:.2f}"),
                 ("user_us_per_request", "user µs/req", "{:.2f}"),
                 ("sys_us_per_request", "sys µs/req", "{:.2f}"), ("rss_mb", "RSS MB", "{:.1f}")]


def redis_table(data):
    """One row per case and target: requests/s and the proxy's CPU per request, with
    Sinew's CPU per request over twemproxy's (the goal: at most 1×)."""
    head = ["case", "requests", "target"] + [c[1] for c in REDIS_COLUMNS] + ["Sinew vs twemproxy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case, runs in data["cases"].items():
        for name in REDIS_TARGETS:
            if name not in runs:
                continue
            cells = [case, f"{data['requests'][case]:,}", name]
            for key, _, fmt in REDIS_COLUMNS:
                value = median_of(runs[name], key)
                cells.append(fmt.format(value) if value is not None else "—")
            note = "—"
            s, t = (median_of(runs.get(n, []), "cpu_us_per_request") for n in ("sinew", "twemproxy"))
            if name == "sinew" and s is not None and t:
                note = f"{s / t:.2f}× CPU µs/req"
            failed = [r["failed"] for r in runs[name] if r and "failed" in r]
            if failed:
                note = f"{len(failed)} run(s) failed: {failed[0][:80]}"
            cells.append(note)
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def issue21_section(results):
    """Issue 21's speed figures from the medians: Sinew's RPC throughput and its QPS per
    fully used core against MOSN's one-core anchor, and its CPU per Redis request against
    twemproxy's (the goal: at or below)."""
    out = []
    for scenario, name in (("rpc-bolt", "Bolt"), ("rpc-dubbo", "Dubbo")):
        runs = results.get(scenario, {}).get("runs", {})
        rps, cpu, core = (median_of(runs.get("sinew", []), k)
                          for k in ("rps", "cpu_us_per_request", "qps_per_core"))
        if None in (rps, cpu, core):
            continue
        direct = median_of(runs.get("direct", []), "rps")
        against = f" ({rps / direct:.2f}× direct's {direct:,.0f})" if direct else ""
        out.append(f"- ({scenario}) {name} echo, {RPC_SIZE}-byte payloads, one worker: Sinew "
                   f"{rps:,.0f} req/s{against} at {cpu:.2f} µs CPU per request = {core:,.0f} QPS "
                   f"per fully used core; anchor: MOSN's published {MOSN_BOLT_QPS_PER_CORE:,} QPS "
                   f"on one core for 1 KB Bolt requests = {core / MOSN_BOLT_QPS_PER_CORE:.2f}× the "
                   "anchor.")
    for case, runs in results.get("redis", {}).get("cases", {}).items():
        s, t = (median_of(runs.get(n, []), "cpu_us_per_request") for n in ("sinew", "twemproxy"))
        if s is None or t is None:
            continue
        s_rps, t_rps = (median_of(runs.get(n, []), "rps") for n in ("sinew", "twemproxy"))
        out.append(f"- (redis) {case}: CPU per request Sinew {s:.2f} µs, twemproxy {t:.2f} µs = "
                   f"{s / t:.2f}× (Sinew {s_rps:,.0f} req/s, twemproxy {t_rps:,.0f}); goal at or "
                   # Judged on the figures shown: medians of clock ticks that print alike
                   # may differ in the last bits.
                   f"below twemproxy's: {verdict(round(s, 2) <= round(t, 2))}.")
    return "\n".join(out)


def verdict(ok):
    return "met" if ok else "not met"


def targets_section(results):
    """Where Sinew stands against issue 18's targets, from the medians, each with the figures
    it is judged on; then the costs of its features, and the targets this run could not judge."""
    out, unjudged = [], []

    def med(scenario, target, key):
        return median_of(results.get(scenario, {}).get("runs", {}).get(target, []), key)

    def judged(figures, line, target):
        """Adds `line(*figures)` if every figure was measured; else names `target` as unjudged."""
        if None in figures:
            unjudged.append(target)
        else:
            out.append(line(*figures))

    # (a): one worker each.
    judged([med("a", t, "user_us_per_request") for t in ("sinew", "nginx", "haproxy")],
           lambda s, n, h: f"- (a) one worker, user CPU per request: Sinew {s:.1f} µs, nginx {n:.1f} µs "
           f"(HAProxy {h:.1f} µs); target ≤ nginx's: {verdict(s <= n)}.",
           "(a) user CPU per request ≤ nginx's")
    judged([med("a", t, "cpu_us_per_request") for t in ("sinew", "nginx", "haproxy")],
           lambda s, n, h: f"- (a) one worker, CPU per request: Sinew {s:.1f} µs = {s / min(n, h):.2f}× "
           f"the better of nginx ({n:.1f} µs) and HAProxy ({h:.1f} µs); target ≤ 0.90×: "
           f"{verdict(s <= 0.9 * min(n, h))}.",
           "(a) CPU per request ≤ 0.90× the better of nginx and HAProxy")
    rps = [med("a", t, "rps") for t in ("sinew", "nginx", "haproxy")]
    if None not in rps:
        out.append(f"- (a) one worker, requests/s: Sinew {rps[0]:,.0f}, nginx {rps[1]:,.0f}, HAProxy "
                   f"{rps[2]:,.0f} (reported; the requests/s target is a-all's).")
    # (a-all): two workers on both cores.
    judged([med("a-all", "sinew", "cpu_us_per_request"), med("a", "sinew", "cpu_us_per_request")],
           lambda two, one: f"- (a-all) 2 workers, CPU per request: Sinew {two:.1f} µs against {one:.1f} µs "
           f"with one worker in (a) = {two / one:.2f}×; target ≤ one worker's: {verdict(two <= one)}.",
           "(a-all) CPU per request with 2 workers ≤ with one (needs a and a-all)")
    judged([med("a-all", t, "rps") for t in ("sinew", "nginx", "haproxy")],
           lambda s, n, h: f"- (a-all) 2 workers, requests/s: Sinew {s:,.0f}, nginx {n:,.0f}, HAProxy "
           f"{h:,.0f}; target ≥ both: {verdict(s >= max(n, h))}.",
           "(a-all) requests/s ≥ nginx's and HAProxy's")
    # (c): HTTP/2.
    judged([med("c", t, "cpu_us_per_request") for t in ("sinew", "haproxy")],
           lambda s, h: f"- (c) HTTP/2, CPU per request: Sinew {s:.1f} µs, HAProxy {h:.1f} µs = "
           f"{s / h:.2f}×; target ≤ HAProxy's: {verdict(s <= h)}.",
           "(c) HTTP/2 CPU per request ≤ HAProxy's")
    # (h) and (h-return): memory.
    def others(scenario, key, fmt):
        """nginx's and HAProxy's figures for context, those that were measured."""
        figures = [(name, med(scenario, t, key)) for name, t in (("nginx", "nginx"), ("HAProxy", "haproxy"))]
        shown = [f"{name} {fmt.format(value)}" for name, value in figures if value is not None]
        return f" ({', '.join(shown)})" if shown else ""

    judged([med("h", "sinew", "kb_per_conn")],
           lambda s: f"- (h) per idle keep-alive HTTP/1.1 connection: Sinew {s:.2f} KB"
           f"{others('h', 'kb_per_conn', '{:.2f} KB')}; target ≤ 1 KB: {verdict(s <= 1)}.",
           "(h) per idle keep-alive connection ≤ 1 KB")
    judged([med("h", "sinew", "tls_kb_per_conn")],
           lambda s: f"- (h) per idle TLS connection: Sinew {s:.2f} KB"
           f"{others('h', 'tls_kb_per_conn', '{:.2f} KB')}; target ≤ 8 KB: {verdict(s <= 8)}.",
           "(h) per idle TLS connection ≤ 8 KB")
    judged([med("h", "sinew", "idle_rss_mb")],
           lambda s: f"- (h) RSS at idle: Sinew {s:.2f} MB{others('h', 'idle_rss_mb', '{:.2f} MB')}; "
           f"target ≤ 8 MB: {verdict(s <= 8)}.",
           "(h) RSS at idle ≤ 8 MB")
    conns = results.get("h-return", {}).get("conns", RETURN_CONNS)
    secs = results.get("h-return", {}).get("secs", RETURN_SECS)
    judged([med("h-return", "sinew", k) for k in ("idle_rss_mb", "peak_rss_mb", "after_rss_mb", "returned_mb")],
           lambda idle, peak, after, back: f"- (h-return) memory comes back, 2 workers: Sinew {idle:.2f} MB "
           f"idle, {peak:.1f} MB at peak during a burst of {conns:,} connections, {after:.2f} MB {secs} s "
           f"after the last closed: {back:+.2f} MB{others('h-return', 'returned_mb', '{:+.2f} MB')}; target "
           f"within {RETURN_WITHIN_MB:g} MB of idle: {verdict(back <= RETURN_WITHIN_MB)}.",
           f"(h-return) RSS within {RETURN_WITHIN_MB:g} MB of idle {RETURN_SECS} s after a burst")
    # (b): latency at a fixed rate.
    rate = results.get("b", {}).get("rate", 0)
    for key, title in (("p99_ms", "p99"), ("p99.9_ms", "p99.9")):
        judged([med("b", t, key) for t in ("sinew", "haproxy")],
               lambda s, h, title=title: f"- (b) {title} at {rate:,} req/s: Sinew {s:.3f} ms, HAProxy "
               f"{h:.3f} ms; target ≤ HAProxy's: {verdict(s <= h)}.",
               f"(b) {title} ≤ HAProxy's")
    # (d) and (g): throughput that must not fall behind nginx's.
    judged([med("d", t, "mb_per_s") for t in ("sinew", "nginx")],
           lambda s, n: f"- (d) 1 MiB responses: Sinew {s:,.0f} MB/s, nginx {n:,.0f} MB/s; "
           f"target ≥ nginx's: {verdict(s >= n)}.",
           "(d) MB/s ≥ nginx's")
    judged([med("g", t, "gb_per_s") for t in ("sinew", "nginx")],
           lambda s, n: f"- (g) TCP proxy: Sinew {s:.2f} GB/s, nginx {n:.2f} GB/s; "
           f"target ≥ nginx's: {verdict(s >= n)}.",
           "(g) GB/s ≥ nginx's")

    # What Sinew's own features cost, against plain Sinew in (a).
    s_rps, s_cpu = med("a", "sinew", "rps"), med("a", "sinew", "cpu_us_per_request")
    r_rps = med("a", "sinew-resilience", "rps")
    r_cpu = med("a", "sinew-resilience", "cpu_us_per_request")
    if None not in (s_rps, r_rps, s_cpu, r_cpu):
        out.append(f"- (a) every resilience feature configured, none firing: {r_rps:,.0f} req/s = "
                   f"{r_rps / s_rps:.3f}× plain Sinew's, at {r_cpu / s_cpu:.3f}× its CPU per request; "
                   f"target ≥ 0.97×: {'met' if r_rps >= 0.97 * s_rps else 'not met'}.")
    off_rps = med("a", "sinew-nometrics", "rps")
    off_cpu = med("a", "sinew-nometrics", "cpu_us_per_request")
    if None not in (s_rps, off_rps, s_cpu, off_cpu):
        out.append(f"- (a) metrics on (plain Sinew) vs off: {s_rps:,.0f} vs {off_rps:,.0f} req/s = "
                   f"{s_rps / off_rps:.3f}×, at {s_cpu / off_cpu:.3f}× the CPU per request; "
                   f"target ≥ 0.98×: {'met' if s_rps >= 0.98 * off_rps else 'not met'}.")
    l_rps = med("a", "sinew-accesslog", "rps")
    l_cpu = med("a", "sinew-accesslog", "cpu_us_per_request")
    if None not in (s_rps, l_rps, s_cpu, l_cpu):
        out.append(f"- (a) access log to a file (Envoy's default line): {l_rps:,.0f} req/s = "
                   f"{l_rps / s_rps:.3f}× plain Sinew's, at {l_cpu / s_cpu:.3f}× its CPU per "
                   f"request (measured and reported; no target).")
    if unjudged:
        out.append("- Not judged in this run (a scenario or a target it needs did not run, or "
                   "failed): " + "; ".join(unjudged) + ".")
    return "\n".join(out)


def tls_section(results):
    """Issue 19's TLS figures, from the medians: CPU per full and per resumed handshake
    against nginx's (the goal: full handshakes well ahead of nginx's, resumed ones cheaper
    than nginx's), and what mTLS costs each proxy against cleartext keep-alive."""
    out = []

    def med(scenario, target, key):
        return median_of(results.get(scenario, {}).get("runs", {}).get(target, []), key)

    for scenario, what in (("tls-full-ecdsa", "full handshake, ECDSA P-256"),
                           ("tls-full-rsa", "full handshake, RSA 2048"),
                           ("tls-resumed-ecdsa", "resumed handshake, ECDSA P-256 certificate"),
                           ("tls-resumed-rsa", "resumed handshake, RSA 2048 certificate")):
        s, n, h = (med(scenario, t, "cpu_us_per_request") for t in TLS_TARGETS)
        if s is None or n is None:
            continue
        rates = ", ".join(f"{name} {med(scenario, t, 'rps'):,.0f}/s" for name, t in
                          (("Sinew", "sinew"), ("nginx", "nginx"), ("HAProxy", "haproxy"))
                          if med(scenario, t, "rps") is not None)
        haproxy = f", HAProxy {h:.1f} µs" if h is not None else ""
        goal = "well ahead of nginx's" if "full" in scenario else "less than nginx's"
        out.append(f"- ({scenario}) CPU per {what}: Sinew {s:.1f} µs, nginx {n:.1f} µs{haproxy}; "
                   f"Sinew/nginx {s / n:.2f}× ({rates}); goal {goal}: {verdict(s < n)}.")
    for t, name in (("sinew", "Sinew"), ("nginx", "nginx"), ("haproxy", "HAProxy")):
        m_rps, p_rps = med("mtls", t, "rps"), med("plain", t, "rps")
        m_cpu, p_cpu = med("mtls", t, "cpu_us_per_request"), med("plain", t, "cpu_us_per_request")
        if None in (m_rps, p_rps, m_cpu, p_cpu):
            continue
        out.append(f"- (mtls/plain) {name}, keep-alive: {m_rps:,.0f} req/s over mTLS against "
                   f"{p_rps:,.0f} in cleartext = {m_rps / p_rps:.2f}×; CPU per request {m_cpu:.1f} "
                   f"against {p_cpu:.1f} µs = {m_cpu / p_cpu:.2f}×.")
    return "\n".join(out)


def machine_info():
    def first_line(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            text = (out.stdout + out.stderr).strip()
            return text.splitlines()[0] if text else "?"
        except (OSError, subprocess.TimeoutExpired):
            return "not installed"

    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_gib = int(f.readline().split()[1]) / (1 << 20)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "sinew": first_line(["git", "-C", ROOT, "describe", "--always", "--dirty"]),
        "rustc": first_line(["rustc", "--version"]),
        "sinew_binary": os.path.relpath(SINEW, ROOT),
        "nginx": first_line(["nginx", "-v"]),
        "haproxy": first_line(["haproxy", "-v"]),
        "wrk": first_line(["wrk", "-v"]),
        "h2load": first_line(["h2load", "--version"]),
        "oha": first_line([oha_binary() or "oha", "--version"]),
    }


def write_report(results, machine, args, path):
    lines = [
        "# Benchmarks",
        "",
        "Written by `bench/run` (the harness is `bench/harness.py`; the proxies' configs are "
        "`bench/configs/`; the raw figures of this run are in "
        f"`bench/results/{os.path.basename(args.json_path)}`). Do not edit by hand: rerun "
        "`bench/run` instead.",
        "",
        "## Setup",
        "",
        f"- Date: {machine['date']}; Sinew {machine['sinew']} ({machine.get('sinew_binary', 'target/release/sinew')}) built by {machine['rustc']}.",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}.",
        f"- Proxies: {machine['nginx']}; {machine['haproxy']}.",
        f"- Load: {machine['wrk']}; {machine['h2load']}; {machine['oha']}.",
        f"- Each proxy runs one worker (nginx `worker_processes 1`, HAProxy `nbthread 1`, Sinew "
        f"`--workers 1`) pinned to core {PROXY_CORES}; the load generator and the upstream "
        f"(`sinew-bench upstream`, hyper on one thread) share core {LOAD_CORES}. Scenario a-all "
        "gives each proxy 2 workers and both cores.",
        f"- All proxies: upstream keep-alive pooling on, access logs off, connect timeout "
        f"{CONNECT_TIMEOUT}, idle and upstream timeouts {IDLE_TIMEOUT}, {BUFFER} buffers.",
        f"- Each measurement runs {args.secs} s after a 1 s warm-up; the figures are medians of "
        f"{args.runs} runs, taken in turn across the targets. The memory scenarios (h, h-return) "
        "start each proxy fresh for each measurement and have no warm-up.",
        "- CPU µs/req is the proxy's user + system CPU time over the run (all its processes and "
        "threads, from /proc/PID/stat) divided by the requests completed; user µs/req and sys "
        "µs/req are its two parts (utime and stime), each the median of its own, so they need "
        "not add up to the median total exactly; for (g) the same per GB. RSS MB is the "
        "proxy's resident memory after the run. Direct has no proxy, so no CPU figure.",
        "- \"vs Sinew\" is each target's figure divided by Sinew's; on Sinew's row it is Sinew's "
        "figure divided by direct's.",
        "",
        "## Against the targets",
        "",
        targets_section(results) or "(not all the scenarios needed ran)",
        "",
    ]
    tls = tls_section(results)
    if tls:
        lines += ["## TLS (issue 19)", "",
                  "Sinew, nginx and HAProxy each with the same listeners (`--scenarios tls`): "
                  "session tickets on and a session cache of about "
                  f"{SESSION_CACHE:,} sessions, TLS 1.2 and 1.3, ALPN http/1.1; the client "
                  "(`sinew-bench load`) offers TLS 1.3 only and counts each handshake as full "
                  "or resumed.", "", tls, ""]
    rpc = issue21_section(results)
    if rpc:
        lines += ["## RPC and Redis (issue 21)", "",
                  f"Sinew with one worker (`bench/configs/sinew-rpc.yaml`) pinned to core "
                  f"{PROXY_CORES}; the echo servers (`sinew-bench rpc-upstream`, one thread), "
                  f"redis-server and the load share core {LOAD_CORES}; twemproxy (nutcracker) "
                  f"pinned to core {PROXY_CORES} like Sinew. QPS per fully used core is requests "
                  "per second of the proxy's CPU time, requests/s ÷ (CPU s / wall s).", "", rpc, ""]
    lines += ["## Scenarios"]
    for scenario in SCENARIOS:
        if scenario not in results:
            continue
        if scenario == "redis":
            lines += ["", f"### (redis) {results['redis']['description']}", "",
                      redis_table(results["redis"])]
            continue
        data = results[scenario]
        desc = data["description"]
        if scenario == "b":
            desc += f"; rate {data['rate']:,} req/s"
        if scenario == "h":
            desc = desc.replace("N idle", f"{data['idle_conns']:,} idle")
        if scenario == "h-return":
            desc += (f"; target: RSS {data['secs']} s after the last close within "
                     f"{RETURN_WITHIN_MB:g} MB of idle")
        lines += ["", f"### ({scenario}) {desc}", "", table(scenario, data)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


# --- main --------------------------------------------------------------------------------

DEFAULT_SCENARIOS = (["a", "b", "c", "d", "e", "f1", "f2", "g", "h", "h-return", "a-all"]
                     + TLS_SCENARIOS + ISSUE_21_SCENARIOS)


def expand_scenarios(text):
    """The scenarios of a comma-separated list, `tls` standing for TLS_SCENARIOS, each once
    in the order given."""
    chosen = []
    for name in (s for s in text.split(",") if s):
        for scenario in TLS_SCENARIOS if name == "tls" else [name]:
            if scenario not in chosen:
                chosen.append(scenario)
    return chosen



def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one short run of each measurement, no BENCHMARKS.md")
    parser.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                        help="comma-separated scenarios to run (default: all); `tls` stands "
                        "for " + ",".join(TLS_SCENARIOS))
    parser.add_argument("--targets", default=",".join(TARGETS + ["twemproxy"]),
                        help="comma-separated targets (default: all; twemproxy is the redis "
                        "scenario's only)")
    parser.add_argument("--runs", type=int, help="repetitions of each measurement (default 3)")
    parser.add_argument("--secs", type=int, help="seconds per measurement (default 10)")
    parser.add_argument("--idle-conns", type=int, help="idle connections in (h) (default 10000)")
    parser.add_argument("--report", help="where the tables go (default: BENCHMARKS.md, or "
                        "bench/.run/quick.md with --quick)")
    args = parser.parse_args()
    args.runs = args.runs or (1 if args.quick else 3)
    args.secs = args.secs or (2 if args.quick else 10)
    args.idle_conns = args.idle_conns or (2000 if args.quick else 10000)
    scenarios = expand_scenarios(args.scenarios)
    for s in scenarios:
        if s not in SCENARIOS:
            raise SystemExit(f"unknown scenario {s!r}; known: {', '.join(SCENARIOS)}")
    chosen = [t for t in args.targets.split(",") if t]
    if "b" in scenarios and not oha_binary():
        raise SystemExit("scenario b needs oha: run bench/run, which installs it")
    needed = ("redis-server", "redis-benchmark", "nutcracker") if "redis" in scenarios else ()
    missing = [tool for tool in needed if not shutil.which(tool)]
    if missing:
        raise SystemExit(f"scenario redis needs {', '.join(missing)}: run bench/run, which "
                         "installs them")

    # Enough descriptors for (h), inherited by every process started from here.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.idle_conns + 1000:
        raise SystemExit(f"(h) needs {args.idle_conns + 1000} file descriptors; the hard limit is {hard}")
    os.makedirs(RUN_DIR, exist_ok=True)
    os.makedirs(RESULTS, exist_ok=True)
    write_configs()
    # Every proxy's config names them, so they must exist whatever runs.
    make_tls_certs()
    busy = [p for ports in PORTS.values() for p in ports.values() if not port_is_free(p)]
    if busy:
        raise SystemExit(f"ports {sorted(set(busy))} are in use: is another bench/run going?")

    machine = machine_info()
    results = {}
    upstream = start_upstream()
    try:
        one_core = [s for s in scenarios
                    if s not in ("h", "h-return", "a-all") + tuple(ISSUE_21_SCENARIOS)]
        if one_core:
            run_throughput(one_core, chosen, 1, args, results)
        for scenario in ("rpc-bolt", "rpc-dubbo"):
            if scenario in scenarios:
                run_rpc(scenario, chosen, args, results)
        if "redis" in scenarios:
            run_redis(chosen, args, results)
        if "a-all" in scenarios:
            run_throughput(["a-all"], chosen, 2, args, results)
        if "h" in scenarios:
            results["h"] = run_memory(args, upstream, chosen)
        if "h-return" in scenarios:
            results["h-return"] = run_memory_return(args, chosen)
    finally:
        os.killpg(upstream.pid, signal.SIGTERM)

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    kind = "quick" if args.quick else "full" if set(DEFAULT_SCENARIOS) <= set(scenarios) else "partial"
    # Quick runs are for development and stay out of the repository.
    args.json_path = os.path.join(RESULTS if not args.quick else RUN_DIR, f"{stamp}-{kind}.json")
    with open(args.json_path, "w") as f:
        json.dump({"machine": machine, "args": {k: v for k, v in vars(args).items() if k != "json_path"},
                   "results": results}, f, indent=1)
    report = args.report or (os.path.join(ROOT, "BENCHMARKS.md") if not args.quick
                             else os.path.join(RUN_DIR, "quick.md"))
    write_report(results, machine, args, report)
    print(f"\nraw results: {os.path.relpath(args.json_path, ROOT)}; tables: {os.path.relpath(report, ROOT)}")
    print(targets_section(results))
    rpc = issue21_section(results)
    if rpc:
        print(rpc)


if __name__ == "__main__":
    main()
