"""The Kafka sink against a real Apache Kafka broker (KRaft, ci/kafka.sh): a fleet's publishes arrive in
the reference topics keyed by device, exactly once and in order without faults; with Kafka killed
during load, with Kafka down at the broker's start and with the broker killed during load, every
acknowledged reading still arrives (duplicates are allowed after a fault: consumers drop them by
id; the tests print how many there were).

One Kafka for the module; each test uses its own journal and (but the first, which checks the default
names) its own topic names. Deadlines only keep a broken run from hanging."""

import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING

from conftest import PLUGIN, now_ms
from services import kafka_broker

SIM = Path(os.environ.get("IOTPIPE_SIM", str(PLUGIN.parent / "iotpipe-sim")))
KINDS = {"enriched": "devices.enriched", "alert": "devices.alerts", "quarantine": "devices.quarantine",
         "aggregate": "devices.aggregated"}
CATCH_UP = 240.0        # generous: a sanitizer build on two cores is slow


@pytest.fixture(scope="module")
def kafka():
    d = tempfile.mkdtemp(prefix="iotpipe-e2e-kafka-")
    with kafka_broker(Path(d) / "kafka") as k:
        yield k
    subprocess.run(["rm", "-rf", d], check=False)


def topic_options(prefix):
    """kafka_topic_* options giving this test topics of its own."""
    return {f"kafka_topic_{kind}": f"{prefix}.{name}" for kind, name in KINDS.items()}


def sim(*args, timeout=600):
    """Runs iotpipe-sim; returns its summary as a dict of numbers."""
    res = subprocess.run([str(SIM), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert res.returncode in (0, 1), res.stderr
    return parse_sim(res.stdout)


def parse_sim(out):
    m = re.search(r"sent=(\d+) acked=(\d+) failed=(\d+) bad=(\d+) dups=(\d+)", out)
    assert m, out
    return dict(zip(("sent", "acked", "failed", "bad", "dups"), map(int, m.groups())))


def sim_registry(path, devices, threshold=30):
    subprocess.run([str(SIM), "--registry", str(path), "--devices", str(devices), "--threshold", str(threshold)],
                   check=True, timeout=60)
    path.chmod(0o644)
    return path


class Msg:
    __slots__ = ("topic", "partition", "offset", "key", "headers", "value")

    def __init__(self, m):
        self.topic, self.partition, self.offset = m.topic(), m.partition(), m.offset()
        self.key = m.key().decode() if m.key() is not None else None
        self.headers = {k: v.decode() for k, v in (m.headers() or [])}
        self.value = json.loads(m.value())


class TopicReader:
    """Everything in a topic from its beginning, read with a real consumer (confluent-kafka)."""

    def __init__(self, bootstrap, topic):
        self.topic = topic
        self.msgs = []
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"e2e-{uuid.uuid4().hex[:8]}",
                           "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        self.assigned = False

    def _assign(self):
        md = self.c.list_topics(self.topic, timeout=10).topics.get(self.topic)
        if md is None or md.error is not None or not md.partitions:
            return False
        self.c.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in md.partitions])
        self.assigned = True
        return True

    def poll(self):
        if not self.assigned and not self._assign():
            time.sleep(0.2)
            return
        for m in self.c.consume(20000, timeout=0.5):
            if m.error() is None:
                self.msgs.append(Msg(m))

    def wait(self, pred, timeout=CATCH_UP, what=None):
        end = time.monotonic() + timeout
        while not pred(self.msgs):
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {what or 'messages'} in {self.topic}: "
                                     f"{len(self.msgs)} read")
            self.poll()
        return self.msgs

    def close(self):
        self.c.close()


def readings(msgs):
    """(deviceId, ts) of each distinct reading, and the number of duplicate messages (same id)."""
    ids, dups, keys = set(), 0, set()
    for m in msgs:
        if m.value["id"] in ids:
            dups += 1
            continue
        ids.add(m.value["id"])
        keys.add((m.value["deviceId"], m.value["ts"]))
    return keys, dups


def distinct(msgs):
    return len({m.value["id"] for m in msgs})


def order_violations(msgs):
    """Per device, readings whose ts is not above the previous one's in the partition's order (first
    copy of each id)."""
    seen, last, bad = set(), {}, 0
    for m in sorted(msgs, key=lambda m: (m.partition, m.offset)):
        if m.value["id"] in seen:
            continue
        seen.add(m.value["id"])
        dev = m.value["deviceId"]
        if dev in last and m.value["ts"] <= last[dev]:
            bad += 1
        last[dev] = m.value["ts"]
    return bad


