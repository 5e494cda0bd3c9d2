#!/usr/bin/env python3
"""Every shipped Envoy config (envoy/*.yaml) against the real Envoy binary.

For each config:
  1. `envoy --mode validate`: the bootstrap, every typed_config and the wasm filter's settings
     are accepted by this Envoy version. Only the `.wasm` path is pointed at the built module
     (compose mounts it at /etc/envoy/authflow.wasm; validate mode opens the file).
  2. Load: start Envoy on free loopback ports (listener and admin rewritten; the upstream
     endpoints are pointed at a closed loopback port so nothing on the machine is called),
     wait for admin `/ready` = LIVE, check that a V8 Wasm VM is active (the filter was
     instantiated and accepted its configuration — it refuses a bad one at load), that a
     public request passes the rate limiter (x-ratelimit-* on the answer); Envoy's admin is on
     loopback, or behind the read-only admin listener (deploy/generate.py), which must answer
     its few GETs and refuse every request that would stop, reconfigure or dump Envoy; stop it.
  0. Before both: the HTTP filters are in order authflow (wasm) → local_ratelimit → router.
     The rate limiter keys on the identity header the filter sets and strips from clients;
     placed before the filter, a client would choose its own budget.

usage: check_envoy.py --envoy PATH --wasm PATH [--validate-only] [CONFIG ...]
Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WASM_LINE = re.compile(r"^(\s*filename:\s*)(\S+\.wasm)\s*$", re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_wasm(text: str, wasm: Path) -> str:
    new, n = WASM_LINE.subn(lambda m: m.group(1) + str(wasm), text)
    if n != 1:
        raise SystemExit(f"expected exactly one `filename: ….wasm` line, found {n}")
    return new


def for_load_test(text: str, listen: int, admin: int, closed: int, inner_admin: int, admin_pipe: Path) -> str:
    """Loopback-only copy on free ports. Relies on the generated layout (envoy/envoy.yaml.in):
    9901 is the admin, or the read-only listener in front of it (then the admin is on 9900,
    or on a unix socket: `admin_pipe` here)."""
    subs = [
        # The admin's unix socket and the read-only listener's cluster: both or neither.
        (r"pipe: \{ path: [^,}]+", f"pipe: {{ path: {admin_pipe}", None),
        (r"address: \S+, port_value: 9901 }", f"address: 127.0.0.1, port_value: {admin} }}", 1),
        # The admin behind the read-only listener, and that listener's cluster: both or neither.
        (r"address: 127\.0\.0\.1, port_value: 9900 }", f"address: 127.0.0.1, port_value: {inner_admin} }}", None),
        (r"address: \S+, port_value: 8080 }", f"address: 127.0.0.1, port_value: {listen} }}", 1),
        # The auth service (one endpoint, or one per replica) and the backend: at least two.
        (r"address: \S+, port_value: 808[12] }", f"address: 127.0.0.1, port_value: {closed} }}", -2),
        (r"type: STRICT_DNS", "type: STATIC", None),
    ]
    for pattern, repl, want in subs:
        text, n = re.subn(pattern, repl, text)
        if "9900" in pattern and n not in (0, 2):
            raise SystemExit(f"load-test rewrite: the loopback admin on 9900 appears {n} times, expected 0 or 2")
        if want is not None and (n < -want if want < 0 else n != want):
            expected = f"at least {-want}" if want < 0 else want
            raise SystemExit(f"load-test rewrite: `{pattern}` matched {n} times, expected {expected}")
    return text


def get(url: str, timeout: float = 1.0) -> tuple[int, str]:
    status, body, _ = get_with_headers(url, timeout)
    return status, body


def get_with_headers(url: str, timeout: float = 1.0) -> tuple[int, str, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace"), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace"), dict(e.headers)
    except OSError:
        return 0, "", {}


HTTP_FILTER = re.compile(r"^\s*- name: (envoy\.filters\.http\.\w+)\s*$", re.M)
FILTER_ORDER = ("envoy.filters.http.wasm", "envoy.filters.http.local_ratelimit", "envoy.filters.http.router")


def filter_order_error(text: str) -> str | None:
    """Why the HTTP filter chain is not authflow → local_ratelimit → router, or None."""
    names = HTTP_FILTER.findall(text)
    missing = [n for n in FILTER_ORDER if n not in names]
    if missing:
        return f"missing {', '.join(missing)} in the HTTP filters {names}"
    at = [names.index(n) for n in FILTER_ORDER]
    if at != sorted(at):
        return f"HTTP filters {names}: expected {' before '.join(FILTER_ORDER)}"
    return None


def validate(envoy: str, cfg: Path) -> bool:
    r = subprocess.run([envoy, "--mode", "validate", "-l", "error", "-c", str(cfg)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-3000:], sep="\n", file=sys.stderr)
    return r.returncode == 0


def send(port: int, method: str, path: str) -> int:
    """Status of one raw request (any method, the path as written), 0 when none came."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(4096).decode(errors="replace")
        m = re.match(r"HTTP/1\.1 (\d{3})", head)
        return int(m.group(1)) if m else 0
    except OSError:
        return 0


