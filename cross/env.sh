# Sourced by the cross/ scripts: pinned tool versions and where the tools live.
# shellcheck shell=bash

# Pinned: a new zig or cargo-zigbuild is a deliberate change, measured again (glibc floor, sizes).
ZIGLANG_VERSION=0.14.1
CARGO_ZIGBUILD_VERSION=0.20.1
CARGO_DEB_VERSION=2.12.1

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Tools are installed under target/ (a Python venv and a cargo root): nothing system-wide but
# the apt packages.
TOOLS="${CROSS_TOOLS:-$REPO/target/cross-tools}"
export PATH="$TOOLS/venv/bin:$TOOLS/bin:$PATH"

# Pi targets, with the glibc they link against: 2.31 runs on Pi OS bullseye (2.31), bookworm
# (2.36) and trixie (2.41).
GLIBC=2.31
# name  rust-target                   dpkg-arch  qemu
TARGETS=(
  "arm64 aarch64-unknown-linux-gnu      arm64      qemu-aarch64-static"
  "armv6 arm-unknown-linux-gnueabihf    armhf      qemu-arm-static"
)

# The armv6 target's std is not served by rustup everywhere: then it is built from source
# (rust-src + -Zbuild-std, allowed on stable by RUSTC_BOOTSTRAP). `auto` decides by whether
# rustup has it; set BUILD_STD=0 to require the prebuilt std, 1 to always build it.
BUILD_STD="${BUILD_STD:-auto}"

log() { printf '== %s\n' "$*" >&2; }

# The TARGETS entries named in the arguments (all of them when none), one per line.
selected_targets() {
  local entry name
  for entry in "${TARGETS[@]}"; do
    read -r name _ <<<"$entry"
    if [ $# -eq 0 ] || [[ " $* " == *" $name "* ]]; then echo "$entry"; fi
  done
}
