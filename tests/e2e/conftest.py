"""Fixtures and helpers for the end-to-end suites: a real mosquitto with the built plugin, real
MQTT clients (paho-mqtt), the operator tool, and the file sink's NDJSON outputs.

    def test_x(broker_factory, mqtt_factory):
        broker = broker_factory({"registry_file": REGISTRY_EXAMPLE})   # plugin_opt_* without the prefix
        broker.start()                                                  # waits for the port
        pub = mqtt_factory(broker)                                      # connected paho client
        pub.publish("devices/d1/telemetry", b'{"value":1}', qos=1).wait()
        lines = broker.wait_lines("enriched", lambda ls: len(ls) >= 1)
        broker.journal("ingest").summary["next_lsn"]

Environment:
    IOTPIPE_PLUGIN          the plugin (default /tmp/b/mosquitto_iotpipe.so)
    IOTPIPE_JOURNAL_TOOL    the operator tool (default: iotpipe-journal beside the plugin)
    IOTPIPE_ASAN_PRELOAD    path of libasan.so: mosquitto runs with it preloaded (ASan builds)
    IOTPIPE_E2E_KEEP        set: keep the test directories (their paths are printed)

Deadlines below only keep a broken run from hanging; no test asserts on how long anything took.
"""

import atexit
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

