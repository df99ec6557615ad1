"""The plugin under valgrind memcheck inside Debian's mosquitto: load, traffic (good and bad
payloads, an alert, the registry), SIGTERM. No invalid access, nothing definitely lost."""

import re

import pytest

from conftest import ASAN_PRELOAD, REGISTRY_EXAMPLE, now_ms

pytestmark = pytest.mark.skipif(bool(ASAN_PRELOAD), reason="valgrind and AddressSanitizer do not mix")


def test_load_traffic_unload_is_valgrind_clean(broker_factory, mqtt_factory):
    broker = broker_factory({"registry_file": str(REGISTRY_EXAMPLE), "metrics_interval": "200ms"})
    vg_log = broker.dir / "valgrind.log"
    broker.wrapper = ["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite", "--error-exitcode=99",
                      f"--log-file={vg_log}"]
    broker.start()
    broker.wait_ready(timeout=120)
    pub = mqtt_factory(broker)
    base = now_ms() - 10_000
    for i in range(60):
        assert pub.publish_acked("devices/temp-007/telemetry",
                                 f'{{"value":{20 + i % 10},"ts":{base + i}}}'.encode()) < 0x80
    for bad in (b"not json", b'{"value":"warm"}', b"", b'[{"n":"x","vs":"a"}]'):
        assert pub.publish_acked("devices/temp-007/telemetry", bad) < 0x80
    broker.wait_lines("enriched", lambda ls: len(ls) >= 60, timeout=120)
    broker.wait_lines("quarantine", lambda ls: len(ls) >= 4, timeout=120)
    broker.wait_lines("alert", lambda ls: len(ls) >= 1, timeout=120)
    pub.close()
    assert broker.stop(timeout=120) == 0, vg_log.read_text()
    report = vg_log.read_text()
    assert re.search(r"ERROR SUMMARY: 0 errors", report), report
    lost = re.search(r"definitely lost: ([\d,]+) bytes", report)
    assert lost is None or lost.group(1) == "0", report
