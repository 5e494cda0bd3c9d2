#!/usr/bin/env python3
"""authflow benchmarks: the filter side by side with Envoy's native jwt_authn,
ext_authz to the auth service, and no auth at all.

Envoy runs with `--concurrency 1` pinned to CPU 0 (`taskset -c 0`); wrk and
everything else (this script, the feed server, the auth service for F) run on
CPU 1. Every route is a direct response, so the backend costs nothing. Each
configuration is checked first (200 for a valid token, 401 for a tampered
one), then timed; configurations alternate within each repeat and medians over
the repeats are reported. Envoy CPU per request comes from /proc/PID/stat
(utime + stime), which stays meaningful when wrk is the bottleneck.

Cases:
  A   Envoy, router only (the limit)
  B   Envoy + a no-op Wasm filter (the floor of any Wasm filter)
  C   Envoy jwt_authn, same keys and tokens: with its JWT cache (warm tokens),
      and without it, per algorithm (every request verified)
  D   authflow, warm: a set of users reusing their tokens, doing what C does
      (verify, pass on; no identity headers). D+ adds the four default
      identity headers, one header write each
  E   authflow, cold, per algorithm: more distinct tokens than the verified-token
      cache holds, cycled, so every request is a cache miss and one signature check
  F   Envoy ext_authz (HTTP) to the auth service, which verifies every token
  G   authflow, warm, with 100k live revocation entries (D plus the feed)
  P   auth service alone, pinned to one core: the 304 answers pollers get from
      /v1/revocations?since=CURSOR and /.well-known/jwks.json (If-None-Match)

Usage: bench/bench.py [--duration S] [--repeats N] [--out DIR] [--quick]
Paths come from the environment (the Makefile sets them): AUTHFLOW_ENVOY,
AUTHFLOW_WASM, BENCH_NOOP_WASM, BENCH_TOKENS_BIN, BENCH_AUTH_BIN.
"""

from __future__ import annotations

import argparse
import base64
import csv
import http.server
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ISSUER = "https://bench.authflow.test"
AUDIENCE = "bench"
ALGS = ("ES256", "EdDSA", "RS256")
ENVOY_CPU = "0"
LOAD_CPU = "1"
WARM_USERS = 1000
# More than the filter's default verified-token cache (10 000 entries): cycling
# through them, every request misses (FIFO), as with a fresh token per request.
COLD_TOKENS = 12_000
# Separate tokens for the warm-up and the validity check, so the timed run's
# tokens are all new to the filter's cache.
COLD_WARMUP_TOKENS = 2_000
REVOKED_ENTRIES = 100_000
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The warm cases the tight targets compare (D ≤ 1.10 × B, D level with C cached,
# G ≤ 1.05 × D), measured again interleaved: see `interleave`.
INTERLEAVED = ("B", "B-trimmed", "D", "C-cached", "G")
SLICE_SECONDS = 1

CHILDREN: list[subprocess.Popen] = []


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], **kw) -> subprocess.Popen:
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, **kw)
    CHILDREN.append(p)
    return p


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in CHILDREN:
        CHILDREN.remove(p)


def stop_all(*_args) -> None:
    for p in list(CHILDREN):
        stop(p)
    if _args:
        sys.exit(130)


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # after the command: state(0) ... utime is field 14 overall → index 11 here, stime 12
    return int(fields[11]) + int(fields[12])


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


# ---------------------------------------------------------------- Envoy configs


def cluster(name: str, port: int) -> dict:
    return {
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
    }


def wasm_filter(name: str, wasm: str, configuration: str) -> dict:
    return {"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {
            "name": name, "root_id": name, "fail_open": False,
            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": configuration},
            "vm_config": {"vm_id": name, "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": wasm}}},
        }}}


def authflow_config(jwks: dict, feed: bool, identity: bool = False) -> str:
    """The filter's configuration. Without `identity`, no identity headers are
    forwarded: the same job as jwt_authn in C (verify, then pass the request on).
    With it, the four default identity headers (one header write each)."""
    provider = {
        "name": "bench", "issuer": ISSUER, "audiences": [AUDIENCE],
        "algorithms": ["EdDSA", "ES256", "RS256"],
        "jwks": {"inline": jwks},
    }
    doc: dict = {"providers": [provider], "max_token_lifetime_secs": 86400}
    if not identity:
        doc["identity_headers"] = {}
    if feed:
        provider["revocations"] = {"cluster": "feed", "path": "/v1/revocations", "poll_interval_ms": 1000}
        doc["revocation"] = {"max_entries": 1_000_000, "max_staleness_secs": 3600}
    return json.dumps(doc)


def jwt_authn(jwks_text: str, cache: bool) -> dict:
    provider: dict = {"issuer": ISSUER, "audiences": [AUDIENCE], "local_jwks": {"inline_string": jwks_text}}
    if cache:
        provider["jwt_cache_config"] = {"jwt_cache_size": 10_000}
    return {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"bench": provider},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
    }}