REPO = Path(__file__).resolve().parents[2]
REGISTRY_EXAMPLE = REPO / "conf" / "registry.example.json"
PLUGIN = Path(os.environ.get("IOTPIPE_PLUGIN", "/tmp/b/mosquitto_iotpipe.so"))
JOURNAL_TOOL = Path(os.environ.get("IOTPIPE_JOURNAL_TOOL", str(PLUGIN.parent / "iotpipe-journal")))
MOSQUITTO = shutil.which("mosquitto", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
ASAN_PRELOAD = os.environ.get("IOTPIPE_ASAN_PRELOAD")
SANITIZED = bool(ASAN_PRELOAD)     # the plugin is an ASan+UBSan build (UBSan aborts on a finding)

DEADLINE = 60.0          # generous: only there so a broken run fails instead of hanging
STATS_TOPIC = "$SYS/broker/iotpipe/stats"
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer")

# mosquitto started as root drops to this user before it loads plugins
try:
    _MOSQ_PW = pwd.getpwnam("mosquitto")
    MOSQ_UID, MOSQ_GID = _MOSQ_PW.pw_uid, _MOSQ_PW.pw_gid
except KeyError:          # not root / no such user: the broker keeps our identity
    MOSQ_UID, MOSQ_GID = os.getuid(), os.getgid()


def now_ms():
    return int(time.time() * 1000)


def wait_until(pred, timeout=DEADLINE, interval=0.05, what="condition"):
    """Polls pred() until it returns something truthy and returns that; fails after timeout."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_shared_dir(path):
    """A directory the broker (user mosquitto) may write into."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if os.getuid() == 0:
        os.chown(path, MOSQ_UID, MOSQ_GID)
    path.chmod(0o755)
    return path


def read_ndjson(path):
    """Complete lines of an NDJSON file as dicts (a line still being written is left out)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    end = data.rfind(b"\n")
    if end < 0:
        return []
    out = []
    for no, line in enumerate(data[:end].split(b"\n"), 1):
        try:
            out.append(json.loads(line))
        except ValueError as e:
            raise AssertionError(f"{path}:{no}: not a JSON line ({e}): {line[:300]!r}") from None
    return out


class JournalView:
    """What the operator tool prints for one journal."""

    def __init__(self, text):
        self.records, self.cursors, self.summary = [], {}, None
        for line in text.splitlines():
            o = json.loads(line)
            if "summary" in o:
                self.summary = o["summary"]
            elif "cursor" in o:
                self.cursors[o["cursor"]] = o
            else:
                self.records.append(o)


# every broker process this session started, so an interrupted run still cleans up
_LIVE = set()


@atexit.register
def _kill_leftovers():
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Broker:
    """One mosquitto process with the plugin, its conf, log and directories under `root`.

    options are the plugin_opt_* settings without the prefix; a value None leaves the option out
    (so a default of this class is dropped). `extra` is raw mosquitto.conf text appended after
    the plugin options."""

    DEFAULTS = {"journal_max_bytes": "16M", "metrics_interval": "500ms"}

    def __init__(self, root, options=None, extra="", name="broker"):
        self.dir = make_shared_dir(Path(root) / name)
        self.port = free_port()
        self.options = dict(self.DEFAULTS)
        self.options["journal_dir"] = str(self.dir / "journal")
        self.options.update(options or {})
        self.extra = extra
        self.conf = self.dir / "mosquitto.conf"
        self.log_path = self.dir / "mosquitto.log"
        self.proc = None
        self.returncode = None
        self.expect_up = False      # started by us and not stopped or killed by us since
        self._log_offset = 0
        self.wrapper = []           # a command mosquitto runs under, e.g. valgrind
        self.write_conf()

    # ---- paths ----
    @property
    def journal_dir(self):
        return Path(self.options["journal_dir"])

    @property
    def out_dir(self):
        fs = self.options.get("file_sink_dir")
        return Path(fs) if fs else self.journal_dir / "out"

    # ---- conf ----
    def write_conf(self):
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "log_dest stderr",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            # subscribers of the big tests must not lose QoS 1 messages to the default queue bound
            "max_queued_messages 100000",
            f"plugin {PLUGIN}",
        ]
        for k, v in self.options.items():
            if v is not None:
                lines.append(f"plugin_opt_{k} {v}".rstrip())
        if self.extra:
            lines.append(self.extra)
        self.conf.write_text("\n".join(lines) + "\n")

    # ---- process ----
    def env(self):
        env = dict(os.environ)
        if ASAN_PRELOAD:
            env["LD_PRELOAD"] = ASAN_PRELOAD
            env["ASAN_OPTIONS"] = "detect_leaks=0"
        return env

    def start(self, wait=True):
        """Starts mosquitto; with wait, returns once the port accepts connections and fails if the
        process exited instead (use start(wait=False) + wait_exit() for refusals)."""
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        self.write_conf()
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.wrapper + [MOSQUITTO, "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                         cwd="/", start_new_session=True)   # "/" as for a daemon
        _LIVE.add(self.proc)
        self.returncode = None
        self.expect_up = True
        if wait:
            if not self.wait_ready():
                raise AssertionError(f"mosquitto exited with {self.proc.returncode} at start:\n{self.log()}")
        return self

    def wait_ready(self, timeout=DEADLINE):
        """True once the port accepts a connection, False if the process exited first."""
        def ready():
            if self.proc.poll() is not None:
                return "exited"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return "up"
            except OSError:
                return None
        return wait_until(ready, timeout, what=f"mosquitto on port {self.port}") == "up"

    def wait_exit(self, timeout=DEADLINE):
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"mosquitto still running after {timeout:.0f}s:\n{self.log()}")
        _LIVE.discard(self.proc)
        return self.returncode

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self):
        """Fails at once if the broker died on its own (a crash, a sanitizer abort)."""
        if self.expect_up and self.proc.poll() is not None:
            self.expect_up = False
            raise AssertionError(f"mosquitto exited on its own with {self.proc.returncode}; log tail:\n"
                                 + "\n".join(self.log().splitlines()[-40:]))

    def stop(self, timeout=DEADLINE):
        """SIGTERM and wait: the broker's exit status."""
        self.expect_up = False
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.wait_exit(timeout)
        except AssertionError:
            self.kill()
            raise

    def kill(self):
        """kill -9 and wait."""
        self.expect_up = False
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.returncode = self.proc.wait()
            _LIVE.discard(self.proc)
        return self.returncode

    def sighup(self):
        self.proc.send_signal(signal.SIGHUP)

    def restart(self):
        self.stop()
        return self.start()

    # ---- log ----
    def log(self, since_start=False):
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        if since_start:
            data = data[self._log_offset:]
        return data.decode("utf-8", "replace")

    def wait_log(self, text, timeout=DEADLINE, since_start=True):
        def found():
            if text in self.log(since_start):
                return True
            self.check_alive()
            return False
        return wait_until(found, timeout, what=f"log line {text!r}")

    def sanitizer_reports(self):
        return [l for l in self.log().splitlines() if any(m in l for m in SANITIZER_MARKS)]

    # ---- outputs ----
    def lines(self, kind):
        """Every line the file sink wrote for kind (rotated files first, in rotation order)."""
        def rotation(p):
            try:
                return int(p.stem.rsplit("-", 1)[1])
            except (IndexError, ValueError):
                return 0
        rotated = sorted(self.out_dir.glob(f"{kind}-*.ndjson"), key=rotation)
        out = []
        for p in rotated + [self.out_dir / f"{kind}.ndjson"]:
            out.extend(read_ndjson(p))
        return out

    def wait_lines(self, kind, pred, timeout=DEADLINE, what=None):
        """Waits until pred(lines of kind) holds; returns the lines."""
        box = {}

        def check():
            box["lines"] = self.lines(kind)
            if pred(box["lines"]):
                return True
            self.check_alive()
            return False
        try:
            wait_until(check, timeout, interval=0.1, what=what or f"{kind} lines")
        except AssertionError as e:
            raise AssertionError(f"{e}; {kind} has {len(box.get('lines', []))} lines; log tail:\n"
                                 + "\n".join(self.log().splitlines()[-30:])) from None
        return box["lines"]

    def journal(self, name, cursors_only=False):
        """The operator tool's view of journal_dir/<name> (ingest or outbox)."""
        args = [str(JOURNAL_TOOL)] + (["-c"] if cursors_only else []) + [str(self.journal_dir / name)]
        res = subprocess.run(args, capture_output=True, text=True, timeout=DEADLINE)
        assert res.returncode == 0, f"{' '.join(args)} failed ({res.returncode}): {res.stderr}"
        return JournalView(res.stdout)


class Mqtt:
    """A paho-mqtt client with its network loop on a thread, recording what it receives."""

    def __init__(self, port, client_id=None, v5=False, username=None, max_inflight=20):
        self.port = port
        self.client_id = client_id or f"e2e-{uuid.uuid4().hex[:12]}"
        self.v5 = v5
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                  protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
        if username is not None:
            self.client.username_pw_set(username)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)
        self.cond = threading.Condition()
        self.messages = []          # paho MQTTMessage, in arrival order
        self.acks = {}              # mid -> PUBACK reason code (int)
        self.disconnects = []       # reason codes of disconnects we did not ask for
        self.connected = False
        self.closing = False
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.subacks = {}

    # callbacks run on paho's thread
    def _on_connect(self, client, userdata, flags, rc, props):
        with self.cond:
            self.connected = not rc.is_failure
            self.connect_rc = rc
            self.cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, rc, props):
        with self.cond:
            self.connected = False
            if not self.closing:
                self.disconnects.append(rc)
            self.cond.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def _on_publish(self, client, userdata, mid, rc, props):
        with self.cond:
            self.acks[mid] = rc.value if hasattr(rc, "value") else int(rc)
            self.cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, rcs, props):
        with self.cond:
            self.subacks[mid] = rcs
            self.cond.notify_all()

    def _wait(self, pred, timeout, what):
        end = time.monotonic() + timeout
        with self.cond:
            while not pred():
                if self.disconnects and not self.connected:
                    raise AssertionError(f"{self.client_id}: disconnected ({self.disconnects[-1]}) while waiting for {what}")
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.client_id}: timed out after {timeout:.0f}s waiting for {what}")
                self.cond.wait(min(left, 0.5))

    def connect(self, timeout=DEADLINE):
        self.client.connect("127.0.0.1", self.port, keepalive=60)
        self.client.loop_start()
        self._wait(lambda: self.connected, timeout, "CONNACK")
        return self

    def subscribe(self, topic, qos=1, timeout=DEADLINE):
        rc, mid = self.client.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, rc
        self._wait(lambda: mid in self.subacks, timeout, f"SUBACK for {topic}")
        return self

    def publish(self, topic, payload, qos=1, retain=False):
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish failed: {info.rc}"
        return info

    def publish_acked(self, topic, payload, qos=1, retain=False, timeout=DEADLINE):
        """Publishes and waits for the PUBACK; returns its reason code (0 = success)."""
        info = self.publish(topic, payload, qos, retain)
        self._wait(lambda: info.mid in self.acks, timeout, f"PUBACK for mid {info.mid}")
        with self.cond:
            return self.acks[info.mid]

    def wait_acks(self, mids, timeout=DEADLINE):
        """Waits for the PUBACK of every mid (each used once); returns their reason codes."""
        mids = list(mids)
        seen = [0]

        def done():             # amortized O(1): PUBACKs arrive roughly in publish order
            while seen[0] < len(mids) and mids[seen[0]] in self.acks:
                seen[0] += 1
            return seen[0] == len(mids)
        self._wait(done, timeout, f"{len(mids)} PUBACKs")
        with self.cond:
            return [self.acks[m] for m in mids]

    def wait_messages(self, n, timeout=DEADLINE, topic=None):
        def have():
            return len(self.received(topic)) >= n
        self._wait(have, timeout, f"{n} messages" + (f" on {topic}" if topic else ""))
        return self.received(topic)

    def received(self, topic=None):
        with self.cond:
            return [m for m in self.messages if topic is None or mqtt.topic_matches_sub(topic, m.topic)]

    def close(self):
        self.closing = True
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


