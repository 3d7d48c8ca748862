"""MQTT features local apps rely on, checked with paho-mqtt 1.6 against a broker.

Usage: python3 broker_features.py HOST PORT
Prints one line per feature and exits 1 if any failed. Run by tests/paho.rs against the
embedded broker; it passes against mosquitto too, which keeps the checks honest.
"""
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt

HOST, PORT = sys.argv[1], int(sys.argv[2])
RUN = uuid.uuid4().hex[:8]  # topics unique per run: retained state of earlier runs cannot leak in
failures = []


class Client:
    """A paho client that records what it receives."""

    def __init__(self, client_id="", clean_session=True, will=None):
        self.c = mqtt.Client(client_id=client_id, clean_session=clean_session)
        if will:
            self.c.will_set(*will)
        self.received = []
        self.cond = threading.Condition()
        self.c.on_message = self._on_message
        self.connected = threading.Event()
        self.c.on_connect = lambda c, u, f, rc: rc == 0 and self.connected.set()
        # Set before any SUBSCRIBE: the network thread may get the SUBACK before subscribe() returns.
        self.subacked = set()
        self.c.on_subscribe = self._on_subscribe

    def _on_subscribe(self, _c, _u, mid, _granted):
        with self.cond:
            self.subacked.add(mid)
            self.cond.notify_all()

    def _on_message(self, _c, _u, m):
        with self.cond:
            self.received.append((m.topic, m.payload.decode(), m.qos, bool(m.retain)))
            self.cond.notify_all()

    def connect(self):
        self.c.connect(HOST, PORT, 60)
        self.c.loop_start()
        if not self.connected.wait(5):
            raise RuntimeError("CONNACK not received")
        return self

    def subscribe(self, topic, qos=0):
        result, mid = self.c.subscribe(topic, qos)
        assert result == mqtt.MQTT_ERR_SUCCESS
        with self.cond:
            if not self.cond.wait_for(lambda: mid in self.subacked, 5):
                raise RuntimeError(f"SUBACK for {topic} not received")

    def publish(self, topic, payload, qos=0, retain=False):
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(5)
        if qos > 0 and not info.is_published():
            raise RuntimeError(f"publish to {topic} at QoS {qos} not acknowledged")

    def wait_for(self, n, timeout=5.0):
        deadline = time.time() + timeout
        with self.cond:
            while len(self.received) < n and time.time() < deadline:
                self.cond.wait(deadline - time.time())
            return list(self.received)

    def close(self, clean=True):
        if clean:
            self.c.disconnect()
        else:
            # Drop the TCP connection without DISCONNECT, as a crashed client would.
            self.c.loop_stop()
            self.c.socket().close()
            return
        self.c.loop_stop()


def check(name, fn):
    try:
        fn()
        print(f"ok   {name}")
    except Exception as e:  # noqa: BLE001 - report every failure, not just the first
        print(f"FAIL {name}: {e!r}")
        failures.append(name)


def wildcards():
    plus, hash_ = Client().connect(), Client().connect()
    plus.subscribe(f"chat/{RUN}/+/msg")
    hash_.subscribe(f"chat/{RUN}/#")
    pub = Client().connect()
    pub.publish(f"chat/{RUN}/alice/msg", "hi", qos=1)
    pub.publish(f"chat/{RUN}/alice/typing", "…", qos=1)
    assert [m[:2] for m in plus.wait_for(1)] == [(f"chat/{RUN}/alice/msg", "hi")], plus.received
    got = {m[0] for m in hash_.wait_for(2)}
    assert got == {f"chat/{RUN}/alice/msg", f"chat/{RUN}/alice/typing"}, hash_.received
    time.sleep(0.3)
    assert len(plus.received) == 1, f"+ matched too much: {plus.received}"
    for c in (plus, hash_, pub):
        c.close()


def qos_levels():
    sub = Client().connect()
    sub.subscribe(f"q/{RUN}/#", qos=2)
    pub = Client().connect()
    for q in (0, 1, 2):
        pub.publish(f"q/{RUN}/{q}", f"m{q}", qos=q)
    got = sub.wait_for(3)
    time.sleep(0.3)
    assert sorted(m[1] for m in sub.received) == ["m0", "m1", "m2"], f"each exactly once: {sub.received}"
    for c in (sub, pub):
        c.close()
    return got


def retained():
    pub = Client().connect()
    pub.publish(f"status/{RUN}/alice", "online", qos=1, retain=True)
    pub.close()
    late = Client().connect()
    late.subscribe(f"status/{RUN}/+", qos=1)
    got = late.wait_for(1)
    assert got and got[0][:2] == (f"status/{RUN}/alice", "online") and got[0][3], got
    late.close()


def last_will():
    watcher = Client().connect()
    watcher.subscribe(f"status/{RUN}/bob", qos=1)
    bob = Client(client_id=f"bob-{RUN}", will=(f"status/{RUN}/bob", "offline", 1, False)).connect()
    time.sleep(0.2)
    bob.close(clean=False)
    got = watcher.wait_for(1, timeout=10)
    assert got and got[0][:2] == (f"status/{RUN}/bob", "offline"), got
    watcher.close()


def persistent_session():
    cid = f"carol-{RUN}"
    carol = Client(client_id=cid, clean_session=False).connect()
    carol.subscribe(f"inbox/{RUN}/carol", qos=1)
    carol.close()
    time.sleep(0.2)
    pub = Client().connect()
    pub.publish(f"inbox/{RUN}/carol", "while you were away", qos=1)
    pub.close()
    carol = Client(client_id=cid, clean_session=False).connect()  # no new SUBSCRIBE
    got = carol.wait_for(1)
    assert got and got[0][:2] == (f"inbox/{RUN}/carol", "while you were away"), got
    carol.close()


def chat_room():
    room = f"chat/{RUN}/room1"
    people = [Client(client_id=f"{n}-{RUN}").connect() for n in ("ann", "ben", "cat")]
    for p in people:
        p.subscribe(room, qos=1)
    for i, p in enumerate(people):
        p.publish(room, f"hello from {i}", qos=1)
    for p in people:
        got = sorted(m[1] for m in p.wait_for(3))
        assert got == ["hello from 0", "hello from 1", "hello from 2"], got
    for p in people:
        p.close()


check("wildcards + and #", wildcards)
check("QoS 0, 1 and 2 delivered exactly once", qos_levels)
check("retained message to a late subscriber", retained)
check("last will on an abrupt disconnect", last_will)
check("persistent session (clean_session=False) queues QoS 1", persistent_session)
check("chat room between three clients", chat_room)
print(f"{6 - len(failures)} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
