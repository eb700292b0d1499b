#!/usr/bin/env bash
# Flame graphs of the daemon's request path under load: tollgate (release build, redaction,
# budgets, cache and ledger on) in front of an instant upstream (`tollgate-bench --scenario
# upstream`), driven by oha at fixed rates while perf samples the daemon (DWARF call graphs, 499 Hz,
# 8 s). Writes tests/bench/flamegraphs/tollgate-<rate>rps.svg (and the folded stacks beside it).
#   tests/bench/flamegraph.sh [RATE...]      (default: 1000 2000)
# Needs perf (Debian's linux-perf; perf_event_paranoid <= 2 for a process of one's own) and installs
# inferno (crates.io) and oha under ~/.cache/tollgate-tests/bench on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${TOLLGATE_TEST_CACHE:-$HOME/.cache/tollgate-tests}/bench"
command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 1; }
[ -x "$CACHE/oha/bin/oha" ] || cargo install -q --locked oha@1.16.0 --root "$CACHE/oha"
[ -x "$CACHE/inferno/bin/inferno-flamegraph" ] || cargo install -q --locked inferno@0.12.3 --root "$CACHE/inferno"
cargo build --release -q -p tollgate -p tollgate-tests
OUT=tests/bench/flamegraphs
mkdir -p "$OUT"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port)
target/release/tollgate-bench --scenario upstream --port "$UP" >/dev/null &
PIDS+=($!)
mkdir -p "$WORK/home"
cat > "$WORK/home/config.toml" <<TOML
[keychain]
backend = "env"
[providers.up]
kind = "openai"
base_url = "http://127.0.0.1:$UP/v1"
local = false
[prices."up/bench"]
input = "1.00"
output = "4.00"
[[budgets]]
name = "bench"
scope = "user"
period = "day"
limit_usd = "100000"
action = "block"
TOML
TOLLGATE_HOME="$WORK/home" TOLLGATE_UP_API_KEY=sk-bench-0000000000000000000000000000 TOLLGATE_LOG=warn \
  target/release/tollgate daemon --port 0 >/dev/null 2>"$WORK/daemon.log" &
DAEMON=$!
PIDS+=($DAEMON)
for _ in $(seq 200); do [ -s "$WORK/home/daemon.port" ] && break; sleep 0.05; done
PORT=$(cat "$WORK/home/daemon.port"); TOKEN=$(cat "$WORK/home/token")
BODY=$(python3 -c 'import json; print(json.dumps({"model": "up/bench", "temperature": 0.7, "max_tokens": 64,
  "messages": [{"role": "user", "content": "Explain what this function does:\n\ndef total(v):\n    return sum(v)\n" +
  "The service reads orders from the queue, totals them per customer and writes a report. " * 12}]}))')
load() { "$CACHE/oha/bin/oha" --no-tui -z "$2" -q "$1" -c 32 --latency-correction -m POST -T application/json \
  -H "Authorization: Bearer $TOKEN" -d "$BODY" "http://127.0.0.1:$PORT/v1/chat/completions" >/dev/null; }
load 200 2s
for RATE in "${@:-1000 2000}"; do
  for R in $RATE; do
    load "$R" 12s &
    LOAD=$!
    sleep 2
    perf record -q -F 499 --call-graph dwarf,32768 -p "$DAEMON" -o "$WORK/perf.data" -- sleep 8 2>/dev/null
    wait "$LOAD"
    perf script -i "$WORK/perf.data" 2>/dev/null | "$CACHE/inferno/bin/inferno-collapse-perf" > "$OUT/tollgate-${R}rps.folded"
    "$CACHE/inferno/bin/inferno-flamegraph" --title "tollgate daemon at $R requests/s (instant upstream)" \
      < "$OUT/tollgate-${R}rps.folded" > "$OUT/tollgate-${R}rps.svg"
    echo "$OUT/tollgate-${R}rps.svg: $(wc -l < "$OUT/tollgate-${R}rps.folded") stacks"
  done
done
