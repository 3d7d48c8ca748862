#!/usr/bin/env bash
# Cross-builds release binaries for the Pi: cross/build.sh [arm64|armv6 ...] (default: both).
# Output: target/<rust-target>/release/serial2mqtt. Run cross/setup.sh first.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"

while read -r -u 3 name triple _arch _qemu; do
  extra=()
  build_std=$BUILD_STD
  if [ "$build_std" = auto ]; then
    if rustup target list --installed | grep -qx "$triple"; then build_std=0; else build_std=1; fi
  fi
  if [ "$build_std" = 1 ]; then
    extra=(-Zbuild-std=std,panic_abort)
    export RUSTC_BOOTSTRAP=1
  fi
  log "build $name: $triple.$GLIBC ${extra[*]}"
  cargo zigbuild --release --locked --target "$triple.$GLIBC" "${extra[@]}"
  unset RUSTC_BOOTSTRAP
  ls -l "target/$triple/release/serial2mqtt"
done 3< <(selected_targets "$@")
