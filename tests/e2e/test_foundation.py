"""Foundation: the plugin loads into a real mosquitto, journals what it captures without losing an
acknowledged publish (even across kill -9), leaves everything else as the broker would have it,
refuses bad options at start, shuts down and restarts cleanly, applies journal_full=reject, and
its file sink survives a full disk."""

import json
import os
import re
from pathlib import Path

import pytest

from conftest import now_ms, wait_until

TELEMETRY = "devices/{}/telemetry"


def js(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def reading(value, ts, **extra):
    """A reading in the reference form; the device comes from the topic."""
    return js({"value": value, "ts": ts, **extra})


# ---- the plugin loads ----

def test_plugin_loads_and_journals_a_publish(broker_factory, mqtt_factory):
    broker = broker_factory().start()
    started = re.compile(r"iotpipe \S+: capturing 'devices/\+/telemetry' into " + re.escape(str(broker.journal_dir)))
    assert started.search(broker.log()), broker.log()

    pub = mqtt_factory(broker)
    ts = now_ms()
    payload = reading(21.5, ts)
    assert pub.publish_acked(TELEMETRY.format("d1"), payload) == 0

    # in the ingest journal before the PUBACK: the operator tool shows it at once
    ingest = broker.journal("ingest")
    assert len(ingest.records) == 1, ingest.records
    rec = ingest.records[0]
    assert rec["lsn"] == 1 and rec["kind"] == "capture"
    assert rec["topic"] == "devices/d1/telemetry"
    assert rec["clientId"] == pub.client_id
    assert rec["qos"] == 1 and rec["retain"] is False
    assert rec["payload"] == payload.decode() and rec["payloadBytes"] == len(payload)
    assert ingest.summary["next_lsn"] == 2

    # and through the processor into the file sink (no registry: accepted unenriched)
    lines = broker.wait_lines("enriched", lambda ls: len(ls) >= 1)
    assert len(lines) == 1
    line = lines[0]
    assert line["deviceId"] == "d1" and line["value"] == 21.5 and line["ts"] == ts
    assert line["unenriched"] is True
    assert len(line["id"]) == 16
    assert broker.lines("quarantine") == []


# ---- bad options refuse the start ----

BAD_OPTIONS = [
    pytest.param("nope", "x", id="unknown-option"),
    pytest.param("journal_max_bytes", "12Q", id="bad-size"),
    pytest.param("journal_max_bytes", "1M", id="size-below-minimum"),
    pytest.param("window", "5y", id="bad-duration"),
    pytest.param("window", "500ms", id="duration-below-minimum"),
    pytest.param("journal_full", "sometimes", id="unknown-enum-word"),
    pytest.param("journal_dir", "/etc/passwd/x", id="unwritable-journal-dir"),
    pytest.param("journal_dir", "relative/dir", id="relative-journal-dir"),
    pytest.param("file_sink_dir", "/etc/passwd/out", id="unwritable-file-sink-dir"),
    pytest.param("topics", "devices/#/x", id="bad-topic-filter"),
    pytest.param("topics", "$SYS/#", id="sys-topic-filter"),
    pytest.param("device_topic_level", "99", id="out-of-range"),
    pytest.param("device_topic_level", "5", id="level-beyond-filter"),
    pytest.param("max_payload_bytes", "10", id="payload-bound-too-small"),
    pytest.param("anomaly_z", "abc", id="bad-number"),
    pytest.param("raw_output", "maybe", id="bad-bool"),
    pytest.param("alert_topic", "alerts/+", id="wildcard-alert-topic"),
    pytest.param("identity", "password", id="unknown-identity"),
]


@pytest.mark.parametrize("name,value", BAD_OPTIONS)
def test_bad_option_refuses_start(broker_factory, name, value):
    broker = broker_factory({name: value})
    broker.start(wait=False)
    rc = broker.wait_exit()
    log = broker.log()
    assert rc != 0, log
    refusals = [l for l in log.splitlines() if "iotpipe: refusing to start:" in l]
    assert refusals, log
    assert f"plugin_opt_{name}" in refusals[0], log
    assert "capturing" not in log


# ---- kill -9 loses no acknowledged publish ----

def test_kill9_after_10000_acked_publishes_loses_nothing(broker_factory, mqtt_factory, stats_factory):
    n, devices = 10_000, 5
    broker = broker_factory({"journal_max_bytes": "64M"}).start()
    pub = mqtt_factory(broker, max_inflight=1000)
    base = now_ms() - 60_000
    sent = set()

    def publish(rng):
        mids = []
        for i in rng:
            dev = f"crash-{i % devices}"
            ts = base + i          # distinct per message: every reading has its own id
            sent.add((dev, ts))
            mids.append(pub.publish(TELEMETRY.format(dev), reading(i % 97, ts)).mid)
        assert all(rc == 0 for rc in pub.wait_acks(mids, timeout=300))

    # the first half gets checkpointed (the processor's cursor moves), the rest is in flight
    publish(range(0, n // 2))
    wait_until(lambda: broker.journal("ingest", cursors_only=True).cursors["processor"]["next_lsn"] > 1,
               what="a processor checkpoint")
    publish(range(n // 2, n))
    broker.kill()              # right after the last PUBACK

    # every acknowledged publish got an LSN
    ingest = broker.journal("ingest", cursors_only=True)
    assert ingest.summary["next_lsn"] - 1 == n, ingest.summary
    pending_at_crash = ingest.cursors["processor"]["pending"]
    outbox = broker.journal("outbox", cursors_only=True)

    broker.start()             # same journal dir
    stats = stats_factory(broker)
    broker.wait_lines("enriched", lambda ls: len({l["id"] for l in ls}) >= n, timeout=180,
                      what=f"{n} distinct enriched ids")
    # let the replay finish before counting what it repeated
    stats.wait(lambda s: s["processed"] >= pending_at_crash and s["outbox"]["file"]["pending"] == 0,
               timeout=180, what="the replay to finish")
    lines = broker.lines("enriched")
    ids = {l["id"] for l in lines}
    assert len(ids) == n
    assert {(l["deviceId"], l["ts"]) for l in lines} == sent
    duplicates = len(lines) - len(ids)
    print(f"\nkill -9 after {n} PUBACKs: ingest cursor {ingest.cursors['processor']['next_lsn']} "
          f"({pending_at_crash} to replay); outbox next_lsn {outbox.summary['next_lsn']}, file cursor "
          f"{outbox.cursors['file']['next_lsn']}; after restart {len(lines)} enriched lines, "
          f"{duplicates} duplicates from the replay, {len(broker.lines('quarantine'))} quarantined")
    # whatever the replay regenerated is an identical repeat, never a changed record
    by_id = {}
    for l in lines:
        assert by_id.setdefault(l["id"], l) == l
    # the replay must not refuse its own readings as duplicates
    assert broker.lines("quarantine") == []


# ---- what the plugin must not touch ----

def test_uncaptured_topics_are_untouched(broker_factory, mqtt_factory):
    broker = broker_factory().start()
    sub = mqtt_factory(broker).subscribe("#", qos=1)
    pub = mqtt_factory(broker)
    binary = bytes(range(256)) * 4
    uncaptured = [
        ("other/topic", binary),
        ("devices/d1/telemetry/extra", b"not json at all"),
        ("devices/d1", b'{"value":1}'),
        ("Devices/d1/telemetry", b'{"value":2}'),
        ("devices/d1/status", b""),
    ]
    for topic, payload in uncaptured:
        assert pub.publish_acked(topic, payload) == 0
    # a captured publish last: the journal has seen everything published before it
    assert pub.publish_acked(TELEMETRY.format("d1"), reading(1, now_ms())) == 0

    msgs = sub.wait_messages(len(uncaptured) + 1)
    got = [(m.topic, m.payload) for m in msgs[:len(uncaptured)]]
    assert got == uncaptured                 # byte-identical, in order
    assert all(m.qos == 1 for m in msgs)

    ingest = broker.journal("ingest")
    assert [r["topic"] for r in ingest.records] == ["devices/d1/telemetry"]
    broker.wait_lines("enriched", lambda ls: len(ls) == 1)
    assert broker.lines("quarantine") == []


def test_captured_publish_keeps_retain_and_qos(broker_factory, mqtt_factory):
    broker = broker_factory().start()
    pub = mqtt_factory(broker)
    retained = reading(20.25, now_ms() - 1000)
    assert pub.publish_acked(TELEMETRY.format("r1"), retained, qos=1, retain=True) == 0

    # a subscriber arriving later gets the retained message, flag set, payload intact
    late = mqtt_factory(broker).subscribe("devices/r1/telemetry", qos=1)
    m = late.wait_messages(1)[0]
    assert (m.topic, m.payload, m.retain, m.qos) == ("devices/r1/telemetry", retained, True, 1)

    # live delivery keeps the publish QoS (capped by the subscription's)
    live1 = mqtt_factory(broker).subscribe("devices/q/telemetry", qos=1)
    live0 = mqtt_factory(broker).subscribe("devices/q/telemetry", qos=0)
    p1, p0 = reading(1.5, now_ms()), reading(2.5, now_ms() + 1)
    assert pub.publish_acked("devices/q/telemetry", p1, qos=1) == 0
    pub.publish("devices/q/telemetry", p0, qos=0)
    m1, m0 = live1.wait_messages(2)
    assert (m1.payload, m1.qos, m1.retain) == (p1, 1, False)
    assert (m0.payload, m0.qos, m0.retain) == (p0, 0, False)
    n0, n0b = live0.wait_messages(2)
    assert (n0.payload, n0.qos, n0b.payload, n0b.qos) == (p1, 0, p0, 0)

    # the journal recorded each as published
    wait_until(lambda: len(broker.journal("ingest").records) == 3, what="QoS 0 publish journaled")
    recs = broker.journal("ingest").records
    assert [(r["topic"], r["qos"], r["retain"]) for r in recs] == [
        ("devices/r1/telemetry", 1, True), ("devices/q/telemetry", 1, False), ("devices/q/telemetry", 0, False)]
    broker.wait_lines("enriched", lambda ls: len(ls) == 3)


# ---- subscribers still get everything ----

# (the empty payload has its own test in test_processing.py: it aborts a sanitized broker)
BAD_PAYLOADS = [b"\xff\xfe\x00\x01garbage", b"not json", b'{"value":"22"}', b"[" * 50 + b"]" * 50,
                b'{"deviceId":"d1","value":1e999}', b"null", b'{"value":1,"value":2}']


def test_subscriber_receives_every_message_in_order(broker_factory, mqtt_factory):
    n = 2000
    broker = broker_factory().start()
    sub = mqtt_factory(broker).subscribe("devices/+/telemetry", qos=1)
    pub = mqtt_factory(broker, max_inflight=200)
    base = now_ms() - 10_000
    sent, bad = [], 0
    for i in range(n):
        if i % 97 == 13:
            payload = BAD_PAYLOADS[bad % len(BAD_PAYLOADS)]
            bad += 1
        else:
            payload = reading(i / 10, base + i)
        sent.append((TELEMETRY.format(f"s{i % 3}"), payload))
    mids = [pub.publish(t, p, qos=1).mid for t, p in sent]
    assert all(rc == 0 for rc in pub.wait_acks(mids))

    msgs = sub.wait_messages(n)
    assert len(msgs) == n
    assert [(m.topic, m.payload) for m in msgs] == sent
    assert all(m.qos == 1 for m in msgs)
    assert not sub.disconnects and not pub.disconnects

    # the pipeline saw all of them too: good ones enriched, bad ones quarantined
    broker.wait_lines("quarantine", lambda ls: len(ls) >= bad)
    broker.wait_lines("enriched", lambda ls: len(ls) >= n - bad)
    assert len(broker.lines("quarantine")) == bad
    assert len(broker.lines("enriched")) == n - bad


def test_file_sink_off_runs_without_any_sink(broker_factory, mqtt_factory, stats_factory):
    """file_sink_dir off with no other sink: the pipeline still processes (alerts go out over MQTT)
    and the outbox, with no reader, keeps nothing."""
    n = 20_000
    broker = broker_factory({"file_sink_dir": "off", "unknown_devices": "accept"}).start()
    stats = stats_factory(broker)
    pub = mqtt_factory(broker, max_inflight=200)
    base = now_ms() - 60_000
    mids = [pub.publish(TELEMETRY.format(f"o{i % 8}"), reading(i % 50, base + i)).mid for i in range(n)]
    assert all(rc == 0 for rc in pub.wait_acks(mids))
    s = stats.wait(lambda s: s["processed"] >= n, what=f"{n} processed")
    assert s["readings"] == n and s["quarantined"] == 0 and s["rejected_full"] == 0
    # nothing left to read: the live backlog is empty (pending waits for the processor's checkpoint)
    stats.wait(lambda s: s["ingest"]["processor"]["unread"] == 0, what="the processor to have read everything")
    assert set(s["outbox"]) == {"next_lsn", "bytes", "segments", "rejected", "stalls"}, s["outbox"]   # no reader
    # about 6 MB of enriched records went through the outbox; its segments are collected as they fill
    assert s["outbox"]["next_lsn"] > n and s["outbox"]["segments"] <= 3, s["outbox"]
    assert not broker.out_dir.exists()
    assert broker.stop() == 0
    assert broker.journal("outbox", cursors_only=True).cursors == {}


# ---- clean shutdown and restart ----

def _publish_and_stop(broker, mqtt_factory, n):
    """n QoS 1 readings over 4 devices, then SIGTERM right after the last PUBACK."""
    pub = mqtt_factory(broker, max_inflight=200)
    base = now_ms() - 10_000
    mids = [pub.publish(TELEMETRY.format(f"c{i % 4}"), reading(i, base + i)).mid for i in range(n)]
    assert all(rc == 0 for rc in pub.wait_acks(mids))
    pub.close()
    return base, broker.stop()


def test_clean_shutdown_and_restart_reprocess_nothing(broker_factory, mqtt_factory):
    n = 2000
    broker = broker_factory().start()
    base, rc = _publish_and_stop(broker, mqtt_factory, n)
    assert rc == 0
    log = broker.log(since_start=True)
    assert "iotpipe: stopped" in log
    assert "checkpoint failed" not in log, log
    ingest = broker.journal("ingest", cursors_only=True)
    outbox = broker.journal("outbox", cursors_only=True)
    assert ingest.summary["next_lsn"] == n + 1
    assert outbox.cursors["file"]["pending"] == 0, outbox.cursors        # the sink drained the outbox
    # the processor checkpointed what it had done: exactly those readings are out, once each
    # (what it had not reached yet is still pending in the ingest journal)
    pending = ingest.cursors["processor"]["pending"]
    before = broker.lines("enriched")
    assert len(before) == n - pending and len({l["id"] for l in before}) == len(before)

    broker.start()
    assert mqtt_factory(broker).publish_acked(TELEMETRY.format("marker"), reading(-1, base + n + 1)) == 0
    after = broker.wait_lines("enriched", lambda ls: any(l["deviceId"] == "marker" for l in ls))
    assert after[:len(before)] == before       # nothing rewritten
    assert len(after) == n + 1, f"{len(after) - n - 1} lines written again after a clean stop"
    assert len({l["id"] for l in after}) == n + 1
    assert broker.stop() == 0
    assert broker.journal("ingest", cursors_only=True).cursors["processor"]["pending"] == 0
    assert broker.journal("outbox", cursors_only=True).cursors["file"]["pending"] == 0


def test_restart_then_writing_past_a_segment_keeps_every_record(broker_factory, mqtt_factory):
    """After a restart the journals roll into the spare segment found on disk; every record
    written there must read back (live and by the operator tool after another restart)."""
    broker = broker_factory({"journal_max_bytes": "4M"}).start()     # ingest segments of 128 KiB
    base = now_ms() - 60_000
    pad = "p" * 900
    batches = [range(0, 50), range(50, 500), range(500, 800)]

    def publish(rng):
        pub = mqtt_factory(broker, max_inflight=100)
        mids = [pub.publish(TELEMETRY.format("roll"), reading(i, base + i, pad=pad)).mid for i in rng]
        assert all(rc == 0 for rc in pub.wait_acks(mids))
        pub.close()

    def settled(expected):
        """Waits until `expected` readings are enriched or the log shows a bad read; returns the lines."""
        bad = ("not a capture", "undecodable", "not a journal segment", "corrupt")
        wait_until(lambda: len(broker.lines("enriched")) >= expected
                   or any(b in broker.log(since_start=True) for b in bad), what=f"{expected} enriched lines")
        for b in bad:
            assert b not in broker.log(), broker.log()[-3000:]
        return broker.lines("enriched")

    publish(batches[0])
    settled(50)
    assert broker.stop() == 0
    for rng in batches[1:]:            # each batch is several ingest segments
        broker.start()
        publish(rng)
        lines = settled(rng.stop)
        assert broker.stop() == 0
    assert {l["ts"] - base for l in lines} == set(range(800))
    ingest = broker.journal("ingest", cursors_only=True)
    assert ingest.summary["next_lsn"] == 801, ingest.summary
    assert ingest.cursors["processor"]["pending"] == 0


# ---- the file sink on a full disk ----

def _salvage(path):
    """Every complete JSON record in an NDJSON file, even one glued behind a torn line, and the
    number of lines that are not one whole record."""
    data = Path(path).read_bytes()
    data = data[:data.rfind(b"\n") + 1].decode()
    dec = json.JSONDecoder()
    records, torn = [], 0
    for line in data.splitlines():
        try:
            records.append(json.loads(line))
            continue
        except ValueError:
            torn += 1
        start = line.find('{"id":', 1)
        while start >= 0:
            try:
                obj, _ = dec.raw_decode(line, start)
                records.append(obj)
            except ValueError:
                pass
            start = line.find('{"id":', start + 1)
    return records, torn


def _sink_on_full_disk(broker_factory, mqtt_factory, small_fs, n=3000):
    """n readings into a file sink on a 256 KiB tmpfs (room for about half of them); returns once
    the sink has reported the full disk: (broker, fs, base ts)."""
    fs = small_fs("256k")
    broker = broker_factory({"file_sink_dir": str(fs), "metrics_interval": "200ms"}).start()
    pub = mqtt_factory(broker, max_inflight=200)
    base = now_ms() - 60_000
    mids = [pub.publish(TELEMETRY.format(f"f{i % 3}"), reading(i, base + i)).mid for i in range(n)]
    assert all(rc == 0 for rc in pub.wait_acks(mids))
    broker.wait_log("No space left on device")
    return broker, fs, base


def test_file_sink_disk_full_writes_only_whole_lines(broker_factory, mqtt_factory, small_fs, stats_factory):
    n = 3000
    broker, fs, base = _sink_on_full_disk(broker_factory, mqtt_factory, small_fs, n)
    fs.grow("64m")
    stats = stats_factory(broker)
    stats.wait(lambda s: s["processed"] == n and s["outbox"]["file"]["pending"] == 0, what="the sink to catch up")
    assert broker.stop() == 0
    records, torn = _salvage(fs / "enriched.ndjson")
    print(f"\nsink disk full: {torn} torn lines, {len({r['id'] for r in records})} of {n} ids, "
          f"{broker.log().count('cannot write to')} 'cannot write' log lines")
    assert torn == 0


def test_file_sink_disk_full_backs_off_and_logs_once(broker_factory, mqtt_factory, small_fs):
    broker, fs, base = _sink_on_full_disk(broker_factory, mqtt_factory, small_fs)
    # watch the full disk for a while: one line per episode is the intent (the `failing` flag)
    try:
        wait_until(lambda: broker.log().count("cannot write to") > 10, timeout=5)
    except AssertionError:
        pass
    spun = broker.log().count("cannot write to")
    fs.grow("64m")
    assert spun <= 10, f"{spun} 'cannot write' lines"


def test_file_sink_disk_full_at_sync_loses_nothing(broker_factory, mqtt_factory, small_fs, stats_factory):
    fs = small_fs("1m")
    broker = broker_factory({"file_sink_dir": str(fs), "metrics_interval": "200ms"}).start()
    stats = stats_factory(broker)
    # the disk fills while the sink is idle (root gets no reserve on tmpfs)
    filler = _fill_disk(fs)
    # a few readings: they fit the sink's stdio buffer, so the failure comes at its sync
    pub = mqtt_factory(broker)
    base = now_ms() - 60_000
    for i in range(10):
        assert pub.publish_acked(TELEMETRY.format("s1"), reading(i, base + i)) == 0
    stats.wait(lambda s: s["processed"] == 10, what="the processor to take the readings")
    broker.wait_log("file sink: cannot write")
    assert stats.wait(lambda s: s)["file_written"] == 0      # counted once durable only
    filler.unlink()
    assert pub.publish_acked(TELEMETRY.format("s1"), reading(99, base + 99)) == 0
    broker.wait_lines("enriched", lambda ls: any(l["ts"] == base + 99 for l in ls))
    assert broker.running()
    got = sorted(l["ts"] - base for l in broker.lines("enriched"))
    committed = broker.journal("outbox", cursors_only=True).cursors["file"]
    assert set(range(10)) <= set(got), f"written: {got}; file cursor {committed}"


# ---- journal_full reject ----

def _fill_disk(fs):
    """Fills the small file system the file sink writes to, to its last page; returns the filler
    to unlink."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 20, 4096):
            try:
                while os.write(fd, b"\0" * chunk):
                    pass
            except OSError:
                pass            # ENOSPC at this chunk size: go on with a smaller one
    finally:
        os.close(fd)
    return filler


FANOUT = 64     # readings per message, the processor's maximum: each one bad, so one quarantine
                # record (with the whole payload) per reading, and the outbox fills 64x faster


def _fanout_payload(i):
    """A ~3.4 KB message of FANOUT string-valued readings; all of the same size."""
    return js({"deviceId": "full", "seq": f"{i:08d}", "readings": {f"s{k:02d}": "x" * 40 for k in range(FANOUT)}})


def _fill_until_rejected(client, limit=2000):
    """Publishes fan-out payloads (QoS 1, one at a time) until the broker refuses one.
    Returns (accepted payloads, the PUBACK reason code of the refusal or 0)."""
    accepted = []
    for i in range(limit):
        payload = _fanout_payload(i)
        rc = client.publish_acked(TELEMETRY.format("full"), payload)
        if rc >= 0x80:          # MQTT 5 success codes include 0x10 "no matching subscribers"
            return accepted, rc
        accepted.append(payload)
    return accepted, 0


def _journal_full_setup(broker_factory, mqtt_factory, stats_factory, small_fs):
    # ingest 1 MB, outbox 3 MB; the file sink's disk is full, so it retries and the outbox backs up
    # (each accepted message becomes 64 quarantine lines of its whole payload: ~220 KB of NDJSON,
    # so the disk is sized for what the journals can hold)
    fs = small_fs("256m")
    broker = broker_factory({"journal_max_bytes": "4M", "file_sink_dir": str(fs),
                             "metrics_interval": "200ms"}).start()
    filler = _fill_disk(fs)
    stats = stats_factory(broker)
    client = mqtt_factory(broker, v5=True)
    accepted, rc = _fill_until_rejected(client)
    return broker, stats, client, accepted, rc, filler


def _assert_all_quarantined(lines, accepted):
    distinct = {l["id"]: l for l in lines}     # a replay may repeat a record, with its id
    assert len(distinct) == FANOUT * len(accepted)
    got = {}
    for l in distinct.values():
        assert l["reason"] == "wrong_type"
        got[l["payload"]] = got.get(l["payload"], 0) + 1
    assert got == {p.decode(): FANOUT for p in accepted}


def test_journal_full_reject_gives_mqtt5_clients_0x87(broker_factory, mqtt_factory, stats_factory, small_fs):
    broker, stats, client, accepted, rc, _ = _journal_full_setup(broker_factory, mqtt_factory, stats_factory, small_fs)
    assert rc == 0x87, f"no refusal after {len(accepted)} accepted publishes"
    broker.wait_log("file sink: cannot write")               # the stall this test relies on
    # refused again while full (same size), counted, and the client stays connected
    assert client.publish_acked(TELEMETRY.format("full"), _fanout_payload(99_999_998)) == 0x87
    s = stats.wait(lambda s: s["rejected_full"] >= 2, what="rejected_full >= 2")
    assert s["journaled"] == len(accepted) and s["received"] == len(accepted) + s["rejected_full"]
    assert s["outbox_waits"] >= 1              # the processor waited for outbox space
    assert not client.disconnects
    print(f"\n{len(accepted)} accepted before the journals filled; stats: "
          + json.dumps({k: s[k] for k in ("received", "journaled", "rejected_full", "quarantined", "outbox_waits")}))

    # a refused publish is not delivered to subscribers either; an uncaptured one still is
    sub = mqtt_factory(broker).subscribe("#", qos=1)
    assert client.publish_acked(TELEMETRY.format("full"), _fanout_payload(99_999_999)) == 0x87
    assert client.publish_acked("other/topic", b"still served") < 0x80
    assert [m.payload for m in sub.wait_messages(1)] == [b"still served"]
    assert not client.disconnects
    # the backlog draining once the sink can write again: see the test below


def test_journal_full_backlog_drains_when_sink_recovers(broker_factory, mqtt_factory, stats_factory, small_fs):
    broker, stats, client, accepted, rc, filler = _journal_full_setup(broker_factory, mqtt_factory, stats_factory,
                                                                      small_fs)
    assert rc == 0x87
    filler.unlink()
    lines = broker.wait_lines("quarantine", lambda ls: len({l["id"] for l in ls}) >= FANOUT * len(accepted),
                              timeout=20)
    _assert_all_quarantined(lines, accepted)
    # and the ingest journal takes publishes again
    wait_until(lambda: client.publish_acked(TELEMETRY.format("full"), _fanout_payload(1)) < 0x80,
               what="a publish accepted again")