# ---- fixtures ----

@pytest.fixture(scope="session", autouse=True)
def _prerequisites():
    missing = [str(p) for p in (PLUGIN, JOURNAL_TOOL) if not p.exists()]
    if MOSQUITTO is None:
        missing.append("mosquitto (Debian package mosquitto)")
    if missing:
        pytest.fail("missing: " + ", ".join(missing) + " (build with cmake -S . -B /tmp/b && make -C /tmp/b, "
                    "or point IOTPIPE_PLUGIN / IOTPIPE_JOURNAL_TOOL at the build)", pytrace=False)


def _new_workdir(tag):
    base = Path(tempfile.mkdtemp(prefix=f"iotpipe-e2e-{tag[:40]}-"))
    base.chmod(0o755)       # mkdtemp makes it 0700: the broker's user must reach its dirs
    return base


def _cleanup_workdir(path):
    if os.environ.get("IOTPIPE_E2E_KEEP"):
        print(f"kept {path}")
        return
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def workdir(request):
    """A fresh directory for one test, reachable by the broker's user."""
    path = _new_workdir(request.node.name.replace("[", "-").replace("]", "").replace("/", "_"))
    yield path
    _cleanup_workdir(path)


class BrokerFactory:
    def __init__(self, root):
        self.root = Path(root)
        self.brokers = []

    def __call__(self, options=None, extra="", name=None):
        b = Broker(self.root, options, extra, name or f"broker{len(self.brokers)}")
        self.brokers.append(b)
        return b

    def shutdown(self):
        """Stops every broker; returns sanitizer reports found in their logs."""
        reports = []
        for b in self.brokers:
            if b.running():
                try:
                    b.stop(timeout=30)
                except AssertionError:
                    b.kill()
            reports += [f"{b.dir.name}: {l}" for l in b.sanitizer_reports()]
        return reports


