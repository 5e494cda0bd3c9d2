# Shared by run.sh and demo.sh: start the local stack on 127.0.0.1, stop it on exit.
# Ports: Envoy 8080 (admin 9901), auth service 8081, echo backend 8082 — as in envoy/local.yaml.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN_DIR="$ROOT/.run"
ENVOY_BIN="$ROOT/.venv/bin/envoy"
AUTH_BIN="$ROOT/target/release/authflow-auth"
ECHO_BIN="$ROOT/target/release/authflow-echo"
PIDS=()

say() { printf '\033[1m%s\033[0m\n' "$*"; }

need_curl() {
  command -v curl >/dev/null && return
  say "installing curl (apt-get)"
  apt-get update -qq && apt-get install -y -qq curl >/dev/null
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

random_password() { python3 -c 'import secrets; print("pw-" + secrets.token_urlsafe(15))'; }

start_stack() {
  need_curl
  for port in 8080 8081 8082 9901; do
    if port_busy "$port"; then
      say "port $port on 127.0.0.1 is in use: stop whatever listens there (another 'make run'?) and retry"
      return 1
    fi
  done
  # A fresh data directory per run: development keys and passwords are generated now, never committed.
  rm -rf "$RUN_DIR" && mkdir -p "$RUN_DIR"
  export AUTHFLOW_DATA_DIR="$RUN_DIR/auth-data" AUTHFLOW_ENVIRONMENT=development AUTHFLOW_DEV_ENDPOINTS=true
  export AUTHFLOW_LISTEN=127.0.0.1:8081 AUTHFLOW_ISSUER=http://127.0.0.1:8081 AUTHFLOW_AUDIENCES=authflow-demo
  # Envoy (use_remote_address: true) appends the client's address to x-forwarded-for: one trusted hop.
  export AUTHFLOW_XFF_NUM_TRUSTED_HOPS=1
  # The key-encryption key for secrets at rest: generated for this run (the data directory is fresh too).
  AUTHFLOW_KEK="$("$AUTH_BIN" kek generate)" && export AUTHFLOW_KEK
  trap stop_stack EXIT
  trap 'exit 130' INT TERM

  "$AUTH_BIN" serve >"$RUN_DIR/auth.log" 2>&1 & PIDS+=($!)
  AUTHFLOW_ECHO_LISTEN=127.0.0.1:8082 "$ECHO_BIN" >"$RUN_DIR/echo.log" 2>&1 & PIDS+=($!)
  wait_http http://127.0.0.1:8081/readyz "auth service" || return 1
  (cd "$ROOT" && exec "$ENVOY_BIN" -c envoy/local.yaml --disable-hot-restart --concurrency 2 -l warn) >"$RUN_DIR/envoy.log" 2>&1 & PIDS+=($!)
  wait_http http://127.0.0.1:9901/ready "Envoy" || return 1
  # Ready means the filter has its keys: the first JWKS fetch happens at start-up.
  for _ in $(seq 1 50); do
    curl -fsS 'http://127.0.0.1:9901/stats?filter=authflow.jwks.keys_loaded' | grep -qv ': 0$' && break
    sleep 0.1
  done

  DEMO_PASSWORD=$(random_password)
  ADMIN_PASSWORD=$(random_password)
  AUTHFLOW_NEW_PASSWORD="$DEMO_PASSWORD" "$AUTH_BIN" user create --email demo@authflow.local >/dev/null
  AUTHFLOW_NEW_PASSWORD="$ADMIN_PASSWORD" "$AUTH_BIN" user create --email admin@authflow.local --role admin >/dev/null
  export DEMO_PASSWORD ADMIN_PASSWORD
}
