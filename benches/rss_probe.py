"""Memory of a running gateway before and after N readings with one subscriber.

Usage: python3 benches/rss_probe.py [FRAMES] [WINDOW]   (defaults: 20000, 64KiB)
Needs a release build (cargo build --release) and mosquitto_sub. Prints VmRSS (all resident
memory), RssAnon (heap and stacks) and VmHWM (peak) of the serial2mqtt process, in KiB.
"""
import os
import pty
import subprocess
import sys
import time
import tty

frames = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
window = sys.argv[2] if len(sys.argv) > 2 else "64KiB"
binary = os.environ.get("BIN", "./target/release/serial2mqtt")
master, slave = pty.openpty()
tty.setraw(slave)
config = "/tmp/serial2mqtt-rss-probe.yaml"
with open(config, "w") as f:
    f.write(f"""gateway: {{id: probe}}
broker: {{listen: "127.0.0.1:18830", window: {window}}}
log: {{level: warn}}
devices:
  - {{name: d0, port: {os.ttyname(slave)}, rules: [seq]}}
rules:
  seq:
    match: '^seq=(?P<n>\\d+)$'
    publish: [{{topic: 'bench/{{device}}', payload: '{{n}}'}}]
""")
gw = subprocess.Popen([binary, "run", "--config", config])
time.sleep(0.5)
sub = subprocess.Popen(["mosquitto_sub", "-p", "18830", "-t", "bench/#"], stdout=subprocess.DEVNULL)
time.sleep(0.5)


def memory():
    with open(f"/proc/{gw.pid}/status") as f:
        return {l.split(":")[0]: int(l.split()[1]) for l in f if l.startswith(("VmRSS", "RssAnon", "VmHWM"))}


print("before", memory())
for start in range(0, frames, 500):
    os.write(master, "".join(f"seq={i}\n" for i in range(start, min(start + 500, frames))).encode())
    time.sleep(0.005)
time.sleep(2)
print(f"after {frames} readings (window {window})", memory())
gw.terminate()
sub.terminate()
gw.wait()