def kafka_broker_options(kafka, registry, **extra):
    return {"kafka_brokers": kafka.bootstrap, "registry_file": str(registry), "journal_max_bytes": "512M", **extra}


# ---- 1: a fleet's publishes, exactly once, in order, keyed ----

def test_fleet_arrives_exactly_once_in_order(kafka, broker_factory, stats_factory, workdir):
    devices, total = 20, 100_000
    reg = sim_registry(workdir / "registry.json", devices, threshold=30)
    b = broker_factory(kafka_broker_options(kafka, reg)).start()
    b.wait_log("kafka sink: producing to " + kafka.bootstrap)
    res = sim("-p", b.port, "--devices", devices, "--connections", 4, "-n", total, "-q", 1, "--quiet",
              "--spike", 0.002, "--bad", 0.01)
    assert res["acked"] == total and res["failed"] == 0, res
    good = total - res["bad"]

    enriched = TopicReader(kafka.bootstrap, "devices.enriched")
    try:
        msgs = enriched.wait(lambda ms: len(ms) >= good, what=f"{good} readings")
        time.sleep(1)           # a duplicate would come right behind: give it the chance to show
        enriched.poll()
        msgs = enriched.msgs
    finally:
        enriched.close()
    ids = [m.value["id"] for m in msgs]
    assert len(ids) == good and len(set(ids)) == good, f"{len(ids)} messages, {len(set(ids))} distinct ids"

    per_device = defaultdict(list)
    for m in msgs:
        assert m.key == m.value["deviceId"]
        assert m.headers["id"] == m.value["id"] and re.fullmatch(r"[0-9a-f]{16}", m.value["id"])
        assert m.headers["content-type"] == "application/json"
        assert m.value["location"].startswith("site-")        # enriched from the registry
        per_device[m.key].append(m)
    assert len(per_device) == devices
    for dev, ms in per_device.items():
        assert len({m.partition for m in ms}) == 1, f"{dev} spread over partitions"
        ts = [m.value["ts"] for m in sorted(ms, key=lambda m: m.offset)]
        assert all(a < b for a, b in zip(ts, ts[1:])), f"{dev}: readings out of publish order"

    stats = stats_factory(b).wait(lambda s: s["kafka_delivered"] >= s["readings"] + s["quarantined"] + s["alerts"],
                                  timeout=CATCH_UP, what="everything delivered")
    for kind in ("alert", "quarantine"):
        r = TopicReader(kafka.bootstrap, KINDS[kind])
        try:
            want = stats["alerts"] if kind == "alert" else stats["quarantined"]
            assert want > 0, f"the fleet made no {kind} records: {stats}"
            got = r.wait(lambda ms: len(ms) >= want, what=f"{want} {kind} records")
        finally:
            r.close()
        for m in got:
            assert m.headers["id"] == m.value["id"] and m.headers["content-type"] == "application/json"
            assert m.key is not None
            if kind == "alert":
                assert m.key == m.value["deviceId"] and m.value["state"] in ("firing", "resolved")
        if kind == "quarantine":
            assert len(got) == res["bad"], f"{len(got)} quarantined of {res['bad']} bad payloads"
            assert all(m.value["reason"] and m.value["clientId"].startswith("iotpipe-sim-") for m in got)
            # no device id in a malformed payload: the key is the topic's device
            assert all(m.key == m.value["topic"].split("/")[1] for m in got)
    print(f"\n{good} readings, {stats['alerts']} alerts, {stats['quarantined']} quarantined; "
          f"kafka_delivered={stats['kafka_delivered']} kafka_retries={stats['kafka_retries']}")


# ---- 2: Kafka killed for 30 s under load ----

