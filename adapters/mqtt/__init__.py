"""MQTT (Mosquitto and other brokers, for IoT gateways and sensors): subscribe, and publish."""

from adapters.mqtt.inbound import MqttInbound
from adapters.mqtt.outbound import MqttOutbound

# One entry point for the family: `type: mqtt` under inbound: subscribes, under outbound: publishes.
ADAPTERS = (MqttInbound, MqttOutbound)