def ext_authz() -> dict:
    return {"name": "envoy.filters.http.ext_authz", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "transport_api_version": "V3",
        "http_service": {
            "server_uri": {"uri": "http://127.0.0.1", "cluster": "authsvc", "timeout": "2s"},
            "path_prefix": "/v1/ext-authz",
        },
    }}


def envoy_doc(http_filters: list[dict], clusters: list[dict], port: int, admin_port: int) -> dict:
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "main",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "bench",
                        # As every shipped config (envoy/envoy.yaml.in): the same for every case.
                        "normalize_path": True,
                        "merge_slashes": True,
                        "path_with_escaped_slashes_action": "REJECT_REQUEST",
                        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{
                            "match": {"prefix": "/"},
                            "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}]}]},
                        "http_filters": http_filters + [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                    }}]}],
            }],
            "clusters": clusters,
        },
    }


class Envoy:
    def __init__(self, env: "Env", name: str, http_filters: list[dict], clusters: list[dict]):
        self.port, self.admin_port = free_port(), free_port()
        self.dir = env.tmp / f"envoy-{name}-{self.port}"
        self.dir.mkdir()
        cfg = self.dir / "envoy.json"
        cfg.write_text(json.dumps(envoy_doc(http_filters, clusters, self.port, self.admin_port)))
        self.log = open(self.dir / "envoy.log", "w")
        self.proc = start(
            ["taskset", "-c", ENVOY_CPU, env.envoy, "-c", str(cfg), "--concurrency", "1",
             "--disable-hot-restart", "-l", "warn", "--base-id", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_for(self.ready, 60, f"Envoy ({name}) to be ready")
        except RuntimeError:
            self.close()
            raise RuntimeError(f"Envoy ({name}) did not start:\n{(self.dir / 'envoy.log').read_text()[-3000:]}")

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError("Envoy exited")
        return http_get(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1)[0] == 200

    def stat(self, name: str) -> int:
        _, _, body = http_get(f"http://127.0.0.1:{self.admin_port}/stats?filter=^{name.replace('.', '[.]')}$")
        total = 0
        for line in body.decode().splitlines():
            n, _, v = line.partition(": ")
            if n == name and v.strip().isdigit():
                total += int(v)
        return total

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bench"

    def close(self) -> None:
        stop(self.proc)
        self.log.close()


# ---------------------------------------------------------------- load


WRK_LUA = r"""
local tokens = {}
local i = 0
function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then tokens[#tokens + 1] = "Bearer " .. line end
  end
end
function request()
  i = i + 1
  if i > #tokens then i = 1 end
  return wrk.format("GET", nil, { ["Authorization"] = tokens[i] })
end
function done(summary, latency, requests)
  io.write(string.format(
    "BENCH {\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p99_us\":%d,\"status_errors\":%d,\"socket_errors\":%d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""

WRK_PLAIN_LUA = r"""
function done(summary, latency, requests)
  io.write(string.format(
    "BENCH {\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p99_us\":%d,\"status_errors\":%d,\"socket_errors\":%d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def wrk(env: "Env", url: str, seconds: float, script: Path, args: list[str], headers: list[str] = (),
        connections: int = 32) -> dict:
    cmd = ["taskset", "-c", LOAD_CPU, env.wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
           "--latency", "-s", str(script)]
    for h in headers:
        cmd += ["-H", h]
    cmd += [url, "--", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line[6:])
    raise RuntimeError(f"wrk gave no result: {out.stdout}\n{out.stderr}")


def measure(env: "Env", pids: dict[str, int], url: str, tokens: Path | None, headers: list[str] = (),
            connections: int = 32, warmup_tokens: Path | None = None, sample=None) -> dict:
    """One warm-up and one timed wrk run; `sample()` (counters) is diffed over the timed run."""
    script = env.lua if tokens else env.plain_lua
    args = [str(tokens)] if tokens else []
    # Warm-up: V8 tiers up, connections open, caches fill.
    wrk(env, url, 1, script, [str(warmup_tokens)] if warmup_tokens else args, headers, connections)
    s0 = sample() if sample else {}
    before = {k: cpu_ticks(p) for k, p in pids.items()}
    r = wrk(env, url, env.duration, script, args, headers, connections)
    after = {k: cpu_ticks(p) for k, p in pids.items()}
    s1 = sample() if sample else {}
    n = max(r["requests"], 1)
    result = {
        "rps": r["requests"] / (r["duration_us"] / 1e6),
        "p50_us": r["p50_us"], "p99_us": r["p99_us"],
        "errors": r["status_errors"] + r["socket_errors"],
        "requests": r["requests"],
    }
    for k in s1:
        result[k] = s1[k] - s0[k]
    for k, p in pids.items():
        result[f"{k}_cpu_us"] = (after[k] - before[k]) / CLK_TCK * 1e6 / n
        result[f"{k}_rss_mib"] = rss_kib(p) / 1024
    return result


# ---------------------------------------------------------------- revocation feed (G)


class FeedServer:
    """Serves one 100k-entry snapshot, then 304 to every poll that sends its cursor."""

    def __init__(self, entries: int):
        expires = int(time.time()) + 7200
        doc = {
            "issuer": ISSUER, "cursor": "1", "snapshot": True,
            "revoked_tokens": [{"jti": f"revoked-{i:06d}", "expires_at": expires} for i in range(entries)],
            "revoked_sessions": [], "banned_subjects": [],
        }
        body = json.dumps(doc, separators=(",", ":")).encode()
        self.snapshots = 0

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                if "since=1" in self.path:
                    self.send_response(304)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                outer.snapshots += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.body_bytes = len(body)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------- auth service (F, P)


class AuthService:
    def __init__(self, env: "Env", data_dir: Path, cpu: str):
        self.port = free_port()
        self.env_vars = dict(os.environ,
                             AUTHFLOW_LISTEN=f"127.0.0.1:{self.port}",
                             AUTHFLOW_DATA_DIR=str(data_dir),
                             AUTHFLOW_ISSUER=f"http://127.0.0.1:{self.port}",
                             AUTHFLOW_ENVIRONMENT="development",
                             # Key-encryption key for secrets at rest, fresh for this run.
                             AUTHFLOW_KEK=base64.b64encode(os.urandom(32)).decode(),
                             AUTHFLOW_PASSWORD_HASH_MEMORY_KIB="8192",
                             AUTHFLOW_PASSWORD_HASH_ITERATIONS="1",
                             RUST_LOG="warn")
        self.bin = env.auth_bin
        self.log = open(data_dir.parent / f"auth-{self.port}.log", "w")
        self.proc = None
        self.cpu = cpu

    def cli(self, *args: str, extra_env: dict | None = None) -> str:
        out = subprocess.run([self.bin, *args], env=dict(self.env_vars, **(extra_env or {})),
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"authflow-auth {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def serve(self) -> None:
        self.proc = start(["taskset", "-c", self.cpu, self.bin, "serve"], env=self.env_vars,
                          stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.proc.poll() is None and http_get(self.url("/.well-known/jwks.json"), timeout=1)[0] == 200,
                 60, "the auth service")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log_tail(self) -> str:
        self.log.flush()
        try:
            return Path(self.log.name).read_text()[-2000:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc:
            stop(self.proc)
            self.proc = None


# ---------------------------------------------------------------- the run


class Env:
    def __init__(self, args):
        self.envoy = os.environ.get("AUTHFLOW_ENVOY", str(ROOT / ".venv/bin/envoy"))
        self.wasm = os.environ.get("AUTHFLOW_WASM", str(ROOT / "target/authflow.wasm"))
        self.noop = os.environ.get("BENCH_NOOP_WASM", str(ROOT / "target/bench/wasm32-wasip1/release/authflow_bench_noop.wasm"))
        # The same no-op after authflow-wasm-trim, as `make wasm` does to authflow.wasm.
        self.noop_trimmed = os.environ.get("BENCH_NOOP_TRIMMED_WASM", str(ROOT / "target/bench/authflow_bench_noop.trimmed.wasm"))
        self.tokens_bin = os.environ.get("BENCH_TOKENS_BIN", str(ROOT / "target/bench/release/authflow-bench-tokens"))
        self.auth_bin = os.environ.get("BENCH_AUTH_BIN", str(ROOT / "target/release/authflow-auth"))
        self.wrk = shutil.which("wrk") or "wrk"
        self.duration = args.duration
        self.tmp = Path(tempfile.mkdtemp(prefix="authflow-bench-"))
        self.lua = self.tmp / "tokens.lua"
        self.lua.write_text(WRK_LUA)
        self.plain_lua = self.tmp / "plain.lua"
        self.plain_lua.write_text(WRK_PLAIN_LUA)
        for p in (self.envoy, self.wasm, self.noop, self.noop_trimmed, self.tokens_bin):
            if not Path(p).exists():
                raise SystemExit(f"missing {p} (run `make bench`, which builds it)")


def read_first(p: Path) -> str:
    return p.read_text().split("\n", 1)[0].strip()


def check(url: str, valid: str | None, tampered: str | None, expect_tampered: int) -> None:
    if valid is not None:
        status = http_get(url, {"Authorization": f"Bearer {valid}"})[0]
        if status != 200:
            raise RuntimeError(f"{url}: valid token got {status}, expected 200")
    if tampered is not None:
        status = http_get(url, {"Authorization": f"Bearer {tampered}"})[0]
        if status != expect_tampered:
            raise RuntimeError(f"{url}: tampered token got {status}, expected {expect_tampered}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5, help="seconds of load per timed run (default 5)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per configuration, alternating (default 3)")
    ap.add_argument("--out", default=str(ROOT / "bench/results"), help="where latest.md / latest.csv go")
    ap.add_argument("--rounds", type=int, default=10,
                    help=f"interleaved rounds of {SLICE_SECONDS} s per warm case for the tight targets (default 10; 0: skip)")
    ap.add_argument("--only", default="", help="comma-separated case ids to run (e.g. A,B,D); default all")
    ap.add_argument("--no-auth-service", action="store_true", help="skip F and P")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs, tokens)")
    args = ap.parse_args()

    # This process and everything it starts without taskset stays off Envoy's CPU.
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    env = Env(args)
    try:
        return run(env, args)
    finally:
        stop_all()
        if args.keep:
            log(f"kept {env.tmp}")
        else:
            shutil.rmtree(env.tmp, ignore_errors=True)


def run(env: Env, args) -> int:
    t0 = time.monotonic()
    tokdir = env.tmp / "tokens"
    log(f"generating keys, {WARM_USERS} warm tokens and {COLD_TOKENS} cold tokens per algorithm")
    n_cold = COLD_TOKENS + COLD_WARMUP_TOKENS
    subprocess.run([env.tokens_bin, str(tokdir), ISSUER, AUDIENCE, str(WARM_USERS),
                    str(n_cold), str(n_cold), str(n_cold)], check=True)
    jwks_text = (tokdir / "jwks.json").read_text()
    jwks = json.loads(jwks_text)
    warm = tokdir / "warm.txt"
    cold, cold_warmup = {}, {}
    for a in ALGS:
        lines = (tokdir / f"cold-{a}.txt").read_text().split()
        cold_warmup[a] = tokdir / f"cold-{a}-warmup.txt"
        cold_warmup[a].write_text("\n".join(lines[:COLD_WARMUP_TOKENS]) + "\n")
        cold[a] = tokdir / f"cold-{a}-timed.txt"
        cold[a].write_text("\n".join(lines[COLD_WARMUP_TOKENS:]) + "\n")
    tampered = {a: read_first(tokdir / f"tampered-{a}.txt") for a in ALGS}

    feed = FeedServer(REVOKED_ENTRIES)
    log(f"revocation feed on :{feed.port}: {REVOKED_ENTRIES} entries, {feed.body_bytes / 1e6:.1f} MB snapshot")

    # id → (label, http filters, clusters, tokens, valid token, tampered token, expected status for tampered, extra).
    # Each target's two cases run back to back within a repeat (B, D; D, G; C-x, E-x), so
    # their per-repeat ratio sees the same machine (D and C cached are two apart).
    authflow_warm = [wasm_filter("authflow", env.wasm, authflow_config(jwks, False))]
    cases: list[dict] = [
        dict(id="A", label="A: router only (no auth)", filters=[], tokens=warm, tamper=None),
        dict(id="B-trimmed", label="B−: no-op Wasm filter, exports trimmed like authflow.wasm",
             filters=[wasm_filter("noop", env.noop_trimmed, "")], tokens=warm, tamper=None),
        dict(id="B", label="B: no-op Wasm filter", filters=[wasm_filter("noop", env.noop, "")], tokens=warm, tamper=None),
        dict(id="D", label="D: authflow, warm (1000 users, EdDSA)", filters=authflow_warm, tokens=warm, tamper="EdDSA"),
        dict(id="G", label=f"G: authflow, warm, {REVOKED_ENTRIES // 1000}k revocations",
             filters=[wasm_filter("authflow", env.wasm, authflow_config(jwks, True))],
             clusters=[cluster("feed", feed.port)], tokens=warm, tamper="EdDSA", feed=True),
        dict(id="C-cached", label="C: jwt_authn, JWT cache on (warm EdDSA)", filters=[jwt_authn(jwks_text, True)],
             tokens=warm, tamper="EdDSA"),
        dict(id="D-identity", label="D+: authflow, warm, forwarding the 4 default identity headers",
             filters=[wasm_filter("authflow", env.wasm, authflow_config(jwks, False, identity=True))], tokens=warm,
             tamper="EdDSA"),
    ]
    for a in ALGS:
        cases.append(dict(id=f"C-{a}", label=f"C: jwt_authn, no cache, {a}", filters=[jwt_authn(jwks_text, False)],
                          tokens=cold[a], warmup=cold_warmup[a], tamper=a))
        cases.append(dict(id=f"E-{a}", label=f"E: authflow, cold, {a}", filters=authflow_warm, tokens=cold[a],
                          warmup=cold_warmup[a], tamper=a))
    for c in cases:
        c["tampered_token"] = tampered[c["tamper"]] if c["tamper"] else None

    auth = None
    if not args.no_auth_service and Path(env.auth_bin).exists():
        try:
            auth = setup_auth_service(env)
            cases.append(dict(id="F", label="F: ext_authz → auth service (every request)", filters=[ext_authz()],
                              clusters=[cluster("authsvc", auth.port)], tokens=auth.tokens, tamper="auth", auth=True))
        except RuntimeError as e:
            log(f"auth service unusable, F and P skipped: {e}")
            auth = None
    elif not args.no_auth_service:
        log(f"no auth service binary at {env.auth_bin}: F and P skipped")

    if args.only:
        wanted = set(args.only.split(","))
        cases = [c for c in cases if c["id"] in wanted or c["id"].split("-")[0] in wanted or c["id"] == "A"]

    results: dict[str, list[dict]] = {c["id"]: [] for c in cases}
    failures: list[str] = []
    for rep in range(args.repeats):
        for c in cases:
            clusters = c.get("clusters", [])
            envoy = Envoy(env, c["id"], c["filters"], clusters)
            try:
                if c.get("feed"):
                    wait_for(lambda: envoy.stat("wasmcustom.authflow.revocations.entries") >= REVOKED_ENTRIES, 120,
                             "the filter to load the revocation snapshot")
                if c.get("auth") and auth.proc.poll() is not None:
                    log(f"auth service exited ({auth.proc.returncode}); restarting it")
                    auth.serve()
                valid = read_first(c.get("warmup") or c["tokens"])
                tam = auth.tampered if c.get("auth") else (tampered[c["tamper"]] if c["tamper"] else None)
                check(envoy.url(), valid, tam, 401)
                pids = {"envoy": envoy.proc.pid}
                if c.get("auth"):
                    pids["auth"] = auth.proc.pid
                sample = None
                if c["id"].startswith(("D", "E-", "G")):
                    def sample(envoy=envoy):
                        return {"cache_hits": envoy.stat("wasmcustom.authflow.token_cache.hit"),
                                "cache_misses": envoy.stat("wasmcustom.authflow.token_cache.miss")}
                r = measure(env, pids, envoy.url(), c["tokens"], warmup_tokens=c.get("warmup"), sample=sample)
                if c.get("feed"):
                    r["revocation_entries"] = envoy.stat("wasmcustom.authflow.revocations.entries")
                r["rep"] = rep
                results[c["id"]].append(r)
                log(f"rep {rep + 1}/{args.repeats} {c['id']:9s} {r['rps']:9.0f} req/s  p50 {r['p50_us'] / 1000:6.2f} ms  "
                    f"p99 {r['p99_us'] / 1000:6.2f} ms  envoy {r['envoy_cpu_us']:7.1f} µs/req  rss {r['envoy_rss_mib']:6.1f} MiB"
                    + (f"  auth {r['auth_cpu_us']:7.1f} µs/req" if "auth_cpu_us" in r else "")
                    + (f"  errors {r['errors']}" if r["errors"] else ""))
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                # One failed configuration does not throw the others away; the table says so.
                failures.append(f"rep {rep + 1} {c['id']}: {e}")
                log(f"rep {rep + 1}/{args.repeats} {c['id']} FAILED: {e}")
                if c.get("auth"):
                    log("auth service log tail:\n" + auth.log_tail())
            finally:
                envoy.close()

    inter: dict[str, list[dict]] = {}
    if args.rounds > 0:
        try:
            inter = interleave(env, cases, args.rounds)
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            failures.append(f"interleaved rounds: {e}")
            log(f"interleaved rounds FAILED: {e}")

    pollers = []
    if auth is not None:
        auth.close()
        pollers = measure_pollers(env, auth, args.repeats)

    feed.close()
    write_results(env, args, cases, results, inter, pollers, failures, time.monotonic() - t0)
    return 1 if failures else 0


def interleave(env: Env, cases: list[dict], rounds: int) -> dict[str, list[dict]]:
    """The warm cases again, side by side: their Envoys all up at once (an idle
    one costs nothing), then `rounds` rounds of one short wrk run on each in
    turn, the order rotating each round. The machine's load comes and goes over
    seconds; here it falls on every case alike, which runs minutes apart cannot
    promise. Per slice: Envoy's CPU ticks and the requests wrk completed."""
    chosen = [c for c in cases if c["id"] in INTERLEAVED]
    envoys: dict[str, Envoy] = {}
    out: dict[str, list[dict]] = {c["id"]: [] for c in chosen}
    try:
        for c in chosen:
            e = envoys[c["id"]] = Envoy(env, f"{c['id']}-interleaved", c["filters"], c.get("clusters", []))
            if c.get("feed"):
                wait_for(lambda e=e: e.stat("wasmcustom.authflow.revocations.entries") >= REVOKED_ENTRIES, 120,
                         "the filter to load the revocation snapshot")
            check(e.url(), read_first(c["tokens"]), c["tampered_token"], 401)
            wrk(env, e.url(), 1, env.lua, [str(c["tokens"])])  # warm-up
        for rnd in range(rounds):
            k = rnd % len(chosen)
            for c in chosen[k:] + chosen[:k]:
                e = envoys[c["id"]]
                before = cpu_ticks(e.proc.pid)
                r = wrk(env, e.url(), SLICE_SECONDS, env.lua, [str(c["tokens"])])
                after = cpu_ticks(e.proc.pid)
                out[c["id"]].append({"round": rnd, "ticks": after - before, "requests": r["requests"],
                                     "errors": r["status_errors"] + r["socket_errors"]})
            log(f"interleaved round {rnd + 1}/{rounds}: " + "  ".join(
                f"{i} {slice_cpu_us(out[i][-1]):.1f}" for i in out) + " µs/req")
    finally:
        for e in envoys.values():
            e.close()
    return out


def slice_cpu_us(sl: dict) -> float:
    return sl["ticks"] / CLK_TCK * 1e6 / max(sl["requests"], 1)


def setup_auth_service(env: Env) -> AuthService:
    data = env.tmp / "auth-data"
    data.mkdir()
    auth = AuthService(env, data, LOAD_CPU)
    auth.cli("user", "create", "--email", "bench@example.com", extra_env={"AUTHFLOW_NEW_PASSWORD": os.urandom(12).hex()})
    tokens = []
    for _ in range(20):
        out = json.loads(auth.cli("token", "mint", "--email", "bench@example.com"))
        tokens.append(out["access_token"])
    path = env.tmp / "auth-tokens.txt"
    path.write_text("\n".join(tokens) + "\n")
    auth.tokens = path
    h, p, s = tokens[0].split(".")
    # Flip one signature character in the middle (not the last, whose low bits may be padding).
    mid = len(s) // 2
    auth.tampered = f"{h}.{p}.{s[:mid]}{'A' if s[mid] != 'A' else 'B'}{s[mid + 1:]}"
    auth.serve()
    status = http_get(auth.url("/v1/ext-authz/x"), {"Authorization": f"Bearer {tokens[0]}"})[0]
    if status != 200:
        raise RuntimeError(f"ext-authz answered {status} for a freshly minted token")
    log(f"auth service on :{auth.port} with {len(tokens)} minted tokens")
    return auth


def measure_pollers(env: Env, auth: AuthService, repeats: int) -> list[dict]:
    """The auth service alone on one core (CPU 0), wrk on the other: the 304 answers."""
    auth.cpu = ENVOY_CPU
    auth.serve()
    try:
        status, headers, body = http_get(auth.url("/v1/revocations"))
        cursor = json.loads(body)["cursor"]
        status, headers, _ = http_get(auth.url("/.well-known/jwks.json"))
        etag = {k.lower(): v for k, v in headers.items()}.get("etag")
        targets = [
            ("P-revocations", "P: GET /v1/revocations?since=CURSOR → 304", auth.url(f"/v1/revocations?since={cursor}"), []),
            ("P-jwks", "P: GET /.well-known/jwks.json, If-None-Match → 304", auth.url("/.well-known/jwks.json"),
             [f"If-None-Match: {etag}"] if etag else []),
        ]
        out = []
        for tid, label, url, hdrs in targets:
            st = http_get(url, dict(h.split(": ", 1) for h in hdrs))[0]
            if st != 304:
                log(f"{tid}: expected 304, got {st}")
            runs = []
            for rep in range(repeats):
                r = measure(env, {"auth": auth.proc.pid}, url, None, hdrs, connections=64)
                runs.append(r)
                log(f"rep {rep + 1}/{repeats} {tid:14s} {r['rps']:9.0f} req/s  p99 {r['p99_us'] / 1000:6.2f} ms  "
                    f"auth {r['auth_cpu_us']:6.1f} µs/req  rss {r['auth_rss_mib']:6.1f} MiB" + (f"  errors {r['errors']}" if r["errors"] else ""))
            out.append(dict(id=tid, label=label, status=st, runs=runs))
        return out
    finally:
        auth.close()


def med(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if key in r]
    return statistics.median(vals) if vals else None


def envoy_version(env: Env) -> str:
    try:
        out = subprocess.run([env.envoy, "--version"], capture_output=True, text=True, timeout=20).stdout
        return out.strip().split("version:")[-1].strip().split("/")[1] if "/" in out else out.strip()
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def write_results(env: Env, args, cases, results, inter, pollers, failures, elapsed: float) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = {k: med(results["A"], k) for k in ("rps", "p50_us", "p99_us", "envoy_cpu_us", "envoy_rss_mib")} if results.get("A") else {}

    def ratio(v, k):
        b = base.get(k)
        return v / b if v is not None and b else None

    # Tables list the cases by letter (A, B, B−, C…), whatever order they ran in.
    display = ["A", "B", "B-trimmed", "C-cached"] + [f"C-{a}" for a in ALGS] + ["D", "D-identity"] + [f"E-{a}" for a in ALGS] + ["G", "F"]
    rows = []
    for c in sorted(cases, key=lambda c: display.index(c["id"]) if c["id"] in display else len(display)):
        runs = results[c["id"]]
        if not runs:
            continue
        row = {"id": c["id"], "case": c["label"], "runs": len(runs)}
        for k in ("rps", "p50_us", "p99_us", "envoy_cpu_us", "envoy_rss_mib", "auth_cpu_us"):
            row[k] = med(runs, k)
            row[f"{k}_vs_A"] = ratio(row[k], k) if k != "auth_cpu_us" else None
        row["errors"] = sum(r["errors"] for r in runs)
        if "cache_hits" in runs[0]:
            hits = sum(r["cache_hits"] for r in runs)
            misses = sum(r["cache_misses"] for r in runs)
            row["cache_hit_rate"] = hits / max(hits + misses, 1)
        rows.append(row)

    fields = ["id", "case", "runs", "rps", "rps_vs_A", "p50_us", "p50_us_vs_A", "p99_us", "p99_us_vs_A",
              "envoy_cpu_us", "envoy_cpu_us_vs_A", "envoy_rss_mib", "envoy_rss_mib_vs_A", "auth_cpu_us",
              "cache_hit_rate", "errors"]
    with open(out / "latest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in row.items()})
        for p in pollers:
            w.writerow({"id": p["id"], "case": p["label"], "runs": len(p["runs"]), "rps": f"{med(p['runs'], 'rps'):.3f}",
                        "p50_us": med(p["runs"], "p50_us"), "p99_us": med(p["runs"], "p99_us"),
                        "auth_cpu_us": f"{med(p['runs'], 'auth_cpu_us'):.3f}", "errors": sum(r["errors"] for r in p["runs"])})
    with open(out / "latest-runs.json", "w") as f:
        json.dump({"results": results, "interleaved": inter, "pollers": pollers}, f, indent=1)

    by = {r["id"]: r for r in rows}

    def f0(v):
        return "–" if v is None else f"{v:,.0f}"

    def ms(v):
        return "–" if v is None else f"{v / 1000:.2f}"

    def us(v):
        return "–" if v is None else f"{v:.1f}"

    def x(v):
        return "–" if v is None else f"{v:.2f}×"

    lines = [
        "# authflow benchmark — latest results",
        "",
        f"Made by `make bench` ({args.repeats} alternating runs of {args.duration:g} s per configuration, medians; "
        f"whole run {elapsed / 60:.1f} min).",
        f"Envoy {envoy_version(env)}, `--concurrency 1` pinned to CPU {ENVOY_CPU}; wrk (1 thread, 32 connections, HTTP/1.1 "
        f"keep-alive) pinned to CPU {LOAD_CPU}; direct-response route. CPU: {cpu_model()}, {os.cpu_count()} CPUs.",
        "",
        "| case | req/s | ×A | p50 ms | p99 ms | Envoy CPU µs/req | ×A | Envoy RSS MiB | ×A | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        notes = []
        if r.get("auth_cpu_us") is not None:
            notes.append(f"auth service {r['auth_cpu_us']:.1f} µs/req CPU")
        if "cache_hit_rate" in r:
            notes.append(f"cache hits {r['cache_hit_rate'] * 100:.0f} %")
        if r["errors"]:
            notes.append(f"{r['errors']} errors")
        lines.append(f"| {r['case']} | {f0(r['rps'])} | {x(r['rps_vs_A'])} | {ms(r['p50_us'])} | {ms(r['p99_us'])} | "
                     f"{us(r['envoy_cpu_us'])} | {x(r['envoy_cpu_us_vs_A'])} | {us(r['envoy_rss_mib'])} | "
                     f"{x(r['envoy_rss_mib_vs_A'])} | {'; '.join(notes)} |")
    if pollers:
        lines += ["", "Auth service alone, pinned to one core (CPU 0), wrk with 64 connections on CPU 1:", "",
                  "| endpoint | status | req/s | p50 ms | p99 ms | auth CPU µs/req | RSS MiB |", "|---|---:|---:|---:|---:|---:|---:|"]
        for p in pollers:
            lines.append(f"| {p['label']} | {p['status']} | {f0(med(p['runs'], 'rps'))} | {ms(med(p['runs'], 'p50_us'))} | "
                         f"{ms(med(p['runs'], 'p99_us'))} | {us(med(p['runs'], 'auth_cpu_us'))} | {us(med(p['runs'], 'auth_rss_mib'))} |")

    # The warm cases interleaved (see `interleave`): Envoy CPU per request over all slices.
    def inter_cpu(i):
        sl = inter.get(i) or []
        n = sum(x["requests"] for x in sl)
        return sum(x["ticks"] for x in sl) / CLK_TCK * 1e6 / n if n else None

    def inter_rounds(a, b):
        """Per-round ratios a/b (the two ran seconds apart in that round)."""
        b_by = {x["round"]: slice_cpu_us(x) for x in inter.get(b, [])}
        return [slice_cpu_us(x) / b_by[x["round"]] for x in inter.get(a, []) if x["round"] in b_by]

    label = {c["id"]: c["label"] for c in cases}
    if inter:
        rounds = max(len(v) for v in inter.values())
        lines += ["", f"Warm cases interleaved: all their Envoys up at once, then {rounds} rounds of one {SLICE_SECONDS} s wrk run "
                  "on each in turn (order rotating), same pinning. Envoy CPU per request over all rounds:", "",
                  "| case | Envoy CPU µs/req | ×B | requests | errors |", "|---|---:|---:|---:|---:|"]
        for i in [d for d in display if d in inter]:
            v, b = inter_cpu(i), inter_cpu("B")
            lines.append(f"| {label.get(i, i)} | {us(v)} | {x(v / b) if v and b else '–'} | "
                         f"{sum(s['requests'] for s in inter[i]):,} | {sum(s['errors'] for s in inter[i])} |")

    # Targets (ratios of Envoy CPU per request, same run).
    def cpu(i):
        return by.get(i, {}).get("envoy_cpu_us")

    lines += ["", "## Targets (Envoy CPU per request, same run)", "",
              "The warm targets are judged on the interleaved rounds (ratio of CPU per request over all rounds;",
              "the spread of the per-round ratios beside it); the others on the median of the per-repeat ratios",
              "of the separate runs (the two cases ran back to back). The ratio of the medians above is shown too.", "",
              "| target | measured | met |", "|---|---|---|"]

    def paired(a, b):
        """Per-repeat ratios of Envoy CPU per request: the two cases ran next to
        each other in the same repeat, so load that comes and goes on the
        machine between repeats cancels out."""
        a_by_rep = {r["rep"]: r["envoy_cpu_us"] for r in results.get(a, [])}
        return [a_by_rep[r["rep"]] / r["envoy_cpu_us"] for r in results.get(b, []) if r["rep"] in a_by_rep]

    def target(name, a, b, limit):
        ia, ib = inter_cpu(a), inter_cpu(b)
        if ia and ib:
            v, per = ia / ib, sorted(inter_rounds(a, b))
            seq = paired(a, b)
            seq_note = f"; separate runs, per-repeat median {statistics.median(seq):.2f}×" if seq else ""
            bound = f"; limit {limit:.2f}×" if limit else ""
            met = "–" if not limit else "yes" if v <= limit else "**no**"
            lines.append(f"| {name} | {v:.2f}× interleaved ({ia:.1f} / {ib:.1f} µs; rounds {per[0]:.2f}–{per[-1]:.2f}, "
                         f"median {statistics.median(per):.2f}×{seq_note}{bound}) | {met} |")
            return
        num, den, ratios = cpu(a), cpu(b), paired(a, b)
        if num is None or den is None or not ratios:
            lines.append(f"| {name} | not measured | – |")
            return
        v = statistics.median(ratios)
        each = ", ".join(f"{x:.2f}" for x in ratios)
        bound = f"; limit {limit:.2f}×" if limit else ""
        met = "–" if not limit else "yes" if v <= limit else "**no**"
        lines.append(f"| {name} | {v:.2f}× (per repeat: {each}; medians {num:.1f} / {den:.1f} µs = {num / den:.2f}×{bound}) | {met} |")

    target("D warm ≤ 1.10 × B (Wasm floor)", "D", "B", 1.10)
    target("D warm vs B−, the no-op trimmed the same way (for reference)", "D", "B-trimmed", None)
    target("D warm vs C cached (level)", "D", "C-cached", 1.10)
    for a in ALGS:
        target(f"E cold {a} ≤ 2 × C uncached {a}", f"E-{a}", f"C-{a}", 2.0)
    target("G (100k revocations) ≤ 1.05 × D", "G", "D", 1.05)
    if "G" in by:
        lines.append(f"| Envoy RSS with {REVOKED_ENTRIES // 1000}k revocation entries | {by['G']['envoy_rss_mib']:.1f} MiB "
                     f"(D without: {by.get('D', {}).get('envoy_rss_mib') or 0:.1f} MiB) | – |")
    for p in pollers:
        v = med(p["runs"], "rps")
        lines.append(f"| auth service {p['id'][2:]} 304 ≥ 20k req/s on one core | {v:,.0f} req/s | {'yes' if v >= 20000 else '**no**'} |")
    if failures:
        lines += ["", "Failed runs (left out of the medians):", ""] + [f"- {f}" for f in failures]
    lines.append("")
    (out / "latest.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
