"""The setup a user would otherwise write for an uplink: pyserial + a regex + paho-mqtt
publishing straight to the upstream broker at QoS 1. paho keeps unsent messages in memory, so
what it holds during an outage is lost if the process dies.

Usage: python3 pyserial_paho_upstream.py BROKER_HOST BROKER_PORT NAME=PORT
"""
import re
import sys

import paho.mqtt.client as mqtt
import serial

host, port = sys.argv[1], int(sys.argv[2])
name, path = sys.argv[3].split("=", 1)
RULE = re.compile(r"^seq=(?P<n>\d+)$")

client = mqtt.Client(client_id="python-uplink", clean_session=False)
client.max_queued_messages_set(0)  # unlimited, in memory
client.max_inflight_messages_set(100)
client.connect_async(host, port, 30)
client.loop_start()
print("ready", flush=True)
ser = serial.Serial(path, 115200)
for line in ser:
    m = RULE.match(line.decode(errors="replace").strip())
    if m:
        client.publish(f"bench/{name}", m.group("n"), qos=1)
