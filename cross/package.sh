#!/usr/bin/env bash
# Builds the .debs: cross/package.sh [arm64|armv6|amd64 ...] (default: arm64 armv6).
# arm64/armv6 package the binaries of cross/build.sh; amd64 builds this machine's release
# binary (CI installs that one). Output: target/debian/serial2mqtt_<version>-1_<arch>.deb
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(arm64 armv6)
for name in "${wanted[@]}"; do
  if [ "$name" = amd64 ]; then
    cargo build --release --locked
    cargo-deb --no-build --no-strip --output target/debian/
    continue
  fi
  read -r _ triple _ <<<"$(selected_targets "$name")"
  [ -n "$triple" ] || { echo "unknown target $name" >&2; exit 1; }
  [ -x "target/$triple/release/serial2mqtt" ] || { echo "run cross/build.sh $name first" >&2; exit 1; }
  cargo-deb --no-build --no-strip --target "$triple" --output target/debian/
done
ls -l target/debian/*.deb