# The read-only admin listener (deploy/generate.py) must answer these, and refuse all else.
ADMIN_READ = ("/ready", "/stats?filter=wasm", "/stats/prometheus", "/clusters?format=json")
ADMIN_REFUSED = [
    ("POST", "/quitquitquit"), ("GET", "/quitquitquit"), ("POST", "/healthcheck/fail"),
    ("POST", "/logging?level=trace"), ("GET", "/config_dump"), ("GET", "/certs"),
    ("POST", "/stats"), ("POST", "/reset_counters"), ("GET", "/statsreset"),
    ("GET", "/stats/../quitquitquit"), ("GET", "/stats/%2e%2e/config_dump"),
    ("GET", "//config_dump"), ("GET", "/Stats/../config_dump"), ("GET", "/ready/../runtime"),
    ("get", "/stats"), ("POST", "/stats/recentlookups/enable"), ("GET", "/stats%2F..%2Fconfig_dump"),
]


def get_unix(socket_path: Path, path: str) -> tuple[int, str]:
    """GET `path` from an HTTP server on a unix socket."""
    import http.client

    class UnixConnection(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(2)
            self.sock.connect(str(socket_path))

    try:
        c = UnixConnection("localhost")
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    except OSError:
        return 0, ""


def admin_readonly_error(admin: int, inner_admin: int, proc: subprocess.Popen,
                         admin_pipe: Path | None = None) -> str | None:
    """Why the admin port is not read-only (None when it is), for configs that front their admin."""
    for path in ADMIN_READ:
        status, _ = get(f"http://127.0.0.1:{admin}{path}")
        if status != 200:
            return f"GET {path} through the read-only admin answered {status}, expected 200"
    for method, path in ADMIN_REFUSED:
        status = send(admin, method, path)
        if status not in (400, 403, 404, 405):
            return f"{method} {path} through the read-only admin answered {status}, expected a refusal"
        if proc.poll() is not None:
            return f"{method} {path} through the read-only admin stopped Envoy"
    # Nothing got through to the admin's state: its health check still passes.
    if admin_pipe:
        # Only its owner may open it: other accounts of the host get no admin at all.
        mode = os.stat(admin_pipe).st_mode & 0o777
        if mode & 0o077:
            return f"the admin's unix socket has mode {mode:o}: other accounts may open it"
        status, body = get_unix(admin_pipe, "/ready")
    else:
        status, body = get(f"http://127.0.0.1:{inner_admin}/ready")
    if status != 200 or "LIVE" not in body:
        return f"the admin behind the read-only listener is no longer LIVE ({status} {body.strip()!r})"
    return None


def load(envoy: str, cfg_text: str, tmp: Path, name: str) -> bool:
    listen, admin, closed, inner_admin = free_port(), free_port(), free_port(), free_port()
    cfg = tmp / f"load-{name}"
    admin_pipe = tmp / f"admin-{name}.sock"
    cfg.write_text(for_load_test(cfg_text, listen, admin, closed, inner_admin, admin_pipe))
    admin_pipe = admin_pipe if "pipe: {" in cfg_text else None
    log = tmp / f"load-{name}.log"
    with open(log, "w") as logf:
        proc = subprocess.Popen(
            [envoy, "-c", str(cfg), "--disable-hot-restart", "--concurrency", "1", "-l", "warn",
             "--base-id", str(random.randint(10_000, 60_000))],
            cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        status, body = 0, ""
        while time.monotonic() < deadline and proc.poll() is None:
            status, body = get(f"http://127.0.0.1:{admin}/ready")
            if status == 200 and "LIVE" in body:
                break
            time.sleep(0.2)
        if proc.poll() is not None:
            print(f"  envoy exited with {proc.returncode} before becoming ready:\n{log.read_text()[-4000:]}", file=sys.stderr)
            return False
        if status != 200:
            print(f"  /ready never answered LIVE (last: {status} {body.strip()!r}):\n{log.read_text()[-4000:]}", file=sys.stderr)
            return False
        _, stats = get(f"http://127.0.0.1:{admin}/stats?filter=wasm")
        active = re.search(r"wasm\.envoy\.wasm\.runtime\.v8\.active: (\d+)", stats)
        if not active or int(active.group(1)) < 1:
            print(f"  envoy is ready but no V8 Wasm VM is active; wasm stats:\n{stats}", file=sys.stderr)
            return False
        # A request through the listener must meet the filter: with no key loaded yet and no
        # auth service reachable, a protected path is refused, never passed to the backend.
        status, body = get(f"http://127.0.0.1:{listen}/api/anything", timeout=10)
        if status not in (401, 503):
            print(f"  GET /api/anything answered {status} (expected 401 or 503 from the filter): {body[:300]}", file=sys.stderr)
            return False
        # A public request passes the filter and then the rate limiter, which reports its budget.
        public_status, _, headers = get_with_headers(f"http://127.0.0.1:{listen}/healthz", timeout=10)
        limit = {k.lower(): v for k, v in headers.items()}.get("x-ratelimit-limit")
        if not limit:
            print(f"  GET /healthz answered {public_status} without x-ratelimit-limit: the rate limiter did not run", file=sys.stderr)
            return False
        print(f"  loaded: /ready LIVE, {active.group(1)} V8 VM active, unauthenticated request refused ({status}),"
              f" public request rate-limited (x-ratelimit-limit {limit})")
        if "name: admin_readonly" in cfg_text:
            error = admin_readonly_error(admin, inner_admin, proc, admin_pipe)
            if error:
                print(f"  {error}", file=sys.stderr)
                return False
            where = "on a unix socket, owner only" if admin_pipe else "on loopback"
            print(f"  admin {where}; port 9901 read-only: GET {', '.join(ADMIN_READ)} answered,"
                  f" {len(ADMIN_REFUSED)} other requests refused, Envoy still LIVE")
        elif not re.search(r"^admin:\n  address:\n    socket_address: \{ address: 127\.0\.0\.1,", cfg_text, re.M):
            print("  Envoy's admin listens beyond loopback without the read-only listener in front", file=sys.stderr)
            return False
        return True
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--envoy", required=True)
    ap.add_argument("--wasm", required=True, type=Path)
    ap.add_argument("--validate-only", action="store_true")
    ap.add_argument("configs", nargs="*", type=Path)
    args = ap.parse_args()
    wasm = args.wasm.resolve()
    if not wasm.is_file():
        print(f"{args.wasm} is missing: build it first (`make wasm`)", file=sys.stderr)
        return 1
    configs = args.configs or sorted((ROOT / "envoy").glob("*.yaml"))
    ok = True
    with tempfile.TemporaryDirectory(prefix="authflow-envoy-") as d:
        tmp = Path(d)
        for cfg in configs:
            rel = os.path.relpath(cfg.resolve(), ROOT)
            order = filter_order_error(cfg.read_text())
            if order:
                print(f"filter order {rel}: {order}", file=sys.stderr)
                ok = False
                continue
            print(f"filter order {rel}: authflow, then local_ratelimit, then the router")
            text = with_wasm(cfg.read_text(), wasm)
            copy = tmp / cfg.name
            copy.write_text(text)
            if validate(args.envoy, copy):
                print(f"envoy --mode validate {rel}: ok")
            else:
                print(f"envoy --mode validate {rel}: FAILED", file=sys.stderr)
                ok = False
                continue
            if not args.validate_only:
                print(f"envoy load {rel}:")
                ok &= load(args.envoy, text, tmp, cfg.name)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
