#!/usr/bin/env bash
# What TLS costs, in interleaved rounds with the same wrk client (keep-alive):
#   (n) wrk https -> nginx terminating TLS (2 workers, upstream keepalive) -> plain upstream
#   (t) wrk https -> tollgate with use_ssl (same certificate and key)      -> plain upstream
#   (p) wrk http  -> tollgate                                              -> plain upstream
#   (u) wrk http  -> tollgate                                              -> HTTPS upstream
#   (v) wrk http  -> tollgate with proxy_enable_http2                      -> HTTPS upstream, h2
# The upstream is one nginx worker answering 200 with a small JSON body, on a plain and a TLS
# port (offering h2 by ALPN). Prints the medians over rounds of the same-round ratios
# tls_listener_vs_nginx = t/n (target >= 1.0), https_upstream_vs_plain = u/p and
# h2_upstream_vs_h1 = v/u, with their p99 ratios.
#
# Usage: bench/tls.sh [path/to/tollgate]   (default target/release/tollgate)
# Needs nginx (with the ssl module), wrk, curl and openssl, as ../shared/bench/setup.sh
# installs them. Knobs: BENCH_ROUNDS (7), BENCH_SEGMENT (s per case per round, 3),
# BENCH_THREADS (2), BENCH_CONNS (50), BENCH_PORT_BASE (18280).
set -euo pipefail

# shellcheck source=bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_init tls.sh 7 18280 "${1:-}" nginx wrk curl openssl
UP_PORT=$((BASE + 1))      # upstream, plain
UPS_PORT=$((BASE + 2))     # upstream, TLS
NG_PORT=$((BASE + 3))      # nginx terminating TLS
GWS_PORT=$((BASE + 4))     # tollgate with use_ssl
GWP_PORT=$((BASE + 5))     # tollgate, plain listener
GWH_PORT=$((BASE + 6))     # tollgate, plain listener, HTTP/2 to upstreams

mkdir -p "$TMP/apps" "$TMP/nginx-tmp"

# A CA and one certificate for localhost / 127.0.0.1, used by every TLS server here.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=bench CA" -keyout "$TMP/ca.key" -out "$TMP/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout "$TMP/server.key" -out "$TMP/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$TMP/san.ext"
openssl x509 -req -in "$TMP/server.csr" -CA "$TMP/ca.pem" -CAkey "$TMP/ca.key" \
  -CAcreateserial -days 2 -extfile "$TMP/san.ext" -out "$TMP/server.crt" 2>/dev/null

nginx_common="$NGINX_HTTP_COMMON
    ssl_protocols TLSv1.2 TLSv1.3;"
bench_upstream "$UP_PORT" "
    server {
        listen 127.0.0.1:$UPS_PORT ssl http2;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate $TMP/server.crt;
        ssl_certificate_key $TMP/server.key;
        http2_max_requests 1000000000;
        location / { default_type application/json; return 200 '{\"ok\":true}'; }
    }"
