#!/usr/bin/env python3
"""Resident memory per idle HTTP/1.1 keep-alive downstream connection.

Starts an nginx upstream (64-byte body) and Sinew (one worker, one route) in front of
it, reads Sinew's VmRSS at idle, then opens N client connections, sends one request on
each and reads the whole response, keeps every socket open, waits a moment and reads
VmRSS again. Prints (RSS_after - RSS_idle) / N.

Usage: bench/idle_conns.py [--conns N] [--runs R] [--concurrency C] [--sinew PATH]
                          [--settle SECONDS]
Needs nginx (PATH or /usr/sbin/nginx). Only talks to 127.0.0.1.
"""

import argparse
import os
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time

BODY = "x" * 64
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"process exited early with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"port {port} did not open")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def response_complete(buf):
    """True once buf holds one whole Content-Length response."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    length = 0
    for line in buf[:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return len(buf) >= end + 4 + length


def open_idle_connections(port, n, concurrency):
    """Opens n keep-alive connections, one request each; returns the open sockets.

    At most `concurrency` requests are in flight at once, so the proxy's upstream pool
    stays small and the figure is about downstream connections.
    """
    socks = []
    sel = selectors.DefaultSelector()
    pending = {}
    deadline = time.monotonic() + 120
    while len(socks) < n or pending:
        while len(socks) < n and len(pending) < concurrency:
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(REQUEST)
            s.setblocking(False)
            pending[s] = b""
            sel.register(s, selectors.EVENT_READ)
            socks.append(s)
        if time.monotonic() > deadline:
            sys.exit(f"{len(pending)} responses did not arrive")
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            data = s.recv(65536)
            if not data:
                sys.exit("proxy closed a connection")
            pending[s] += data
            if response_complete(pending[s]):
                if not pending[s].startswith(b"HTTP/1.1 200"):
                    sys.exit(f"unexpected response: {pending[s][:80]!r}")
                sel.unregister(s)
                del pending[s]
    sel.close()
    return socks


def run_once(sinew, conns, concurrency, settle, workdir):
    up, px = free_port(), free_port()
    nginx_conf = os.path.join(workdir, "up.conf")
    with open(nginx_conf, "w") as f:
        f.write(
            f"daemon off; worker_processes 1; pid {workdir}/up.pid; error_log {workdir}/up.err;\n"
            "events { worker_connections 1024; }\n"
            "http { access_log off; keepalive_requests 1000000;\n"
            f'  server {{ listen 127.0.0.1:{up}; location / {{ return 200 "{BODY}"; }} }} }}\n'
        )
    sinew_conf = os.path.join(workdir, "s.yaml")
    with open(sinew_conf, "w") as f:
        f.write(
            f"""listeners:
  - name: bench
    address: 127.0.0.1:{px}
    http:
      generate_request_id: false
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{prefix: /}}
              cluster: up
clusters:
  - name: up
    endpoints: [{{address: 127.0.0.1:{up}}}]
"""
        )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    upstream = subprocess.Popen([nginx, "-c", nginx_conf])
    proxy = subprocess.Popen(
        ["bash", "-c", 'ulimit -n $(ulimit -Hn) && exec "$0" --workers 1 proxy -c "$1"', sinew, sinew_conf],
        stderr=open(os.path.join(workdir, "sinew.err"), "w"),
    )
    try:
        wait_port(up, upstream)
        wait_port(px, proxy)
        time.sleep(settle)
        idle = rss_kib(proxy.pid)
        socks = open_idle_connections(px, conns, concurrency)
        time.sleep(settle)
        after = rss_kib(proxy.pid)
        for s in socks:
            s.close()
        return idle, after
    finally:
        proxy.terminate()
        upstream.terminate()
        proxy.wait()
        upstream.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--sinew", default=os.environ.get("SINEW_BIN", "target/release/sinew"))
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.conns + 1024
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory() as workdir:
            idle, after = run_once(args.sinew, args.conns, args.concurrency, args.settle, workdir)
        per_conn = (after - idle) * 1024 / args.conns
        print(
            f"run {run}: idle RSS {idle / 1024:.1f} MiB, with {args.conns} idle connections "
            f"{after / 1024:.1f} MiB, {per_conn / 1024:.2f} KiB per connection",
            flush=True,
        )


if __name__ == "__main__":
    main()