@pytest.fixture
def broker_factory(workdir):
    f = BrokerFactory(workdir)
    yield f
    reports = f.shutdown()
    if reports:
        pytest.fail("sanitizer reports in the broker log:\n" + "\n".join(reports), pytrace=False)


@pytest.fixture(scope="module")
def module_broker_factory(request):
    """For module-scoped brokers shared by parametrized tests."""
    path = _new_workdir(request.module.__name__.rsplit(".", 1)[-1])
    f = BrokerFactory(path)
    yield f
    reports = f.shutdown()
    _cleanup_workdir(path)
    if reports:
        pytest.fail("sanitizer reports in the broker log:\n" + "\n".join(reports), pytrace=False)


class MqttFactory:
    def __init__(self):
        self.clients = []

    def __call__(self, broker, **kw):
        c = Mqtt(broker.port, **kw)
        self.clients.append(c)
        return c.connect()

    def close_all(self):
        for c in self.clients:
            try:
                c.close()
            except Exception:
                pass


@pytest.fixture
def mqtt_factory():
    f = MqttFactory()
    yield f
    f.close_all()


@pytest.fixture(scope="module")
def module_mqtt_factory():
    f = MqttFactory()
    yield f
    f.close_all()


@pytest.fixture
def small_fs(workdir):
    """small_fs(size) -> a directory on a fresh tmpfs of that size, owned by the broker's user, with
    .grow(size) to make room later. Skips where tmpfs cannot be mounted (needs root)."""
    mounts = []

    class SmallFs(type(Path())):
        def grow(self, size):
            subprocess.run(["mount", "-o", f"remount,size={size}", str(self)], check=True)

    def make(size):
        path = workdir / f"fs{len(mounts)}"
        path.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
        mounts.append(path)
        os.chown(path, MOSQ_UID, MOSQ_GID)
        return SmallFs(path)
    yield make
    for path in mounts:
        # lazy: the broker may still hold files open if the test failed before stopping it
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


class StatsWatcher:
    """Follows the retained stats the plugin publishes every metrics_interval."""

    def __init__(self, client):
        self.client = client.subscribe(STATS_TOPIC, qos=0)

    def latest(self):
        msgs = self.client.received(STATS_TOPIC)
        return json.loads(msgs[-1].payload) if msgs else None

    def wait(self, pred, timeout=DEADLINE, what="stats"):
        """Waits for a stats message (published after now or the retained one) matching pred."""
        def check():
            s = self.latest()
            return s if s is not None and pred(s) else None
        return wait_until(check, timeout, what=what)


@pytest.fixture
def stats_factory(mqtt_factory):
    return lambda broker: StatsWatcher(mqtt_factory(broker))
