# Shared by the project's bench scripts (sourced, not run): a temp dir whose servers are stopped
# on exit, the wrk runner and the median of a list.
#   TMP    the temp dir (removed on exit)
#   PIDS   add every started server's pid; each is killed on exit

TMP="$(mktemp -d)"
PIDS=()
bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap bench_cleanup EXIT

# The http-block lines every nginx here shares: no access log, temp files under $TMP, no
# keep-alive request limit.
mkdir -p "$TMP/nginx-tmp"
NGINX_HTTP_COMMON="
    access_log off;
    client_body_temp_path $TMP/nginx-tmp/body;
    proxy_temp_path       $TMP/nginx-tmp/proxy;
    fastcgi_temp_path     $TMP/nginx-tmp/fastcgi;
    uwsgi_temp_path       $TMP/nginx-tmp/uwsgi;
    scgi_temp_path        $TMP/nginx-tmp/scgi;
    keepalive_requests 100000000;"

# bench_wrk URL [wrk options...] -> "rps p99_ms errors" (THREADS, CONNS, SEGMENT from the caller)
bench_wrk() {
  local url="$1"
  shift
  wrk -t"$THREADS" -c"$CONNS" -d"${SEGMENT}s" --latency "$@" "$url" | awk '
    /Requests\/sec/ {rps=$2}
    /^ +99%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; p99=v}
    /Non-2xx/ {err+=$4}
    /Socket errors/ {err+=1}
    END {printf "%s %s %d\n", rps, p99, err}'
}

# bench_median V... -> the median
bench_median() {
  printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END{if (NR%2) print v[(NR+1)/2]; else printf "%.3f\n", (v[NR/2]+v[NR/2+1])/2}'
}

# bench_init NAME ROUNDS PORT_BASE [BIN] TOOL... : checks the gateway binary (default
# target/release/tollgate) and the tools, and sets BIN, ROUNDS, SEGMENT, THREADS, CONNS and BASE
# from the BENCH_* knobs (ROUNDS and PORT_BASE are this script's defaults).
bench_init() {
  local name="$1" rounds="$2" base="$3" bin="${4:-target/release/tollgate}"
  shift 4
  [ -x "$bin" ] || { echo "$name: not executable: $bin (cargo build --release)" >&2; exit 2; }
  BIN="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$name: $tool not found (run ../shared/bench/setup.sh)" >&2; exit 2; }
  done
  ROUNDS="${BENCH_ROUNDS:-$rounds}"
  SEGMENT="${BENCH_SEGMENT:-3}"
  THREADS="${BENCH_THREADS:-2}"
  CONNS="${BENCH_CONNS:-50}"
  BASE="${BENCH_PORT_BASE:-$base}"
}

# bench_upstream PORT [SERVER...] : starts the upstream every case shares, one nginx worker
# answering 200 with a small JSON body on PORT; each SERVER is one more server block for it.
bench_upstream() {
  local port="$1" extra=""
  shift
  for block in "$@"; do extra+="$block"; done
  cat > "$TMP/upstream.conf" <<UPSTREAM
daemon off;
worker_processes 1;
pid $TMP/upstream.pid;
error_log $TMP/upstream-error.log warn;
events { worker_connections 4096; }
http {
    $NGINX_HTTP_COMMON
    server {
        listen 127.0.0.1:$port;
        location / { default_type application/json; return 200 '{"ok":true}'; }
    }
    $extra
}
UPSTREAM
  nginx -e "$TMP/upstream-error.log" -p "$TMP" -c "$TMP/upstream.conf" >/dev/null 2>&1 &
  PIDS+=($!)
}
