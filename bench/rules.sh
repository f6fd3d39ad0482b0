#!/usr/bin/env bash
# What the traffic rules cost: one gateway serving two keyless APIs on the same upstream,
#   /plain/  no rules
#   /rules/  a 10-entry white-list, 3 request header transforms (two global, one endpoint)
#            and CORS on (every request carries an allowed Origin)
# driven by the same wrk client in interleaved rounds. Prints the median over rounds of the
# same-round throughput ratio rules/plain (target >= 0.90) and the p99 ratio.
#
# Usage: bench/rules.sh [path/to/tollgate]   (default target/release/tollgate)
# Needs nginx (upstream), wrk and curl, as ../shared/bench/setup.sh installs them.
# Knobs: BENCH_ROUNDS (9), BENCH_SEGMENT (s per case per round, 3), BENCH_THREADS (2),
#        BENCH_CONNS (50), BENCH_PORT_BASE (18180), BENCH_PERF (a perf.data path: profile the
#        rules case with `perf record -g` instead of measuring).
set -euo pipefail

# shellcheck source=bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_init rules.sh 9 18180 "${1:-}" nginx wrk curl
UP_PORT=$((BASE + 1))
GW_PORT=$((BASE + 2))
ORIGIN="https://app.example.com"

[ -n "${BENCH_PERF:-}" ] && echo "gateway pid file: $TMP/gw.pid"

mkdir -p "$TMP/apps" "$TMP/nginx-tmp"
bench_upstream "$UP_PORT"

cat > "$TMP/tyk.conf" <<EOF
{"listen_port": $GW_PORT, "secret": "bench-secret", "app_path": "$TMP/apps",
 "enable_analytics": false}
EOF
api() { # id listen_path version-json cors-json
  cat <<EOF
{"api_id": "$1", "name": "$1", "org_id": "bench", "use_keyless": true, "active": true,
 "proxy": {"listen_path": "$2", "target_url": "http://127.0.0.1:$UP_PORT", "strip_listen_path": true},
 "version_data": {"not_versioned": true, "versions": {"Default": $3}},
 "CORS": $4}
EOF
}
white=""
for i in 0 1 2 3 4 5 6 7 8; do
  white+="{\"path\": \"/resource-$i/{id}\", \"method\": \"GET\"},"
done
white+='{"path": "/items/{id}", "method": "GET"}'
api plain /plain/ '{"name": "Default"}' '{"enable": false}' > "$TMP/apps/plain.json"
api rules /rules/ "{\"name\": \"Default\", \"use_extended_paths\": true,
  \"global_headers\": {\"X-Gateway\": \"tollgate\", \"X-Client\": \"\$tyk_context.remote_addr\"},
  \"extended_paths\": {\"white_list\": [$white],
    \"transform_headers\": [{\"path\": \"/items/{id}\", \"method\": \"GET\",
      \"delete_headers\": [\"X-Debug\"], \"add_headers\": {\"X-Route\": \"items\"}}]}}" \
  "{\"enable\": true, \"allowed_origins\": [\"$ORIGIN\"], \"allowed_methods\": [\"GET\"]}" \
  > "$TMP/apps/rules.json"
# `remote_addr` needs context variables on.
sed -i 's/"use_keyless": true,/"use_keyless": true, "enable_context_vars": true,/' "$TMP/apps/rules.json"

"$BIN" --conf "$TMP/tyk.conf" >"$TMP/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
for _ in $(seq 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$GW_PORT/plain/items/1" && break
  sleep 0.1
done
check() { # path: must reach the upstream body, with CORS on the rules API
  local out
  out=$(curl -s -D - -H "Origin: $ORIGIN" "http://127.0.0.1:$GW_PORT$1")
  grep -q '{"ok":true}' <<<"$out" || { echo "rules.sh: $1 did not reach the upstream:" >&2; echo "$out" >&2; cat "$TMP/gateway.log" >&2; exit 1; }
  echo "$out"
}
check /plain/items/1 >/dev/null
rules_head=$(check /rules/items/1)
grep -qi '^access-control-allow-origin:' <<<"$rules_head" \
  || { echo "rules.sh: no CORS header on /rules/" >&2; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GW_PORT/rules/other/1")
[ "$code" = 403 ] || { echo "rules.sh: the white-list did not refuse /rules/other/1 ($code)" >&2; exit 1; }

run() { # path -> "rps p99_ms errors"
  bench_wrk "http://127.0.0.1:$GW_PORT$1" -H "Origin: $ORIGIN"
}
run /plain/items/1 >/dev/null   # warm-up
run /rules/items/1 >/dev/null
# BENCH_PERF=FILE: profile the gateway under the rules case instead of measuring.
if [ -n "${BENCH_PERF:-}" ]; then
  perf record -g -o "$BENCH_PERF" -p "$GW_PID" -- sleep "$SEGMENT" >/dev/null 2>&1 &
  PERF_PID=$!
  run /rules/items/1
  wait "$PERF_PID" || true
  exit 0
fi
ratios=()
p99s=()
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then
    read -r prps pp99 perr <<<"$(run /plain/items/1)"
    read -r rrps rp99 rerr <<<"$(run /rules/items/1)"
  else
    read -r rrps rp99 rerr <<<"$(run /rules/items/1)"
    read -r prps pp99 perr <<<"$(run /plain/items/1)"
  fi
  [ "$perr" = 0 ] && [ "$rerr" = 0 ] || { echo "rules.sh: errors in round $r ($perr, $rerr)" >&2; exit 1; }
  printf 'round %d: plain %9.0f req/s p99 %6.2f ms | rules %9.0f req/s p99 %6.2f ms\n' \
    "$r" "$prps" "$pp99" "$rrps" "$rp99"
  ratios+=("$(awk -v a="$rrps" -v b="$prps" 'BEGIN{printf "%.3f", a/b}')")
  p99s+=("$(awk -v a="$rp99" -v b="$pp99" 'BEGIN{printf "%.3f", a/b}')")
done
echo "rules_vs_plain=$(bench_median "${ratios[@]}") rules_p99_vs_plain=$(bench_median "${p99s[@]}") (rounds: ${ratios[*]})"
