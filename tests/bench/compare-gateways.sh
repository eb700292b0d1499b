#!/usr/bin/env bash
# Compares tollgate with LiteLLM's proxy and Portkey's gateway in one run, in front of the same
# upstreams: nginx serving a fixed OpenAI answer (the floor: "direct"), an upstream answering in
# 20 ms, and one streaming chunk by chunk (time to the first byte). oha drives each at fixed rates
# and the script prints one table: p50, p99, p99.9, success rate, memory after the load, and what
# tollgate adds over direct. A benchmark, not a test: run it by hand (about 15 minutes).
#   tests/bench/compare-gateways.sh [--runs 3] [--seconds 5] [--rates 50,500,1000,2000,5000]
#                                    [--only direct,tollgate,litellm,portkey] [--json FILE]
# Installs what it needs on first use (nginx from Debian, oha from crates.io, litellm[proxy] from
# PyPI, @portkey-ai/gateway from npm) under ~/.cache/tollgate-tests/bench, pinned.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${TOLLGATE_TEST_CACHE:-$HOME/.cache/tollgate-tests}/bench"
mkdir -p "$CACHE"
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -q nginx-light >/dev/null
fi
export PATH="$PATH:/usr/sbin"
if [ ! -x "$CACHE/oha/bin/oha" ]; then
  cargo install -q --locked oha@1.16.0 --root "$CACHE/oha"
fi
if [ ! -x "$CACHE/litellm-venv/bin/litellm" ]; then
  python3 -m venv "$CACHE/litellm-venv"
  "$CACHE/litellm-venv/bin/pip" install -q "litellm[proxy]==1.108.7"
fi
if [ ! -f "$CACHE/portkey/node_modules/@portkey-ai/gateway/build/start-server.js" ]; then
  mkdir -p "$CACHE/portkey"
  (cd "$CACHE/portkey" && npm install --silent --no-audit --no-fund "@portkey-ai/gateway@1.15.2")
fi
cargo build --release -q -p tollgate -p tollgate-tests
python3 tests/bench/compare_gateways.py --tollgate target/release/tollgate --bench target/release/tollgate-bench \
  --oha "$CACHE/oha/bin/oha" --litellm-venv "$CACHE/litellm-venv" --portkey "$CACHE/portkey" "$@"
