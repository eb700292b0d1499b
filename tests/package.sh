#!/usr/bin/env bash
# Builds the .deb from the already-built binary (profile dev by default; PROFILE=release for a
# release): man page, shell completions and the systemd user unit are generated from the binary
# into target/assets, then cargo deb packages them. Prints the .deb's path.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${PROFILE:-dev}"
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
DIR=debug
[ "$PROFILE" = release ] && DIR=release
BIN="$TARGET/$DIR/tollgate"
ASSETS="$PWD/target/assets"
mkdir -p "$ASSETS"
"$BIN" man > "$ASSETS/tollgate.1"
"$BIN" completions bash > "$ASSETS/tollgate.bash"
"$BIN" completions zsh > "$ASSETS/_tollgate"
"$BIN" completions fish > "$ASSETS/tollgate.fish"
"$BIN" service show --platform systemd --exec /usr/bin/tollgate > "$ASSETS/tollgate.service"
FAST=--fast
[ "$PROFILE" = release ] && FAST=
cargo deb -p tollgate --no-build --profile "$PROFILE" --no-strip $FAST --output "$TARGET/debian/" -q 2>&1 | tail -1
