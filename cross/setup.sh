#!/usr/bin/env bash
# Installs what cross builds, checks and packages need. Idempotent: run it again at will.
#   apt:    qemu-user-static, the arm64/armhf C libraries (sysroots for qemu), binutils, dpkg-dev
#   PyPI:   ziglang + cargo-zigbuild, in a venv under target/cross-tools
#   rustup: the aarch64 std, rust-src (for the armv6 std built from source)
#   cargo:  cargo-deb, under target/cross-tools
set -euo pipefail
source "$(dirname "$0")/env.sh"

need=()
for pkg in qemu-user-static libc6-arm64-cross libc6-armhf-cross binutils dpkg-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  log "apt: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

if [ ! -x "$TOOLS/venv/bin/cargo-zigbuild" ] \
  || ! "$TOOLS/venv/bin/python" -m pip show ziglang 2>/dev/null | grep -q "^Version: $ZIGLANG_VERSION$" \
  || ! "$TOOLS/venv/bin/cargo-zigbuild" --version | grep -q "$CARGO_ZIGBUILD_VERSION"; then
  log "PyPI: ziglang $ZIGLANG_VERSION, cargo-zigbuild $CARGO_ZIGBUILD_VERSION"
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/python" -m pip install -q --disable-pip-version-check \
    "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
fi

installed_targets="$(rustup target list --installed)"
grep -qx aarch64-unknown-linux-gnu <<<"$installed_targets" || rustup target add aarch64-unknown-linux-gnu
if ! grep -qx arm-unknown-linux-gnueabihf <<<"$installed_targets" && [ "$BUILD_STD" != 1 ]; then
  # Not always served: the build then makes std from source.
  rustup target add arm-unknown-linux-gnueabihf 2>/dev/null || log "no prebuilt armv6 std: it will be built from source"
fi
rustup component list --installed | grep -q '^rust-src' || rustup component add rust-src

if ! "$TOOLS/bin/cargo-deb" --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  log "cargo: cargo-deb $CARGO_DEB_VERSION"
  cargo install --locked --quiet --root "$TOOLS" cargo-deb --version "$CARGO_DEB_VERSION"
fi
log "cross tools ready in $TOOLS"
