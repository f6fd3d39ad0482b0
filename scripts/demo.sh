#!/usr/bin/env bash
# Runs the gateway on the embedded default with the example config, in front of a bundled echo
# upstream on 127.0.0.1:8000. Try: curl -i http://127.0.0.1:8080/echo/hello
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin tollgate --bin tollgate-echo-upstream
./target/release/tollgate-echo-upstream --port 8000 &
UPSTREAM=$!
trap 'kill $UPSTREAM 2>/dev/null || true' EXIT
echo "echo upstream on 127.0.0.1:8000; gateway on 127.0.0.1:8080 (Ctrl-C to stop)"
./target/release/tollgate --conf examples/tyk.conf
