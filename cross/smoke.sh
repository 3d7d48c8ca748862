#!/usr/bin/env bash
# Proves the cross-built binaries: cross/smoke.sh [arm64|armv6 ...] (default: both).
#  1. readelf: the glibc floor is <= 2.31 (Pi OS bullseye), the armv6 build is Tag_CPU_arch v6
#     (an armv7 binary would die with SIGILL on a Pi Zero/1);
#  2. the project's end-to-end tests (a real pty, the embedded broker on a free port, real MQTT
#     subscribers; the uplink against mosquitto, with TLS) run the ARM binary under qemu-user.
# qemu lacks the TCGETS2/TCSETS2 ioctls the serial library uses: a test-only preload
# (cross/qemu/termios2-shim.c) answers them with TCGETS/TCSETS. Run cross/build.sh first.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"

while read -r -u 3 name triple _arch qemu; do
  bin="$REPO/target/$triple/release/serial2mqtt"
  [ -x "$bin" ] || { echo "no $bin: run cross/build.sh $name" >&2; exit 1; }

  floor=$(readelf -V "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
  if [ "$(printf '%s\n%s\n' "$floor" "$GLIBC" | sort -V | tail -1)" != "$GLIBC" ]; then
    echo "$name: needs glibc $floor, more than $GLIBC" >&2; exit 1
  fi
  log "$name: needs glibc $floor (<= $GLIBC), $(stat -c %s "$bin") bytes"
  case $name in
    armv6)
      arch=$(readelf -A "$bin" | sed -n 's/^ *Tag_CPU_arch: //p')
      [ "$arch" = v6 ] || { echo "armv6: Tag_CPU_arch is '$arch', not v6" >&2; exit 1; }
      log "armv6: Tag_CPU_arch $arch"
      sysroot=/usr/arm-linux-gnueabihf
      zig_target=arm-linux-gnueabihf.$GLIBC
      zig_cpu=(-mcpu=arm1176jzf_s)
      ;;
    arm64)
      sysroot=/usr/aarch64-linux-gnu
      zig_target=aarch64-linux-gnu.$GLIBC
      zig_cpu=()
      ;;
  esac
  shim="$REPO/target/qemu-termios2-shim-$name.so"
  python -m ziglang cc -target "$zig_target" "${zig_cpu[@]}" -shared -fPIC -O2 \
    -o "$shim" cross/qemu/termios2-shim.c

  log "$name: end-to-end tests under $qemu"
  SERIAL2MQTT_TEST_BIN="$bin" \
  SERIAL2MQTT_TEST_RUNNER="$qemu -L $sysroot -E LD_PRELOAD=$shim" \
    cargo test --locked --test gateway --test cli --test uplink -- --test-threads=2
done 3< <(selected_targets "$@")
