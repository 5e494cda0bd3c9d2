#!/usr/bin/env bash
# `make run`: auth service (SQLite, development mailer), echo backend and Envoy
# with the filter, all on 127.0.0.1; prints a curl walkthrough; Ctrl-C stops all.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
start_stack

cat <<TXT

$(say "authflow is running on 127.0.0.1")
  Envoy + filter  http://127.0.0.1:8080   (admin http://127.0.0.1:9901/stats?filter=^wasmcustom)
  auth service    http://127.0.0.1:8081   (OpenAPI: /openapi.json, dev outbox: /v1/dev/outbox?to=EMAIL)
  echo backend    http://127.0.0.1:8082   (answers with the headers it received)
  logs            .run/*.log
  CLI on this data  AUTHFLOW_KEK__KEY_FILE=$RUN_DIR/kek AUTHFLOW_SERVER__DATA_DIR=$RUN_DIR/auth-data $AUTH_BIN user list

In a browser: open http://127.0.0.1:8080/app/hello — the filter sends you to sign in
  (or sign up: the verification link and the sign-in code are in the dev outbox above).

Demo users (generated for this run):
  demo@authflow.local   $DEMO_PASSWORD
  admin@authflow.local  $ADMIN_PASSWORD   (role admin)

Walkthrough — paste into another shell:

  E=http://127.0.0.1:8080; A=http://127.0.0.1:8081
  field() { python3 -c 'import sys,json; d=json.load(sys.stdin); d=d[-1] if isinstance(d,list) else d; print(d[sys.argv[1]])' "\$1"; }

  # 1. no token: refused by the filter (RFC 6750)
  curl -si \$E/api/hello | head -n 1

  # 2. sign in through Envoy: password, then the 6-digit code from the development outbox
  CH=\$(curl -s \$E/v1/auth/signin -H 'content-type: application/json' \\
        -d '{"email":"demo@authflow.local","password":"$DEMO_PASSWORD"}' | field challenge_id)
  CODE=\$(curl -s "\$A/v1/dev/outbox?to=demo@authflow.local" | field code)
  S=\$(curl -s \$E/v1/auth/signin/verify -H 'content-type: application/json' \\
        -d "{\"challenge_id\":\"\$CH\",\"code\":\"\$CODE\"}")   # kept in this shell only
  AT=\$(printf '%s' "\$S" | field access_token); DEV=\$(printf '%s' "\$S" | field device_secret)
  RT=\$(printf '%s' "\$S" | field refresh_token)

  # 3. call the backend with the token and the device secret: see x-auth-user etc.
  curl -s \$E/api/hello -H "authorization: Bearer \$AT" -H "x-authflow-device: \$DEV"

  # 4. the same token from another device is refused
  curl -si \$E/api/hello -H "authorization: Bearer \$AT" -H "x-authflow-device: stolen" | grep -i www-authenticate

  # 5. refresh (rotating), then log out: the token is refused within about a second
  curl -s \$E/v1/auth/refresh -H 'content-type: application/json' -H "x-authflow-device: \$DEV" -d "{\"refresh_token\":\"\$RT\"}" | field expires_in
  curl -s -X POST \$E/v1/auth/logout -H "authorization: Bearer \$AT" -H "x-authflow-device: \$DEV"; echo
  sleep 2; curl -si \$E/api/hello -H "authorization: Bearer \$AT" -H "x-authflow-device: \$DEV" | grep -i www-authenticate

  # 6. the filter's counters
  curl -s 'http://127.0.0.1:9901/stats?filter=^wasmcustom'

'make demo' runs all of this (and a ban) for you. Ctrl-C stops everything.
TXT
wait "${PIDS[@]}" || true
