# The publisher from the article that started serial2mqtt ("MQTT: The Best Companion for IoT
# Messaging"), verbatim below this comment: tests/paho.rs runs it against the embedded broker.

import paho.mqtt.client as mqtt
import time

# Create MQTT client
client = mqtt.Client()

# Connect to MQTT server
client.connect("localhost", 1883, 60)

# Publish messages
while True:
    client.publish("home/temperature", "25.6")
    time.sleep(2)
