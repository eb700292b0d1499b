#!/bin/sh
# Installs tollgate from a release: downloads this platform's archive and the release's SHA256SUMS,
# refuses to install unless the archive's checksum matches, and puts the binary in ~/.local/bin
# (or $TOLLGATE_INSTALL_DIR).
#
#   curl -fsSL https://gitlab.com/tollgate/tollgate/-/raw/main/packaging/install.sh | sh
#
# TOLLGATE_RELEASE_URL points at another release's downloads (a mirror, or a file:// directory).
set -eu

BASE="${TOLLGATE_RELEASE_URL:-https://gitlab.com/tollgate/tollgate/-/releases/permalink/latest/downloads}"
DEST="${TOLLGATE_INSTALL_DIR:-$HOME/.local/bin}"

die() { echo "tollgate install: $*" >&2; exit 1; }

case "$(uname -s)" in
  Linux) os=linux ;;
  Darwin) os=macos ;;
  *) die "unsupported system $(uname -s); build from source: cargo install --git https://gitlab.com/tollgate/tollgate tollgate" ;;
esac
case "$(uname -m)" in
  x86_64 | amd64) arch=x86_64 ;;
  aarch64 | arm64) arch=aarch64 ;;
  *) die "unsupported machine $(uname -m)" ;;
esac
archive="tollgate-$arch-$os.tar.gz"

fetch() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL --proto '=https,file' "$1" -o "$2"
  elif command -v wget >/dev/null 2>&1; then
    wget -q "$1" -O "$2"
  else
    die "needs curl or wget"
  fi
}

sha256() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d' ' -f1
  else
    shasum -a 256 "$1" | cut -d' ' -f1
  fi
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT INT TERM

fetch "$BASE/$archive" "$tmp/$archive" || die "cannot download $BASE/$archive"
fetch "$BASE/SHA256SUMS" "$tmp/SHA256SUMS" || die "cannot download $BASE/SHA256SUMS"
expected="$(awk -v f="$archive" '$2 == f || $2 == "*" f { print $1 }' "$tmp/SHA256SUMS")"
[ -n "$expected" ] || die "SHA256SUMS has no line for $archive"
actual="$(sha256 "$tmp/$archive")"
[ "$expected" = "$actual" ] || die "checksum mismatch for $archive (expected $expected, got $actual); nothing was installed"

tar -xzf "$tmp/$archive" -C "$tmp"
[ -f "$tmp/tollgate" ] || die "the archive holds no tollgate binary"
mkdir -p "$DEST"
install -m 755 "$tmp/tollgate" "$DEST/tollgate"
echo "installed $("$DEST/tollgate" --version) to $DEST/tollgate"
case ":$PATH:" in
  *":$DEST:"*) ;;
  *) echo "add $DEST to your PATH" ;;
esac
echo "next: tollgate service install   (start the daemon at login)"
echo "      tollgate doctor            (check keys, policy, editors)"