def test_kafka_killed_under_load(kafka, broker_factory, stats_factory, workdir):
    devices = 20
    reg = sim_registry(workdir / "registry.json", devices)
    b = broker_factory(kafka_broker_options(kafka, reg, **topic_options("t2"))).start()
    stats = stats_factory(b)
    load = subprocess.Popen([str(SIM), "-p", str(b.port), "--devices", str(devices), "--connections", "4",
                             "--rate", "2000", "--duration", "45", "-q", "1", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stats.wait(lambda s: s["kafka_delivered"] >= 5000, timeout=CATCH_UP, what="the load flowing into Kafka")
        kafka.kill()
        time.sleep(30)          # the fault: Kafka stays down this long while the load goes on
        mid = stats.wait(lambda s: True)
        backlog = mid["outbox"]["kafka"]["pending"]
        kafka.restart()
        out, err = load.communicate(timeout=300)
    finally:
        if load.poll() is None:
            load.kill()
        if not kafka.running():
            kafka.restart()
    assert backlog > 10000, f"the outbox held no backlog while Kafka was down: {mid}"
    res = parse_sim(out)
    assert res["failed"] == 0 and res["acked"] == res["sent"], (res, err)

    r = TopicReader(kafka.bootstrap, "t2.devices.enriched")
    try:
        r.wait(lambda ms: distinct(ms) >= res["acked"], what=f"{res['acked']} readings")
        time.sleep(1)
        r.poll()
        got, dups = readings(r.msgs)
        late_order = order_violations(r.msgs)
    finally:
        r.close()
    s = stats.wait(lambda s: True)
    print(f"\nKafka down 30 s under load ({backlog} records waited in the outbox): {res['acked']} acknowledged, "
          f"{len(got)} distinct readings in Kafka, "
          f"{dups} duplicates, {late_order} order violations by first copy, kafka_retries={s['kafka_retries']}")
    assert len(got) == res["acked"]


# ---- 3: the broker starts while Kafka is down ----

def test_start_with_kafka_down(kafka, broker_factory, stats_factory, workdir):
    devices, total = 10, 5000
    reg = sim_registry(workdir / "registry.json", devices)
    kafka.stop()
    try:
        b = broker_factory(kafka_broker_options(kafka, reg, **topic_options("t3"))).start()
        res = sim("-p", b.port, "--devices", devices, "--connections", 2, "-n", total, "-q", 1, "--quiet")
        assert res["acked"] == total, res
        s = stats_factory(b).wait(lambda s: s["readings"] == total, timeout=CATCH_UP, what="all readings processed")
        assert s["kafka_delivered"] == 0 and s["outbox"]["kafka"]["pending"] >= total, s
    finally:
        kafka.start()
    r = TopicReader(kafka.bootstrap, "t3.devices.enriched")
    try:
        r.wait(lambda ms: distinct(ms) >= total, what=f"{total} readings")
        got, dups = readings(r.msgs)
        assert order_violations(r.msgs) == 0
    finally:
        r.close()
    print(f"\nstarted with Kafka down: {total} acknowledged, {len(got)} distinct in Kafka, {dups} duplicates")
    assert len(got) == total


# ---- 4: the broker killed under load, restarted on the same journal ----

def test_broker_killed_under_load(kafka, broker_factory, mqtt_factory, workdir):
    devices = 10
    reg = sim_registry(workdir / "registry.json", devices)
    b = broker_factory(kafka_broker_options(kafka, reg, **topic_options("t4"))).start()
    pub = mqtt_factory(b, max_inflight=100)
    base = now_ms() - 120_000
    sent, i, kill_at = {}, 0, 8000
    while True:
        with pub.cond:
            acked = len(pub.acks)
        if acked >= kill_at:
            break
        if i - acked >= 400:        # keep a window in flight, no more
            pub._wait(lambda: len(pub.acks) > acked, 30, "PUBACKs")
            continue
        dev, ts = f"dev-{i % devices:06d}", base + i
        payload = json.dumps({"deviceId": dev, "sensorId": "temp", "value": 20 + (i % 50) / 10, "ts": ts})
        info = pub.client.publish(f"devices/{dev}/telemetry", payload, qos=1)
        sent[info.mid] = (dev, ts)
        i += 1
    b.kill()                        # SIGKILL with messages in flight
    with pub.cond:
        acknowledged = {sent[mid] for mid in pub.acks}
    pub.close()
    print(f"\nkilled the broker after {i} publishes, {len(acknowledged)} acknowledged")

    b.start()                       # same journal, same port
    after = mqtt_factory(b)
    for k in range(100):
        dev, ts = f"dev-{k % devices:06d}", base + 100_000 + k
        assert after.publish_acked(f"devices/{dev}/telemetry",
                                   json.dumps({"deviceId": dev, "sensorId": "temp", "value": 1, "ts": ts})) == 0
        acknowledged.add((dev, ts))

    r = TopicReader(kafka.bootstrap, "t4.devices.enriched")
    try:
        r.wait(lambda ms: acknowledged <= readings(ms)[0], what=f"{len(acknowledged)} acknowledged readings")
        got, dups = readings(r.msgs)
    finally:
        r.close()
    # duplicates: the sink re-sends what was in flight, and the processor replays from its last
    # checkpoint (every 5 s), regenerating records with the same ids
    print(f"after the restart: {len(got)} distinct readings in Kafka ({len(got - acknowledged)} not acknowledged "
          f"but taken), {dups} duplicates")
    assert not acknowledged - got
