#!/usr/bin/env bash
# `make demo`: starts the local stack, walks through the product with curl,
# showing each step and its result, then stops everything.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
start_stack

E=http://127.0.0.1:$ENVOY_PORT
A=http://127.0.0.1:$AUTH_PORT
FAILED=0
field() { python3 -c 'import sys,json; d=json.load(sys.stdin); d=d[-1] if isinstance(d,list) else d; print(d[sys.argv[1]])' "$1"; }
USED="$RUN_DIR/used-mail"; touch "$USED"
mail() { # email, subject word, field: the newest unused value from the development outbox (waits up to 5 s)
  local v
  for _ in $(seq 1 50); do
    v=$(curl -s "$A/v1/dev/outbox?to=$1" | python3 -c '
import sys, json
used = set(open(sys.argv[3]).read().split())
for m in reversed(json.load(sys.stdin)):
    v = m.get(sys.argv[2])
    if v and sys.argv[1] in m.get("subject", "") and v not in used:
        print(v); break' "$2" "$3" "$USED")
    if [ -n "$v" ]; then echo "$v" >>"$USED"; echo "$v"; return; fi
    sleep 0.1
  done
  say "no '$2' mail for $1 in the outbox" >&2; return 1
}
post() { curl -s "$E$1" -H 'content-type: application/json' "${@:3}" -d "$2"; }
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
challenge() { # every WWW-Authenticate the answer carries, on one line (as one header would join them)
  curl -s -D - -o /dev/null "$@" | tr -d '\r' | grep -i '^www-authenticate:' | cut -d' ' -f2- | paste -sd '\t' - | sed 's/\t/, /g' || true
}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
expect() { # what, expected, got
  if [ "$2" = "$3" ]; then printf '   ✔ %s: %s\n' "$1" "$3"; else printf '   ✘ %s: expected %s, got %s\n' "$1" "$2" "$3"; FAILED=1; fi
}

sign_in() { # email password → prints "access device refresh"
  local ch code s
  ch=$(post /v1/auth/signin "{\"email\":\"$1\",\"password\":\"$2\"}" | field challenge_id)
  code=$(mail "$1" "sign-in code" code)
  s=$(post /v1/auth/signin/verify "{\"challenge_id\":\"$ch\",\"code\":\"$code\"}")
  echo "$(field access_token <<<"$s") $(field device_secret <<<"$s") $(field refresh_token <<<"$s")"
}

step "1. A request without a token is refused by the filter inside Envoy"
expect "GET /api/hello" 401 "$(status $E/api/hello)"
echo "   WWW-Authenticate: $(challenge $E/api/hello)"

step "2. Sign up through Envoy, verify the e-mail from the development outbox"
post /v1/auth/signup '{"email":"newcomer@authflow.local","password":"a-long-demo-passphrase-1"}' >/dev/null
TOKEN=$(mail newcomer@authflow.local Verify token)
expect "verify-email" 200 "$(status $E/v1/auth/verify-email -H 'content-type: application/json' -d "{\"token\":\"$TOKEN\"}")"

step "3. Sign in: password → challenge → 6-digit code from the outbox → tokens + device secret"
read -r AT DEV RT < <(sign_in demo@authflow.local "$DEMO_PASSWORD")
echo "   access token: ${AT:0:24}… (EdDSA, typ at+jwt)   device secret: ${DEV:0:8}…"

step "4. Call the backend through Envoy: the filter verified the token and added identity headers"
BODY=$(curl -s $E/api/hello -H "authorization: Bearer $AT" -H "x-authflow-device: $DEV")
python3 -c 'import sys,json; h=json.loads(sys.argv[1])["headers"]; [print("   %s: %s" % (k, h[k])) for k in sorted(h) if k.startswith("x-auth-")]' "$BODY"
expect "GET /api/hello" 200 "$(status $E/api/hello -H "authorization: Bearer $AT" -H "x-authflow-device: $DEV")"

step "5. A forged identity header is stripped before the backend sees it"
FORGED=$(curl -s $E/api/hello -H "authorization: Bearer $AT" -H "x-authflow-device: $DEV" -H 'x-auth-roles: admin' | python3 -c 'import sys,json; print(json.load(sys.stdin)["headers"].get("x-auth-roles"))')
expect "x-auth-roles seen by the backend" user "$FORGED"

step "6. The same token replayed from another device is refused"
expect "stolen token" 401 "$(status $E/api/hello -H "authorization: Bearer $AT" -H 'x-authflow-device: stolen-elsewhere')"
echo "   WWW-Authenticate: $(challenge $E/api/hello -H "authorization: Bearer $AT" -H 'x-authflow-device: stolen-elsewhere')"

step "7. Refresh (rotating refresh token, same device)"
NEW=$(post /v1/auth/refresh "{\"refresh_token\":\"$RT\"}" -H "x-authflow-device: $DEV")
AT2=$(field access_token <<<"$NEW")
expect "new token works" 200 "$(status $E/api/hello -H "authorization: Bearer $AT2" -H "x-authflow-device: $DEV")"
reuse() { curl -s $E/v1/auth/refresh -H 'content-type: application/json' -H "x-authflow-device: $DEV" -d "{\"refresh_token\":\"$RT\"}" | field error_description; }
# Within 10 s of its rotation the old token is a racing retry of the client's own: refused, nothing revoked.
expect "old refresh token again at once" "refresh token was just rotated" "$(reuse)"
expect "new token still works" 200 "$(status $E/api/hello -H "authorization: Bearer $AT2" -H "x-authflow-device: $DEV")"
echo "   (waiting out the 10 s grace for racing refreshes)"; sleep 10.5
# Past the grace it is reuse (a copy of the token was used): the whole session is revoked.
reuse >/dev/null
sleep 1.5
expect "old refresh token reused later → session revoked, its new token refused" 401 "$(status $E/api/hello -H "authorization: Bearer $AT2" -H "x-authflow-device: $DEV")"

step "8. Log out: the filter learns it from the revocation feed"
read -r AT DEV RT < <(sign_in demo@authflow.local "$DEMO_PASSWORD")
expect "before logout" 200 "$(status $E/api/hello -H "authorization: Bearer $AT" -H "x-authflow-device: $DEV")"
post /v1/auth/logout '{}' -H "authorization: Bearer $AT" -H "x-authflow-device: $DEV" >/dev/null
sleep 1.5
expect "after logout" 401 "$(status $E/api/hello -H "authorization: Bearer $AT" -H "x-authflow-device: $DEV")"

step "9. An admin bans the user: their live token dies within seconds, with no call on the hot path"
read -r AT DEV RT < <(sign_in demo@authflow.local "$DEMO_PASSWORD")
read -r ADM ADEV _ < <(sign_in admin@authflow.local "$ADMIN_PASSWORD")
USER_ID=$(curl -s "$E/v1/admin/users?email=demo@authflow.local" -H "authorization: Bearer $ADM" -H "x-authflow-device: $ADEV" | python3 -c 'import sys,json; print(json.load(sys.stdin)[0]["user_id"])')
expect "user's token before the ban" 200 "$(status $E/api/hello -H "authorization: Bearer $AT" -H "x-authflow-device: $DEV")"
START=$(date +%s%N)
curl -s -o /dev/null -X POST "$E/v1/admin/users/$USER_ID/ban" -H "authorization: Bearer $ADM" -H "x-authflow-device: $ADEV"
for _ in $(seq 1 100); do
  [ "$(status $E/api/hello -H "authorization: Bearer $AT" -H "x-authflow-device: $DEV")" = 401 ] && break
  sleep 0.05
done
echo "   ban took effect in $(( ($(date +%s%N) - START) / 1000000 )) ms"
sleep 0.3 # every worker adopts the list within one 100 ms tick of the first
expect "user's token after the ban" 401 "$(status $E/api/hello -H "authorization: Bearer $AT" -H "x-authflow-device: $DEV")"

step "10. The filter's counters (Envoy admin /stats)"
curl -s "http://127.0.0.1:$ADMIN_PORT/stats?filter=^wasmcustom" | grep -v ': 0$' | sed 's/^/   /'

echo
if [ "$FAILED" = 0 ]; then say "demo finished: every step behaved as shown"; else say "demo finished with unexpected results (see ✘ above; logs in .run/)"; fi
exit "$FAILED"
