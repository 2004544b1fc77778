#!/usr/bin/env bash
# `make run`'s real-time part: start the scorer with the default bundle, replay demo traffic
# through it (Score on arrival, Complete on completion), then drain it with SIGTERM.
set -euo pipefail
BIN=${BIN:-.venv/bin}
EVENTS=${1:-data/demo/events.parquet}
LIMIT=${LIMIT:-20000}
LOG=$(dirname "$EVENTS")/serve.log
PORTS=$(dirname "$EVENTS")/serve.ports.json   # written by serve once health says SERVING
rm -f "$PORTS"
# --insecure: plaintext on loopback (127.0.0.1, the default --host) for the demo only.
"$BIN/distillguard" serve --insecure --port 0 --metrics-port 0 --port-file "$PORTS" >"$LOG" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
port=""
for _ in $(seq 1 240); do
  if [ -f "$PORTS" ]; then
    port=$("$BIN/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["port"])' "$PORTS")
    break
  fi
  kill -0 $pid 2>/dev/null || { cat "$LOG"; exit 1; }
  sleep 0.25
done
[ -n "$port" ] || { echo "scorer did not start:"; cat "$LOG"; exit 1; }
grep -o 'metrics on http[^ ]*' "$LOG" || true
"$BIN/distillguard" replay --target "127.0.0.1:$port" --events "$EVENTS" --concurrency 8 --limit "$LIMIT"