cat > "$TMP/nginx-tls.conf" <<EOF
daemon off;
worker_processes 2;
pid $TMP/nginx-tls.pid;
error_log $TMP/nginx-tls-error.log warn;
events { worker_connections 4096; }
http {
    $nginx_common
    upstream up { server 127.0.0.1:$UP_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NG_PORT ssl;
        ssl_certificate $TMP/server.crt;
        ssl_certificate_key $TMP/server.key;
        ssl_session_cache shared:SSL:10m;
        location /plain/ {
            proxy_pass http://up/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
nginx -e "$TMP/nginx-tls-error.log" -p "$TMP" -c "$TMP/nginx-tls.conf" >/dev/null 2>&1 &
PIDS+=($!)

api() { # id listen_path target
  cat <<EOF
{"api_id": "$1", "name": "$1", "org_id": "bench", "use_keyless": true, "active": true,
 "proxy": {"listen_path": "$2", "target_url": "$3", "strip_listen_path": true},
 "version_data": {"not_versioned": true, "versions": {"Default": {"name": "Default"}}}}
EOF
}
api plain /plain/ "http://127.0.0.1:$UP_PORT" > "$TMP/apps/plain.json"
api tlsup /tlsup/ "https://localhost:$UPS_PORT" > "$TMP/apps/tlsup.json"
cat > "$TMP/tyk-plain.conf" <<EOF
{"listen_port": $GWP_PORT, "secret": "bench-secret", "app_path": "$TMP/apps",
 "storage": {"path": "$TMP/data-plain"}, "proxy_ssl_ca_cert": "$TMP/ca.pem"}
EOF
cat > "$TMP/tyk-h2.conf" <<EOF
{"listen_port": $GWH_PORT, "secret": "bench-secret", "app_path": "$TMP/apps",
 "storage": {"path": "$TMP/data-h2"}, "proxy_ssl_ca_cert": "$TMP/ca.pem", "proxy_enable_http2": true}
EOF
cat > "$TMP/tyk-tls.conf" <<EOF
{"listen_port": $GWS_PORT, "secret": "bench-secret", "app_path": "$TMP/apps",
 "storage": {"path": "$TMP/data-tls"}, "proxy_ssl_ca_cert": "$TMP/ca.pem",
 "http_server_options": {"use_ssl": true, "certificates": [
   {"domain_name": "localhost", "cert_file": "$TMP/server.crt", "key_file": "$TMP/server.key"}]}}
EOF
"$BIN" --conf "$TMP/tyk-plain.conf" >"$TMP/gateway-plain.log" 2>&1 &
PIDS+=($!)
"$BIN" --conf "$TMP/tyk-tls.conf" >"$TMP/gateway-tls.log" 2>&1 &
PIDS+=($!)
"$BIN" --conf "$TMP/tyk-h2.conf" >"$TMP/gateway-h2.log" 2>&1 &
PIDS+=($!)

N_URL="https://localhost:$NG_PORT/plain/x"
T_URL="https://localhost:$GWS_PORT/plain/x"
P_URL="http://127.0.0.1:$GWP_PORT/plain/x"
U_URL="http://127.0.0.1:$GWP_PORT/tlsup/x"
V_URL="http://127.0.0.1:$GWH_PORT/tlsup/x"
check() { # url: must reach the upstream body, over a verified TLS connection where https
  local out=""
  for _ in $(seq 100); do
    out=$(curl -s --cacert "$TMP/ca.pem" "$1" || true)
    [ "$out" = '{"ok":true}' ] && return 0
    sleep 0.1
  done
  echo "tls.sh: $1 did not reach the upstream: $out" >&2
  cat "$TMP"/*.log >&2
  exit 1
}
for u in "$N_URL" "$T_URL" "$P_URL" "$U_URL" "$V_URL"; do check "$u"; done

run() { # url -> "rps p99_ms errors"
  bench_wrk "$1"
}
for u in "$N_URL" "$T_URL" "$P_URL" "$U_URL" "$V_URL"; do run "$u" >/dev/null; done   # warm-up

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a/b}'; }
t_n=(); t_n99=(); u_p=(); u_p99=(); v_u=(); v_u99=()
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="n t p u v"; else order="v t n u p"; fi
  declare -A rps p99
  for c in $order; do
    case $c in n) url=$N_URL ;; t) url=$T_URL ;; p) url=$P_URL ;; u) url=$U_URL ;; v) url=$V_URL ;; esac
    read -r x y e <<<"$(run "$url")"
    [ "$e" = 0 ] || { echo "tls.sh: errors in round $r case $c ($e)" >&2; exit 1; }
    rps[$c]=$x; p99[$c]=$y
  done
  printf 'round %d: nginx-tls %8.0f (p99 %5.2f ms) | tollgate-tls %8.0f (%5.2f) | plain %8.0f (%5.2f) | https-upstream %8.0f (%5.2f) | h2-upstream %8.0f (%5.2f)\n' \
    "$r" "${rps[n]}" "${p99[n]}" "${rps[t]}" "${p99[t]}" "${rps[p]}" "${p99[p]}" "${rps[u]}" "${p99[u]}" "${rps[v]}" "${p99[v]}"
  t_n+=("$(ratio "${rps[t]}" "${rps[n]}")"); t_n99+=("$(ratio "${p99[t]}" "${p99[n]}")")
  u_p+=("$(ratio "${rps[u]}" "${rps[p]}")"); u_p99+=("$(ratio "${p99[u]}" "${p99[p]}")")
  v_u+=("$(ratio "${rps[v]}" "${rps[u]}")"); v_u99+=("$(ratio "${p99[v]}" "${p99[u]}")")
done
echo "tls_listener_vs_nginx=$(bench_median "${t_n[@]}") tls_listener_p99_vs_nginx=$(bench_median "${t_n99[@]}") https_upstream_vs_plain=$(bench_median "${u_p[@]}") https_upstream_p99_vs_plain=$(bench_median "${u_p99[@]}") h2_upstream_vs_h1=$(bench_median "${v_u[@]}") h2_upstream_p99_vs_h1=$(bench_median "${v_u99[@]}") (rounds: ${t_n[*]} | ${u_p[*]} | ${v_u[*]})"
