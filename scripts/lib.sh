# Shared by run.sh, demo.sh and the browser test: start the local stack on 127.0.0.1, stop it on exit.
# Ports: Envoy 8080 (admin 9901, read-only; the full admin is the unix socket .run/envoy-admin.sock,
# owner only), auth service 8081, echo backend 8082 — as in envoy/local.yaml.
#
# Knobs for tests that run the same stack beside another `make run` (all optional):
#   AUTHFLOW_RUN_DIR        data and logs (default .run/)
#   AUTHFLOW_RUN_BIN_DIR    where authflow-auth and authflow-echo are (default: cargo's release
#                           directory, $CARGO_TARGET_DIR/release or target/release)
#   AUTHFLOW_RUN_ENVOY_PORT, AUTHFLOW_RUN_ADMIN_PORT, AUTHFLOW_RUN_AUTH_PORT, AUTHFLOW_RUN_ECHO_PORT
#     other ports: Envoy then runs a copy of envoy/local.yaml with these ports in it.
# Any other AUTHFLOW_* setting in the environment reaches the auth service as usual.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN_DIR="${AUTHFLOW_RUN_DIR:-$ROOT/.run}"
ENVOY_BIN="$ROOT/.venv/bin/envoy"
# (`make release-bins` builds them where cargo puts them: $CARGO_TARGET_DIR when set.)
CARGO_OUT="${CARGO_TARGET_DIR:-target}"
case "$CARGO_OUT" in /*) ;; *) CARGO_OUT="$ROOT/$CARGO_OUT" ;; esac
BIN_DIR="${AUTHFLOW_RUN_BIN_DIR:-$CARGO_OUT/release}"
AUTH_BIN="$BIN_DIR/authflow-auth"
ECHO_BIN="$BIN_DIR/authflow-echo"
ENVOY_PORT="${AUTHFLOW_RUN_ENVOY_PORT:-8080}"
ADMIN_PORT="${AUTHFLOW_RUN_ADMIN_PORT:-9901}"
AUTH_PORT="${AUTHFLOW_RUN_AUTH_PORT:-8081}"
ECHO_PORT="${AUTHFLOW_RUN_ECHO_PORT:-8082}"
PIDS=()

say() { printf '\033[1m%s\033[0m\n' "$*"; }

need_curl() {
  command -v curl >/dev/null && return
  say "installing curl (apt-get)"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq curl >/dev/null
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Runs as the EXIT trap, also under `set -e`: a child that is already gone, or
# one that dies of the SIGTERM sent here (status 143), must not become the
# script's exit status.
stop_stack() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}

wait_http() { # url, what
  for _ in $(seq 1 150); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.2
  done
  say "$2 did not come up; see $RUN_DIR/*.log"
  return 1
}

# envoy/local.yaml, or a copy of it in RUN_DIR with the knobs' ports and run directory (the
# issuer URL and the callouts' authority name the auth service's port too).
envoy_config_for_ports() {
  if [ "$ENVOY_PORT$ADMIN_PORT$AUTH_PORT$ECHO_PORT" = 8080990180818082 ] && [ "$RUN_DIR" = "$ROOT/.run" ]; then
    echo envoy/local.yaml
    return
  fi
  # (Envoy's own admin is a unix socket in the run directory; 9901 is its read-only listener.)
  sed -e "s/port_value: 8080\b/port_value: $ENVOY_PORT/" -e "s/port_value: 9901\b/port_value: $ADMIN_PORT/" \
      -e "s#path: \.run/envoy-admin\.sock#path: $RUN_DIR/envoy-admin.sock#" \
      -e "s/port_value: 8081\b/port_value: $AUTH_PORT/" -e "s/port_value: 8082\b/port_value: $ECHO_PORT/" \
      -e "s/127\.0\.0\.1:8081\b/127.0.0.1:$AUTH_PORT/g" "$ROOT/envoy/local.yaml" >"$RUN_DIR/envoy.yaml" || return 1
  echo "$RUN_DIR/envoy.yaml"
}

# The auth service's binary with this run's key-encryption key (start_stack sets AUTH_KEK).
auth_cli() { AUTHFLOW_KEK__KEY="$AUTH_KEK" "$AUTH_BIN" "$@"; }

random_password() { python3 -c 'import secrets; print("pw-" + secrets.token_urlsafe(15))'; }

start_stack() {
  need_curl
  # Other ports mean a stack beside another: its .run/ (keys, database) is not ours to wipe.
  if [ -z "${AUTHFLOW_RUN_DIR:-}" ] &&
    [ -n "${AUTHFLOW_RUN_ENVOY_PORT:-}${AUTHFLOW_RUN_ADMIN_PORT:-}${AUTHFLOW_RUN_AUTH_PORT:-}${AUTHFLOW_RUN_ECHO_PORT:-}" ]; then
    say "AUTHFLOW_RUN_*_PORT set without AUTHFLOW_RUN_DIR: give this stack a data directory of its own"
    return 1
  fi
  for port in "$ENVOY_PORT" "$AUTH_PORT" "$ECHO_PORT" "$ADMIN_PORT"; do
    if port_busy "$port"; then
      say "port $port on 127.0.0.1 is in use: stop whatever listens there (another 'make run'?) and retry"
      return 1
    fi
  done
  # A fresh data directory per run: development keys and passwords are generated now, never committed.
  # Owner only, as is everything the stack writes: the logs carry what the services log (Envoy at
  # debug level logs every request's headers: bearer tokens, device secrets, cookies).
  # Made here, never taken over: between the removal and the `mkdir` the name is free, and in
  # /tmp another account may have made it first (`mkdir` fails then, where `-p` would go on).
  umask 077
  rm -rf "$RUN_DIR" && mkdir -m 700 "$RUN_DIR" || return 1
  export AUTHFLOW_SERVER__DATA_DIR="$RUN_DIR/auth-data" AUTHFLOW_ENVIRONMENT=development AUTHFLOW_SERVER__DEV_ENDPOINTS=true
  export AUTHFLOW_SERVER__LISTEN=127.0.0.1:$AUTH_PORT AUTHFLOW_TOKENS__ISSUER=http://127.0.0.1:$AUTH_PORT AUTHFLOW_TOKENS__AUDIENCES=authflow-demo
  # Clients reach the service's endpoints through Envoy too, and name its origin in DPoP proofs.
  export AUTHFLOW_DPOP__ORIGINS=http://127.0.0.1:$ENVOY_PORT,http://localhost:$ENVOY_PORT
  # Envoy (use_remote_address: true) appends the client's address to x-forwarded-for: one trusted hop.
  export AUTHFLOW_SERVER__XFF_NUM_TRUSTED_HOPS=1
  # The key-encryption key for secrets at rest: generated for this run (the data directory is fresh
  # too), and handed to the auth service's processes only (auth_cli): not exported, so Envoy and
  # the echo backend do not carry it in their environment.
  AUTH_KEK="$("$AUTH_BIN" kek generate)" || return 1
  # Also beside the data, owner only (RUN_DIR is 0700, umask 077), for the CLI on this stack's database.
  printf '%s\n' "$AUTH_KEK" >"$RUN_DIR/kek" || return 1
  trap stop_stack EXIT
  trap 'exit 130' INT TERM

  # (A simple command, not auth_cli: $! must be the service's own pid, which stop_stack signals.)
  AUTHFLOW_KEK__KEY="$AUTH_KEK" "$AUTH_BIN" serve >"$RUN_DIR/auth.log" 2>&1 & PIDS+=($!)
  AUTHFLOW_ECHO_LISTEN=127.0.0.1:$ECHO_PORT "$ECHO_BIN" >"$RUN_DIR/echo.log" 2>&1 & PIDS+=($!)
  wait_http "http://127.0.0.1:$AUTH_PORT/readyz" "auth service" || return 1
  local envoy_config
  envoy_config=$(envoy_config_for_ports) || return 1
  (cd "$ROOT" && exec "$ENVOY_BIN" -c "$envoy_config" --disable-hot-restart --concurrency 2 -l warn) >"$RUN_DIR/envoy.log" 2>&1 & PIDS+=($!)
  wait_http "http://127.0.0.1:$ADMIN_PORT/ready" "Envoy" || return 1
  # Ready means the filter has its keys: the first JWKS fetch happens at start-up.
  for _ in $(seq 1 50); do
    curl -fsS "http://127.0.0.1:$ADMIN_PORT/stats?filter=authflow.jwks.keys_loaded" | grep -qv ': 0$' && break
    sleep 0.1
  done

  DEMO_PASSWORD=$(random_password)
  ADMIN_PASSWORD=$(random_password)
  AUTHFLOW_NEW_PASSWORD="$DEMO_PASSWORD" auth_cli user create --email demo@authflow.local >/dev/null
  AUTHFLOW_NEW_PASSWORD="$ADMIN_PASSWORD" auth_cli user create --email admin@authflow.local --role admin >/dev/null
  export DEMO_PASSWORD ADMIN_PASSWORD
}
