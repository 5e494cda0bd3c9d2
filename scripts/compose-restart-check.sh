#!/usr/bin/env bash
# Run by scripts/compose-test.sh after the walkthrough, against its dockerd (images built): the
# default stack keeps its data across `docker compose down` (no -v) and `up`: the user, a live
# session, a logged-out session's revocation (a new Envoy learns it from the feed), the signing
# keys and the key-encryption key that seals them. About 20 s.
set -euo pipefail
cd "$(dirname "$0")/.."
E=http://127.0.0.1:8080 A=http://127.0.0.1:8081
json() { python3 -c 'import sys,json; d=json.load(sys.stdin); d=d[-1] if isinstance(d,list) else d; print(d[sys.argv[1]])' "$1"; }
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
post() { curl -s "$E$1" -H 'content-type: application/json' -d "$2" "${@:3}"; }
signin() {
  local ch s
  ch=$(post /v1/auth/signin "{\"email\":\"$1\",\"password\":\"$2\"}" | json challenge_id)
  s=$(post /v1/auth/signin/verify "{\"challenge_id\":\"$ch\",\"code\":\"$(curl -s "$A/v1/dev/outbox?to=$1" | json code)\"}")
  echo "$(json access_token <<<"$s") $(json device_secret <<<"$s")"
}
hello() { code $E/api/hello -H "authorization: Bearer $1" -H "x-authflow-device: $2"; }
expect() { # WHAT EXPECTED GOT
  if [ "$2" = "$3" ]; then echo "   ok   $1: $3"; else echo "   FAIL $1: expected $2, got $3"; exit 1; fi
}
within() { # SECONDS EXPECTED COMMAND...
  local end=$(( $(date +%s) + $1 )) want=$2 got; shift 2
  until got=$("$@"); [ "$got" = "$want" ] || [ "$(date +%s)" -ge "$end" ]; do sleep 0.2; done
  echo "$got"
}

docker compose up --wait
post /v1/auth/signup '{"email":"carol@example.com","password":"a-long-demo-passphrase-3"}' >/dev/null
code $E/v1/auth/verify-email -H 'content-type: application/json' \
  -d "{\"token\":\"$(curl -s "$A/v1/dev/outbox?to=carol@example.com" | json token)\"}" >/dev/null
read -r AT1 DEV1 < <(signin carol@example.com a-long-demo-passphrase-3)
read -r AT2 DEV2 < <(signin carol@example.com a-long-demo-passphrase-3)
code -X POST $E/v1/auth/logout -H "authorization: Bearer $AT1" -H "x-authflow-device: $DEV1" >/dev/null
expect "logged-out session before down" 401 "$(within 5 401 hello "$AT1" "$DEV1")"
KEYS=$(curl -s $A/.well-known/jwks.json)

docker compose down
docker compose up --wait
expect "signing keys after down/up" "$KEYS" "$(curl -s $A/.well-known/jwks.json)"
expect "live session after down/up" 200 "$(hello "$AT2" "$DEV2")"
expect "logged-out session after down/up" 401 "$(hello "$AT1" "$DEV1")"
read -r AT3 DEV3 < <(signin carol@example.com a-long-demo-passphrase-3)
expect "sign-in after down/up" 200 "$(hello "$AT3" "$DEV3")"

docker compose down -v
