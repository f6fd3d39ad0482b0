#!/usr/bin/env bash
# What JWT costs next to auth tokens: one gateway serving two keyed APIs on the same upstream,
#   /token/  an auth token (a key with rate 1e6/s and no quota)
#   /jwt/    RS256 tokens verified with an RSA public key (jwt_source), the session made from a
#            policy with the same limits
# driven by the same wrk client (each request carrying its credential) in interleaved rounds.
# Prints the median over rounds of the same-round throughput ratio jwt/token (target >= 0.90)
# and the p99 ratio.
#
# Usage: bench/jwt.sh [path/to/tollgate]   (default target/release/tollgate)
# Needs nginx (upstream), wrk, curl and openssl, as ../shared/bench/setup.sh installs them.
# Knobs: BENCH_ROUNDS (9), BENCH_SEGMENT (s per case per round, 3), BENCH_THREADS (2),
#        BENCH_CONNS (50), BENCH_PORT_BASE (18380).
set -euo pipefail

# shellcheck source=bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_init jwt.sh 9 18380 "${1:-}" nginx wrk curl openssl
UP_PORT=$((BASE + 1))
GW_PORT=$((BASE + 2))

mkdir -p "$TMP/apps"

bench_upstream "$UP_PORT"

# An RSA key; the API verifies with its public half.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/jwt.key" 2>/dev/null
openssl pkey -in "$TMP/jwt.key" -pubout -out "$TMP/jwt.pub"
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
header=$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)
payload=$(printf '{"sub":"bench-user","exp":%d}' "$(( $(date +%s) + 86400 ))" | b64url)
signature=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign "$TMP/jwt.key" | b64url)
JWT="$header.$payload.$signature"

cat > "$TMP/policies.json" <<EOF
{"bench": {"org_id": "bench", "rate": 1000000, "per": 1, "quota_max": -1,
  "access_rights": {"jwt": {"api_id": "jwt", "api_name": "jwt", "versions": ["Default"]}}}}
EOF
cat > "$TMP/tyk.conf" <<EOF
{"listen_port": $GW_PORT, "secret": "bench-secret", "app_path": "$TMP/apps",
 "storage": {"path": "$TMP/data"}, "enable_analytics": false,
 "policies": {"policy_record_name": "$TMP/policies.json"}}
EOF
api() { # id listen_path extra-json
  cat <<EOF
{"api_id": "$1", "name": "$1", "org_id": "bench", "use_keyless": false, "active": true,
 "proxy": {"listen_path": "$2", "target_url": "http://127.0.0.1:$UP_PORT", "strip_listen_path": true},
 "version_data": {"not_versioned": true, "versions": {"Default": {"name": "Default"}}} $3}
EOF
}
api token /token/ '' > "$TMP/apps/token.json"
api jwt /jwt/ ", \"enable_jwt\": true, \"jwt_signing_method\": \"rsa\",
  \"jwt_source\": \"$(openssl base64 -A < "$TMP/jwt.pub")\", \"jwt_default_policies\": [\"bench\"]" \
  > "$TMP/apps/jwt.json"

"$BIN" --conf "$TMP/tyk.conf" >"$TMP/gateway.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$GW_PORT/hello" && break
  sleep 0.1
done
KEY=$(curl -sf -X POST -H "x-tyk-authorization: bench-secret" "http://127.0.0.1:$GW_PORT/tyk/keys" \
  -d '{"org_id": "bench", "rate": 1000000, "per": 1, "quota_max": -1,
       "access_rights": {"token": {"api_id": "token", "api_name": "token", "versions": ["Default"]}}}' \
  | sed -n 's/.*"key": *"\([^"]*\)".*/\1/p')
[ -n "$KEY" ] || { echo "jwt.sh: no key created" >&2; cat "$TMP/gateway.log" >&2; exit 1; }
check() { # path credential: must reach the upstream body
  local out
  out=$(curl -s -H "Authorization: $2" "http://127.0.0.1:$GW_PORT$1")
  [ "$out" = '{"ok":true}' ] || { echo "jwt.sh: $1 did not reach the upstream: $out" >&2; cat "$TMP/gateway.log" >&2; exit 1; }
}
check /token/x "$KEY"
check /jwt/x "Bearer $JWT"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${JWT%?}" "http://127.0.0.1:$GW_PORT/jwt/x")
[ "$code" = 403 ] || { echo "jwt.sh: a broken signature was not refused ($code)" >&2; exit 1; }

run() { # path credential -> "rps p99_ms errors"
  bench_wrk "http://127.0.0.1:$GW_PORT$1" -H "Authorization: $2"
}
run /token/x "$KEY" >/dev/null   # warm-up
run /jwt/x "Bearer $JWT" >/dev/null
ratios=()
p99s=()
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then
    read -r trps tp99 terr <<<"$(run /token/x "$KEY")"
    read -r jrps jp99 jerr <<<"$(run /jwt/x "Bearer $JWT")"
  else
    read -r jrps jp99 jerr <<<"$(run /jwt/x "Bearer $JWT")"
    read -r trps tp99 terr <<<"$(run /token/x "$KEY")"
  fi
  [ "$terr" = 0 ] && [ "$jerr" = 0 ] || { echo "jwt.sh: errors in round $r ($terr, $jerr)" >&2; exit 1; }
  printf 'round %d: token %9.0f req/s p99 %6.2f ms | jwt %9.0f req/s p99 %6.2f ms\n' \
    "$r" "$trps" "$tp99" "$jrps" "$jp99"
  ratios+=("$(awk -v a="$jrps" -v b="$trps" 'BEGIN{printf "%.3f", a/b}')")
  p99s+=("$(awk -v a="$jp99" -v b="$tp99" 'BEGIN{printf "%.3f", a/b}')")
done
echo "jwt_vs_token=$(bench_median "${ratios[@]}") jwt_p99_vs_token=$(bench_median "${p99s[@]}") (rounds: ${ratios[*]})"
