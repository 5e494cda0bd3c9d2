#!/usr/bin/env python3
"""Envoy's memory with case B's and case D's filter, without the whole bench.

Each variant: Envoy (`--concurrency 1`, as in `make bench`) with the bench's
configuration for that case, 3 s of wrk traffic with the bench's 1 000 warm
tokens, then `VmRSS` and Envoy's admin `/memory` (its heap: allocated, free
pages, thread caches). Repeated, medians. See docs/bench.md, "Memory per VM".

    python3 bench/rss.py [--repeats 3] B= D=target/authflow.wasm D-other=path/to/other.wasm

`NAME=` (nothing after `=`) is case B's no-op filter; `NAME=WASM` is that
module with case D's configuration. Needs what `make bench-build` builds
(the same BENCH_* variables as bench.py point elsewhere).
"""

import argparse
import json
import statistics
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the bench's configs, Envoy and wrk helpers)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("variants", nargs="+", metavar="NAME=[WASM]")
    args = ap.parse_args()
    env = bench.Env(types.SimpleNamespace(duration=3))
    tokdir = env.tmp / "tokens"
    bench.subprocess.run([env.tokens_bin, str(tokdir), bench.ISSUER, bench.AUDIENCE, str(bench.WARM_USERS), "1", "1", "1"],
                         check=True, stdout=bench.subprocess.DEVNULL)
    jwks = json.loads((tokdir / "jwks.json").read_text())
    warm = tokdir / "warm.txt"
    variants = {}
    for spec in args.variants:
        name, _, wasm = spec.partition("=")
        variants[name] = ([bench.wasm_filter("authflow", wasm, bench.authflow_config(jwks, False))] if wasm
                          else [bench.wasm_filter("noop", env.noop, "")])
    rows: dict[str, list[dict]] = {name: [] for name in variants}
    try:
        for _ in range(args.repeats):
            for name, filters in variants.items():
                envoy = bench.Envoy(env, name, filters, [])
                try:
                    bench.wrk(env, envoy.url(), 3, env.lua, [str(warm)])
                    time.sleep(0.5)
                    heap = json.loads(bench.http_get(f"http://127.0.0.1:{envoy.admin_port}/memory")[2])
                    rows[name].append({
                        "rss": bench.rss_kib(envoy.proc.pid) / 1024,
                        "allocated": int(heap["allocated"]) / 2**20,
                        "free": (int(heap["pageheap_free"]) + int(heap["total_thread_cache"])) / 2**20,
                    })
                finally:
                    envoy.close()
    finally:
        bench.stop_all()
        bench.shutil.rmtree(env.tmp, ignore_errors=True)
    print("| variant | Envoy RSS MiB | heap allocated MiB | heap free + thread caches MiB |")
    print("|---|---:|---:|---:|")
    for name, runs in rows.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("rss", "allocated", "free")}
        print(f"| {name} | {med['rss']:.1f} | {med['allocated']:.1f} | {med['free']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
