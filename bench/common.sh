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
