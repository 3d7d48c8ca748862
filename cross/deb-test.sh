#!/usr/bin/env bash
# Installs a serial2mqtt .deb on this machine (as root), checks what it put where, verifies the
# unit, then purges it and checks that nothing is left: cross/deb-test.sh target/debian/X.deb
set -euo pipefail
deb=$(realpath "$1")
fail() { echo "deb-test: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (dpkg -i)"

# apt pulls the dependencies (adduser); the package itself must not start anything.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$deb" >/dev/null

[ -x /usr/bin/serial2mqtt ] || fail "no /usr/bin/serial2mqtt"
/usr/bin/serial2mqtt --version
[ -f /lib/systemd/system/serial2mqtt.service ] || fail "no unit"
grep -qx /etc/serial2mqtt/config.yaml /var/lib/dpkg/info/serial2mqtt.conffiles \
  || fail "config.yaml is not a conffile"
[ "$(stat -c '%U:%G %a' /etc/serial2mqtt/config.yaml)" = "root:serial2mqtt 640" ] \
  || fail "config.yaml: $(stat -c '%U:%G %a' /etc/serial2mqtt/config.yaml), want root:serial2mqtt 640"
getent passwd serial2mqtt >/dev/null || fail "no user serial2mqtt"
id -nG serial2mqtt | tr ' ' '\n' | grep -qx dialout || fail "serial2mqtt is not in dialout"
[ "$(stat -c '%U:%G' /var/lib/serial2mqtt)" = "serial2mqtt:serial2mqtt" ] \
  || fail "/var/lib/serial2mqtt: $(stat -c '%U:%G' /var/lib/serial2mqtt)"
# The packaged config passes `check`, read as the service user would.
setpriv --reuid=serial2mqtt --regid=serial2mqtt --init-groups \
  /usr/bin/serial2mqtt check /etc/serial2mqtt/config.yaml
# And starts cleanly with no device attached: as the service user, on a spare port, until
# it says it is running; then a clean stop.
tmp=$(mktemp -d)
chmod 755 "$tmp"
# Secure by default: the installed broker serves this host only.
grep -q '^  listen: 127.0.0.1:1883$' /etc/serial2mqtt/config.yaml \
  || fail "the installed config does not listen on 127.0.0.1:1883"
sed 's/listen: 127.0.0.1:1883$/listen: 127.0.0.1:18883/' /etc/serial2mqtt/config.yaml > "$tmp/config.yaml"
grep -q 'listen: 127.0.0.1:18883' "$tmp/config.yaml" || fail "could not move the test broker to 18883"
chmod 644 "$tmp/config.yaml"
setpriv --reuid=serial2mqtt --regid=serial2mqtt --init-groups \
  /usr/bin/serial2mqtt run --config "$tmp/config.yaml" 2> "$tmp/log" &
pid=$!
for _ in $(seq 50); do grep -q "gateway running" "$tmp/log" && break; sleep 0.1; done
kill -TERM $pid; wait $pid || fail "the installed config did not stop cleanly: $(cat "$tmp/log")"
grep -q "gateway running" "$tmp/log" || fail "did not start: $(cat "$tmp/log")"
if grep -E " (WARN|ERROR) " "$tmp/log"; then fail "the installed config does not start cleanly"; fi
rm -rf "$tmp"

if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify /lib/systemd/system/serial2mqtt.service
  systemd-analyze security --offline=true /lib/systemd/system/serial2mqtt.service | tail -1
fi

DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq serial2mqtt >/dev/null
for p in /usr/bin/serial2mqtt /lib/systemd/system/serial2mqtt.service /etc/serial2mqtt /var/lib/serial2mqtt /usr/share/doc/serial2mqtt; do
  [ ! -e "$p" ] || fail "$p left after purge"
done
dpkg -s serial2mqtt >/dev/null 2>&1 && fail "still known to dpkg"
echo "deb-test: $(basename "$deb") installs, checks, starts, verifies and purges cleanly"
