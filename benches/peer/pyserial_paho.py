"""The setup a user would otherwise write: pyserial + a regex + paho-mqtt, publishing to a
separate broker (mosquitto). One reader thread per serial port, as in the seed article's style.

Usage: python3 pyserial_paho.py BROKER_HOST BROKER_PORT NAME=PORT [NAME=PORT ...]
"""
import re
import sys
import threading

import paho.mqtt.client as mqtt
import serial

host, port = sys.argv[1], int(sys.argv[2])
devices = [a.split("=", 1) for a in sys.argv[3:]]
RULE = re.compile(r"^seq=(?P<n>\d+)$")

client = mqtt.Client()
client.connect(host, port, 60)
client.loop_start()


def read(name, path):
    ser = serial.Serial(path, 115200)
    for line in ser:
        m = RULE.match(line.decode(errors="replace").strip())
        if m:
            client.publish(f"bench/{name}", m.group("n"))


for name, path in devices:
    threading.Thread(target=read, args=(name, path), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
