"""Processing with the example registry (conf/registry.example.json): enrichment of the accepted
payload forms, threshold alerts with hysteresis, quarantine reasons, tumbling-window aggregates
and registry reloads, all through a real mosquitto and real clients."""

import json
import os
import shutil

import pytest

from conftest import REGISTRY_EXAMPLE, SANITIZED, StatsWatcher, now_ms, wait_until

TELEMETRY = "devices/{}/telemetry"
REGISTRY = json.loads(REGISTRY_EXAMPLE.read_text())
DAY_MS = 86_400_000


def js(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def copy_registry(dest_dir):
    path = dest_dir / "registry.json"
    shutil.copyfile(REGISTRY_EXAMPLE, path)
    path.chmod(0o644)
    return path


def write_registry(path, text):
    """Replaces the file the way an admin's tool would: a new file renamed over the old one."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    tmp.chmod(0o644)
    os.replace(tmp, path)


@pytest.fixture
def registry_broker(broker_factory, workdir):
    """registry_broker(**plugin_options): a running broker using a copy of the example registry."""
    def start(**options):
        reg = copy_registry(workdir)
        b = broker_factory({"registry_file": str(reg), **options})
        b.registry_path = reg
        b.start()
        b.wait_log("registry " + str(reg) + " loaded")
        return b
    return start


def by_client(lines, client):
    return [l for l in lines if l.get("clientId") == client.client_id]


# ---- 1: enrichment ----

BERLIN_TEMP = {"deviceId": "temp-007", "sensorId": "temp", "unit": "Cel", "location": "Berlin", "zone": "z1",
               "deviceType": "thermometer", "threshold": 25, "isAnomaly": False}


def test_reference_messages_are_enriched(registry_broker, mqtt_factory):
    broker = registry_broker()
    pub = mqtt_factory(broker)
    t = now_ms()
    ts_ms = t - t % 1000 - 1000 + 123          # ms with a fraction of a second: never equal to ts_s below
    ts_s = t // 1000 - 5
    topic = TELEMETRY.format("temp-007")
    assert pub.publish_acked(topic, js({"deviceId": "temp-007", "sensorId": "temp", "value": 22.5, "ts": ts_ms})) == 0
    # exactly the article's form: no sensorId (the default sensor), ts in seconds
    assert pub.publish_acked(topic, f'{{"deviceId":"temp-007","value":22.5,"ts":{ts_s}}}'.encode()) == 0

    lines = broker.wait_lines("enriched", lambda ls: len(ls) >= 2)
    assert len(lines) == 2
    for line, ts in zip(lines, (ts_ms, ts_s * 1000)):
        expected = dict(BERLIN_TEMP, value=22.5, ts=ts)
        assert {k: line.get(k) for k in expected} == expected, line
        assert len(line["id"]) == 16
        assert "tsMissing" not in line and "unenriched" not in line and "late" not in line
    assert lines[0]["id"] != lines[1]["id"]
    assert broker.lines("quarantine") == []
    assert broker.lines("alert") == []


def test_reading_without_ts_gets_arrival_time_flagged(registry_broker, mqtt_factory):
    broker = registry_broker()
    before = now_ms()
    assert mqtt_factory(broker).publish_acked(TELEMETRY.format("temp-007"), b'{"value":21}') == 0
    [line] = broker.wait_lines("enriched", lambda ls: len(ls) >= 1)
    assert line["tsMissing"] is True
    assert line["deviceId"] == "temp-007" and line["sensorId"] == "temp" and line["location"] == "Berlin"
    assert before - 1000 <= line["ts"] <= now_ms() + 1000     # clock sanity, not a timing bound


def test_multi_reading_message(registry_broker, mqtt_factory):
    broker = registry_broker()
    ts = now_ms() - 2000
    payload = js({"deviceId": "hum-012", "ts": ts,
                  "readings": {"hum": 41, "temp": {"value": 70.7, "unit": "degF"}}})
    assert mqtt_factory(broker).publish_acked(TELEMETRY.format("hum-012"), payload) == 0
    lines = broker.wait_lines("enriched", lambda ls: len(ls) >= 2)
    got = {l["sensorId"]: l for l in lines}
    assert set(got) == {"hum", "temp"}
    common = {"deviceId": "hum-012", "location": "Berlin", "zone": "z2", "deviceType": "hygrometer", "ts": ts,
              "isAnomaly": False}
    for line in got.values():
        assert {k: line.get(k) for k in common} == common, line
    assert got["hum"]["value"] == 41 and got["hum"]["unit"] == "%RH" and got["hum"]["threshold"] == 70
    # converted to the registry's unit; this sensor has no threshold
    assert got["temp"]["value"] == pytest.approx(21.5) and got["temp"]["unit"] == "Cel"
    assert "threshold" not in got["temp"]
    assert got["hum"]["id"] != got["temp"]["id"]


def test_multi_reading_message_with_one_bad_reading(registry_broker, mqtt_factory):
    broker = registry_broker()
    ts = now_ms() - 3000
    payload = js({"deviceId": "meter-101", "ts": ts, "readings": {"power": 1200, "energy": -5, "volts": 230}})
    client = mqtt_factory(broker)
    assert client.publish_acked(TELEMETRY.format("meter-101"), payload) == 0
    broker.wait_lines("quarantine", lambda ls: len(ls) >= 2)
    [good] = broker.wait_lines("enriched", lambda ls: len(ls) >= 1)
    assert (good["sensorId"], good["value"], good["unit"], good["location"], good["threshold"]) == \
        ("power", 1200, "W", "Hamburg", 3500)
    reasons = sorted((q["sensorId"], q["reason"]) for q in broker.lines("quarantine"))
    assert reasons == [("energy", "out_of_range"), ("volts", "unknown_sensor")]


def test_senml_message(registry_broker, mqtt_factory):
    broker = registry_broker()
    bt = now_ms() // 1000 - 10
    pack = [{"bn": "press-003:", "bt": bt, "bu": "Pa", "n": "pressure", "v": 101325},
            {"n": "pressure", "t": 1, "u": "hPa", "v": 1013.5},
            {"n": "pressure", "t": 2, "v": 101000.5}]
    assert mqtt_factory(broker).publish_acked(TELEMETRY.format("press-003"), js(pack)) == 0
    lines = broker.wait_lines("enriched", lambda ls: len(ls) >= 3)
    assert len(lines) == 3
    assert [l["ts"] for l in lines] == [bt * 1000, bt * 1000 + 1000, bt * 1000 + 2000]
    assert [l["value"] for l in lines] == pytest.approx([101325, 101350, 101000.5])
    for l in lines:
        assert (l["deviceId"], l["sensorId"], l["unit"], l["location"], l["zone"], l["deviceType"]) == \
            ("press-003", "pressure", "Pa", "Munich", "z3", "barometer")
        assert "threshold" not in l
    assert broker.lines("quarantine") == []


def test_unknown_devices_accept_stores_unenriched(registry_broker, mqtt_factory):
    broker = registry_broker(unknown_devices="accept")
    ts = now_ms() - 1000
    assert mqtt_factory(broker).publish_acked(TELEMETRY.format("stranger"), js({"value": 3.5, "ts": ts})) == 0
    [line] = broker.wait_lines("enriched", lambda ls: len(ls) >= 1)
    assert line["deviceId"] == "stranger" and line["unenriched"] is True and "location" not in line


# ---- 2: threshold alerts ----

def test_threshold_alert_fires_once_and_resolves_once(registry_broker, mqtt_factory):
    broker = registry_broker()
    sub = mqtt_factory(broker).subscribe("alerts/#", qos=1)
    pub = mqtt_factory(broker)
    topic = TELEMETRY.format("temp-007")
    t0 = now_ms() - 60_000
    # threshold 25, hysteresis 2 %: resolves below 24.5
    values = [22.0, 26.0, 27.5, 30.0, 25.5, 24.6, 26.1, 24.51, 24.0, 23.0, 22.0]
    firing_at, resolved_at = 1, 8
    for i, v in enumerate(values):
        assert pub.publish_acked(topic, js({"deviceId": "temp-007", "sensorId": "temp", "value": v, "ts": t0 + i * 1000})) == 0

    # a new excursion last: alerts go out in processing order, so any extra alert from the values
    # above would arrive before this one's
    fence = len(values)
    assert pub.publish_acked(topic, js({"deviceId": "temp-007", "sensorId": "temp", "value": 40,
                                        "ts": t0 + fence * 1000})) == 0

    msgs = sub.wait_messages(3)
    alerts_mqtt = [json.loads(m.payload) for m in msgs[:3]]
    assert [m.topic for m in msgs[:3]] == ["alerts/temp-007"] * 3
    assert [(a["kind"], a["state"], a["value"], a["ts"]) for a in alerts_mqtt] == [
        ("threshold", "firing", 26.0, t0 + firing_at * 1000),
        ("threshold", "resolved", 24.0, t0 + resolved_at * 1000),
        ("threshold", "firing", 40, t0 + fence * 1000)]
    for a in alerts_mqtt:
        assert (a["deviceId"], a["sensorId"], a["limit"], a["unit"], a["location"], a["zone"]) == \
            ("temp-007", "temp", 25, "Cel", "Berlin", "z1")
    assert all(m.qos == 1 for m in msgs)

    # the same records, same ids, in alert.ndjson
    file_alerts = broker.wait_lines("alert", lambda ls: len(ls) >= 3)
    assert file_alerts[:3] == alerts_mqtt
    assert len({a["id"] for a in alerts_mqtt}) == 3
    broker.wait_lines("enriched", lambda ls: len(ls) >= len(values) + 1)
    assert len(broker.lines("alert")) == 3 and len(sub.received()) == 3


# ---- 3: quarantine ----

T = now_ms()     # fixed at import: every case is well inside ts_max_future / ts_max_age of it
TS = T - 30_000


def single(value, **kw):
    return js({"deviceId": "temp-007", "sensorId": "temp", "value": value, "ts": TS, **kw})


QUARANTINE_CASES = [
    # (id, topic, payload, expected reason)
    ("malformed-json", "temp-007", b'{"deviceId":"temp-007","value":', "malformed_payload"),
    ("not-an-object", "temp-007", b"42", "malformed_payload"),
    ("json-string", "temp-007", b'"temp-007 22.5"', "malformed_payload"),
    ("missing-value", "temp-007", js({"deviceId": "temp-007", "ts": TS}), "missing_field"),
    ("no-telemetry-keys", "temp-007", js({"hello": "world"}), "malformed_payload"),
    ("reading-missing-value", "temp-007", js({"deviceId": "temp-007", "ts": TS, "readings": {"temp": {"unit": "Cel"}}}),
     "missing_field"),
    ("string-value", "temp-007", single("22.5"), "wrong_type"),
    ("null-value", "temp-007", single(None), "wrong_type"),
    ("bool-value", "temp-007", single(True), "wrong_type"),
    ("non-finite", "temp-007", b'{"deviceId":"temp-007","value":1e999,"ts":%d}' % TS, "non_finite_value"),
    ("no-device-anywhere", "nodev", js({"value": 20, "ts": TS}), "missing_field"),
    ("unknown-device", "nobody-42", js({"deviceId": "nobody-42", "value": 20, "ts": TS}), "unknown_device"),
    ("unknown-sensor", "temp-007", single(20, sensorId="hum"), "unknown_sensor"),
    ("no-default-sensor", "gw-lab-1", js({"deviceId": "gw-lab-1", "value": 1, "ts": TS}), "unknown_sensor"),
    ("below-min", "temp-007", single(-60), "out_of_range"),
    ("above-max", "temp-007", single(150.5), "out_of_range"),
    ("ts-future", "temp-007", single(20, ts=T + 3_600_000), "ts_future"),
    ("ts-too-old", "temp-007", single(20, ts=T - 8 * DAY_MS), "ts_too_old"),
    ("bad-rfc3339", "temp-007", single(20, ts="2026-13-01T00:00:00Z"), "bad_timestamp"),
    ("negative-ts", "temp-007", single(20, ts=-5), "bad_timestamp"),
    ("ts-after-9999", "temp-007", single(20, ts=1e15), "bad_timestamp"),
    ("ts-boolean", "temp-007", single(20, ts=True), "bad_timestamp"),
    ("identity-mismatch", "d1", single(20), "identity_mismatch"),
    ("duplicate", "temp-007", single(21.25, ts=TS - 1), "duplicate"),
    ("oversized", "temp-007", b'{"deviceId":"temp-007","value":1,"pad":"' + b"x" * 5000 + b'"}', "oversized_payload"),
    ("too-many-readings", "temp-007",
     js({"deviceId": "temp-007", "ts": TS, "readings": {f"s{i}": i for i in range(65)}}), "too_many_readings"),
    ("id-with-plus", "temp-007", js({"deviceId": "temp+007", "value": 1, "ts": TS}), "id_invalid"),
    ("id-too-long", "temp-007", js({"deviceId": "x" * 64, "value": 1, "ts": TS}), "id_invalid"),
    ("id-control-char", "temp-007", js({"deviceId": "temp\u0001007", "value": 1, "ts": TS}), "id_invalid"),
    ("id-not-a-string", "temp-007", js({"deviceId": 7, "value": 1, "ts": TS}), "wrong_type"),
    ("senml-vs", "temp-007", js([{"bn": "temp-007:", "bt": TS / 1000, "n": "temp", "vs": "hot"}]), "wrong_type"),
    ("senml-no-name", "temp-007", js([{"v": 20, "t": TS / 1000}]), "missing_field"),
    ("senml-must-understand", "temp-007", js([{"bn": "temp-007:", "n": "temp", "v": 1, "x_": 1}]), "malformed_payload"),
    ("empty-array", "temp-007", b"[]", "malformed_payload"),
    ("deeply-nested", "temp-007", b"[" * 1100 + b"]" * 1100, "malformed_payload"),
    ("binary-garbage", "temp-007", b"\x00\xff\xfe\x80\x01garbage\xc3", "malformed_payload"),
    ("duplicate-key", "temp-007", b'{"deviceId":"temp-007","value":1,"value":2}', "malformed_payload"),
    ("trailing-data", "temp-007", b'{"deviceId":"temp-007","value":1}{"value":2}', "malformed_payload"),
    ("value-and-readings", "temp-007", js({"deviceId": "temp-007", "value": 1, "readings": {"temp": 1}}),
     "malformed_payload"),
    ("unit-mismatch", "temp-007", single(1000, unit="Pa"), "unit_mismatch"),
]


@pytest.fixture(scope="module")
def quarantine_env(module_broker_factory, module_mqtt_factory):
    """One broker for the whole table: max_payload_bytes 4k for the oversized case, and a second
    capture filter whose topics have no device level."""
    reg = copy_registry(module_broker_factory.root)
    broker = module_broker_factory({"registry_file": str(reg), "max_payload_bytes": "4k",
                                    "topics": "devices/+/telemetry nodev/#"})
    broker.start()
    broker.wait_log("loaded: ")
    env = {"broker": broker, "clients": {}}
    yield env


@pytest.mark.parametrize("case,topic,payload,reason", QUARANTINE_CASES, ids=[c[0] for c in QUARANTINE_CASES])
def test_bad_payload_is_quarantined(quarantine_env, module_mqtt_factory, case, topic, payload, reason):
    broker = quarantine_env["broker"]
    client = module_mqtt_factory(broker, client_id=f"bad-{case}")
    quarantine_env["clients"][case] = client
    full_topic = topic if topic == "nodev" else TELEMETRY.format(topic)
    if case == "duplicate":     # the first copy is accepted, the repeat refused
        assert client.publish_acked(full_topic, payload) == 0
    assert client.publish_acked(full_topic, payload) == 0      # the broker accepts it as MQTT

    lines = broker.wait_lines("quarantine", lambda ls: by_client(ls, client), what=f"quarantine line of {case}")
    [q] = by_client(lines, client)
    assert q["reason"] == reason, q
    assert q["detail"]
    assert q["topic"] == full_topic and q["clientId"] == client.client_id
    assert len(q["id"]) == 16
    if reason == "oversized_payload":
        assert q["payloadBytes"] == len(payload) and payload.startswith(q["payload"].encode())
    elif "payloadHex" in q:
        assert bytes.fromhex(q["payloadHex"]) == payload
    else:
        assert q["payload"].encode() == payload
    assert not client.disconnects


def test_bad_publishers_stay_connected_and_broker_keeps_serving(quarantine_env, module_mqtt_factory):
    broker = quarantine_env["broker"]
    clients = quarantine_env["clients"]
    good = module_mqtt_factory(broker, client_id="good-after-bad")
    assert good.publish_acked(TELEMETRY.format("temp-007"), single(23.5, ts=TS + 1)) == 0
    enriched = broker.wait_lines("enriched", lambda ls: any(l["ts"] == TS + 1 for l in ls))
    assert any(l["ts"] == TS + 1 and l["value"] == 23.5 and l["location"] == "Berlin" for l in enriched)

    # each bad publisher produced exactly one quarantine record and nothing else
    quarantine = broker.wait_lines("quarantine", lambda ls: len(ls) >= len(clients))
    for case, client in clients.items():
        assert len(by_client(quarantine, client)) == 1, case
    accepted = [l for l in enriched if l["ts"] != TS + 1]
    assert len(accepted) == (1 if "duplicate" in clients else 0), accepted   # the duplicate's first copy

    # nobody was disconnected, and every bad publisher can still publish and be served
    for case, client in clients.items():
        assert client.connected and not client.disconnects, case
        assert client.publish_acked("other/ping", case.encode()) == 0
    # the stats count them by reason
    stats = StatsWatcher(module_mqtt_factory(broker)).wait(lambda s: s["quarantined"] >= len(quarantine))
    want = {}
    for case, topic, payload, reason in QUARANTINE_CASES:
        if case in clients:
            want[reason] = want.get(reason, 0) + 1
    assert stats["quarantined"] == len(quarantine)
    assert stats["quarantine_reasons"] == want


def test_empty_payload_is_quarantined(registry_broker, mqtt_factory):
    """Its own broker: under a sanitizer build the empty payload aborts the broker."""
    broker = registry_broker()
    client = mqtt_factory(broker)
    assert client.publish_acked(TELEMETRY.format("temp-007"), b"") == 0
    [q] = broker.wait_lines("quarantine", lambda ls: len(ls) >= 1)
    assert (q["reason"], q["payload"], q["clientId"]) == ("malformed_payload", "", client.client_id)
    assert client.publish_acked(TELEMETRY.format("temp-007"), single(20, ts=now_ms() - 100)) == 0
    broker.wait_lines("enriched", lambda ls: len(ls) >= 1)
    assert broker.running() and not client.disconnects


def test_identity_spoof_is_quarantined(registry_broker, mqtt_factory):
    broker = registry_broker(identity="username")
    spoofer = mqtt_factory(broker, username="intruder")
    owner = mqtt_factory(broker, username="temp-007")
    assert spoofer.publish_acked(TELEMETRY.format("temp-007"), single(20, ts=now_ms() - 500)) == 0
    assert owner.publish_acked(TELEMETRY.format("temp-007"), single(21, ts=now_ms() - 400)) == 0
    [q] = broker.wait_lines("quarantine", lambda ls: len(ls) >= 1)
    assert q["reason"] == "identity_spoof" and q["clientId"] == spoofer.client_id and q["username"] == "intruder"
    [e] = broker.wait_lines("enriched", lambda ls: len(ls) >= 1)
    assert e["value"] == 21 and e["location"] == "Berlin"
    assert not spoofer.disconnects and spoofer.publish_acked("other/x", b"still here") == 0


# ---- 4: aggregates ----

def test_tumbling_window_aggregates(registry_broker, mqtt_factory):
    broker = registry_broker(window="2s", window_lateness="0s")
    pub = mqtt_factory(broker)
    w = 2000
    base = (now_ms() - 60_000) // w * w          # a window boundary a minute ago
    # (offset from base, value); windows [0,2s) [2s,4s) [6s,8s): one window empty in between
    readings = [(100, 10.0), (700, 12.0), (1999, 14.5),
                (2000, 20.0), (3500, -2.0),
                (6100, 5.0), (6900, 7.0), (7000, 9.0)]
    late = (1500, 99.0)                          # arrives after its window closed
    sent = readings[:5] + [late] + readings[5:]
    for off, v in sent:
        assert pub.publish_acked(TELEMETRY.format("temp-007"),
                                 js({"deviceId": "temp-007", "sensorId": "temp", "value": v, "ts": base + off})) == 0

    # the last window closes by processing time once the series is quiet
    aggs = broker.wait_lines("aggregate", lambda ls: len(ls) >= 3, timeout=60)
    assert len(aggs) == 3
    want = {}
    for off, v in readings:
        want.setdefault(off // w * w, []).append((off, v))
    for agg, (start, vals) in zip(aggs, sorted(want.items())):
        values = [v for _, v in vals]
        assert agg["deviceId"] == "temp-007" and agg["sensorId"] == "temp"
        assert agg["windowStart"] == base + start and agg["windowEnd"] == base + start + w
        assert agg["count"] == len(values)
        assert agg["min"] == min(values) and agg["max"] == max(values)
        assert agg["sum"] == pytest.approx(sum(values))
        assert agg["avg"] == pytest.approx(sum(values) / len(values))
        assert agg["firstTs"] == base + vals[0][0] and agg["lastTs"] == base + vals[-1][0]
        assert (agg["unit"], agg["location"], agg["zone"]) == ("Cel", "Berlin", "z1")
    assert len({a["id"] for a in aggs}) == 3

    enriched = broker.lines("enriched")
    [late_line] = [l for l in enriched if l["ts"] == base + late[0]]
    assert late_line.get("late") is True         # stored, but not counted in its closed window


# ---- 5: registry reload ----

def _registry_with(location):
    reg = json.loads(REGISTRY_EXAMPLE.read_text())
    reg["devices"][0]["location"] = location
    assert reg["devices"][0]["deviceId"] == "temp-007"
    return json.dumps(reg, indent=1)


def test_registry_reload(registry_broker, mqtt_factory):
    broker = registry_broker()
    pub = mqtt_factory(broker)
    path = broker.registry_path
    topic = TELEMETRY.format("temp-007")
    seq = iter(range(1000))
    base = now_ms() - 100_000

    def location_now():
        ts = base + next(seq)
        assert pub.publish_acked(topic, single(20, ts=ts)) == 0
        lines = broker.wait_lines("enriched", lambda ls: any(l["ts"] == ts for l in ls))
        return next(l for l in lines if l["ts"] == ts)["location"]

    def loads():
        return broker.log().count(f"registry {path} loaded")

    assert location_now() == "Berlin"

    # SIGHUP re-reads the file even when nothing changed
    n = loads()
    broker.sighup()
    wait_until(lambda: loads() > n, what="registry reload after SIGHUP")
    assert location_now() == "Berlin"

    # a changed file and SIGHUP
    n = loads()
    write_registry(path, _registry_with("Paris"))
    broker.sighup()
    wait_until(lambda: loads() > n, what="registry reload after SIGHUP")
    assert location_now() == "Paris"

    # a broken file keeps the snapshot in use, with a warning
    write_registry(path, '{"devices": [ {"deviceId": "temp-007", ')
    broker.sighup()
    broker.wait_log(f"registry {path} not reloaded")
    assert location_now() == "Paris"
    assert broker.running()

    # a file change alone is picked up too (inotify or the poll), no signal
    n = loads()
    write_registry(path, _registry_with("Lisbon"))
    wait_until(lambda: loads() > n, what="registry reload after the file changed")
    assert location_now() == "Lisbon"

    # a registry that removes the device: its next readings are quarantined as unknown
    reg = json.loads(REGISTRY_EXAMPLE.read_text())
    reg["devices"] = [d for d in reg["devices"] if d["deviceId"] != "temp-007"]
    n = loads()
    write_registry(path, json.dumps(reg))
    wait_until(lambda: loads() > n, what="registry reload without temp-007")
    assert pub.publish_acked(topic, single(20, ts=base + 999)) == 0
    [q] = broker.wait_lines("quarantine", lambda ls: len(ls) >= 1)
    assert q["reason"] == "unknown_device"
