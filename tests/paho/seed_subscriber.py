# The subscriber from the article that started serial2mqtt ("MQTT: The Best Companion for IoT
# Messaging"), verbatim below this comment: tests/paho.rs runs it against the embedded broker.

import paho.mqtt.client as mqtt

# Callback function for received messages
def on_message(client, userdata, message):
    print(f"Received message: {message.payload.decode()}")
    print(f"Topic: {message.topic}")

# Create MQTT client
client = mqtt.Client()
client.on_message = on_message

# Connect to MQTT server
client.connect("localhost", 1883, 60)

# Subscribe to topic
client.subscribe("home/temperature")

# Maintain connection
client.loop_forever()
