#!/usr/bin/env python3
"""Whole-pipeline benchmarks: mosquitto with the iotpipe plugin, a real Kafka (ci/kafka.sh) and a
real PostgreSQL 15 (ci/pg.sh) on this machine, loaded by iotpipe-sim and observed through the
plugin's retained counters on $SYS/broker/iotpipe/stats (metrics_interval 1s).

    tests/bench/pipeline.py sustained [--rates 10000,15000,20000,25000,30000,40000,50000] [--probe-seconds 15] [--seconds 60] [--runs 3]
    tests/bench/pipeline.py latency   [--rate 25000] [--seconds 40] [--runs 3]
    tests/bench/pipeline.py catchup   [--rate 25000] [--outage 60] [--runs 3] [--kill]
    tests/bench/pipeline.py memory    [--series 10000,100000,1000000] [--runs 3]
  common options (after the subcommand): --build DIR (default build/plain),
  --out-dir DIR (plots; default docs/benchmarks), --warmup S (unreported load on a fresh pipeline
  first, so Kafka's JVM is warm; default 10, 0: none), --drain-timeout S (default 120),
  --keep (keep the work dir: broker/sim logs, CSVs, gnuplot scripts, service data; its path is printed)

stdout carries only markdown rows "| what | figure | range | note |" (figures are medians over the
runs, ranges min–max); progress goes to stderr. Every process and directory the script starts is
removed at the end, also on Ctrl-C, SIGTERM or an exception. Each run gets a fresh broker and journal,
the PostgreSQL tables truncated and its own Kafka topic for enriched records.

sustained  Kafka and PostgreSQL on, QoS 1, 1000 registered devices over 8 connections
           (`iotpipe-sim --devices 1000 --connections 8 --qos 1 --rate R --duration D`). A ladder of
           --probe-seconds probes finds the highest rate held (see judge()): the sim sends >= 97 % of
           the target in the time given, and the backlog's minimum over the last third of the load
           exceeds its minimum over the middle third by less than 1 % of what was received in between
           plus 0.25 s of ingest (the sinks make the backlog swing by a second of ingest and more).
           The ladder stops after two rates in a row are not held. Then --runs runs of --seconds at
           that rate; after each, the backlog drains (bounded) and the run reconciles: acked by the
           sim vs distinct records in the run's Kafka topic (high - low watermarks; ids are read when
           there are more records than acks) vs rows in `metrics`, and reports where the CPU went
           during the load, per message, by component (cpu_by_component). Plot: received/s,
           kafka_delivered/s, pg_written/s and the backlog over time, last run.
latency    The same pipeline at --rate with `--spike 0.002`, the registry made with `--threshold 23`
           so threshold alerts reach MQTT. build/plain/tests/bench_latency runs alongside (`--kafka
           BOOTSTRAP --mqtt PORT --pg CONNINFO --pg-devices 20 --seconds S+5 --skip 5`; the load starts
           at its "ready" line; devices.enriched is recreated empty before each run): publish -> MQTT
           alert, publish -> Kafka record consumed, publish -> row visible in `metrics`, each p50, p99,
           p99.9 as the median over runs. Plot: the CDF of each probe over all runs, log x.
catchup    The same pipeline at --rate for 20 s + outage + max(30, outage) s; 20 s in, PostgreSQL is
           stopped (`ci/pg.sh stop`, a fast shutdown; --kill: kill -9) for --outage s, then started.
           From the samples: the pg backlog at restart, the drain time (restart until outbox
           pg.pending <= one second of ingest), the catch-up rate (pg_written/s from the last sample
           before the writes resume to the end of the drain; samples come once a second) and its
           ratio to the ingest rate (goal >= 3). Reconciles at the end. Plot: pg_written/s,
           received/s and the pg backlog.
memory     No Kafka/PostgreSQL: the plugin with `unknown_devices accept` and the default file sink.
           Per N, a fresh broker: mosquitto's RssAnon 3 s after start, then `iotpipe-sim --devices N
           --count 2N --qos 1 --connections 8` (one sensor "temp" each), wait until `processed` = sent,
           3 s, RssAnon again: (after - before) / N bytes per series (goal <= 256). The journals are
           mmapped files (RssFile), not in RssAnon. Plot: bytes per series against N.

Backlog = (journaled - processed) + max(outbox kafka.pending, outbox pg.pending). The ingest journal's
processor.pending is not used: it counts from the processor's checkpointed cursor, which moves only at
checkpoints (every 5 s and more), so it reads up to 5 s of ingest even when nothing waits.
"""

import argparse
import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
from services import KafkaBroker, PgCluster, free_port  # noqa: E402

STATS_TOPIC = "$SYS/broker/iotpipe/stats"
MOSQUITTO = shutil.which("mosquitto", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
DEVICES, CONNECTIONS = 1000, 8


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def row(what, figure, spread="", note=""):
    print(f"| {what} | {figure} | {spread} | {note} |", flush=True)


def med(xs, fmt="{:.0f}"):
    return fmt.format(statistics.median(xs))


def spread(xs, fmt="{:.0f}"):
    return f"{fmt.format(min(xs))}–{fmt.format(max(xs))}"


def pending(s, reader):
    return s.get("outbox", {}).get(reader, {}).get("pending", 0)


def backlog(s):
    return (s["journaled"] - s["processed"]) + max(pending(s, "kafka"), pending(s, "pg"))


def drained(s):
    return s["processed"] == s["journaled"] and pending(s, "kafka") == 0 and pending(s, "pg") == 0


class Bench:
    """The work directory, the shared services and every process started, cleaned up on exit."""

    def __init__(self, args):
        self.args = args
        self.build = Path(args.build).resolve()
        self.out_dir = Path(args.out_dir).resolve()
        self.procs = []
        self.stack = contextlib.ExitStack()
        self.pg = self.kafka = None
        self.pg_url = None
        try:
            pw = pwd.getpwnam("mosquitto")
            self.mosq_ids = (pw.pw_uid, pw.pw_gid) if os.getuid() == 0 else None
        except KeyError:
            self.mosq_ids = None

    def __enter__(self):
        for f in ("mosquitto_iotpipe.so", "iotpipe-sim"):
            if not (self.build / f).exists():
                raise SystemExit(f"{self.build / f} missing: run bash ci/build.sh plain")
        self.work = Path(tempfile.mkdtemp(prefix="iotpipe-bench-pipeline-"))
        self.stack.callback(self._remove_work)
        self.shared_dir(self.work)
        self.stack.callback(self._kill_procs)
        log(f"work dir {self.work}")
        return self

    def __exit__(self, *exc):
        self.stack.close()

    def _remove_work(self):
        if self.args.keep:
            log(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    def _kill_procs(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    def shared_dir(self, path):
        """A directory the broker (user mosquitto once it dropped root) may write into."""
        path.mkdir(parents=True, exist_ok=True)
        if self.mosq_ids:
            os.chown(path, *self.mosq_ids)
        path.chmod(0o755)
        return path

    def spawn(self, argv, **kw):
        """A child in its own session (Ctrl-C reaches only us; we end it), killed at exit."""
        p = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def start_pg(self):
        self.pg = PgCluster(self.work / "pg", free_port())
        log(f"starting PostgreSQL on port {self.pg.port}")
        self.pg.start()
        self.stack.callback(self.pg.stop)
        self.pg_url = self.pg.url

    def start_kafka(self):
        self.kafka = KafkaBroker(self.work / "kafka", free_port(span=2))
        log(f"starting Kafka on port {self.kafka.port}")
        self.kafka.start()
        self.stack.callback(self.kafka.stop)

    def registry(self, threshold=None):
        path = self.work / f"registry-{threshold or 'default'}.json"
        if not path.exists():
            extra = ["--threshold", threshold] if threshold else []
            argv = [self.build / "iotpipe-sim", "--devices", DEVICES, "--registry", path, *extra]
            subprocess.run([str(a) for a in argv], check=True, stdout=subprocess.DEVNULL)
        return path

    def plot(self, name, script):
        """Runs a gnuplot script (kept in the work dir) writing out_dir/name.png."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        png = self.out_dir / f"{name}.png"
        gp = self.work / f"{name}.gp"
        gp.write_text(f'set terminal pngcairo noenhanced size 1100,750 font ",10"\nset output "{png}"\n'
                      'set grid\nset key top left\n' + script)
        res = subprocess.run(["gnuplot", str(gp)], capture_output=True, text=True)
        if res.returncode != 0:
            log(f"gnuplot failed for {name}: {res.stderr.strip()}")
        else:
            log(f"plot {png}")


class Broker:
    """One mosquitto with the plugin, in its own directory under the work dir."""

    def __init__(self, bench, name, options):
        self.bench = bench
        self.dir = bench.shared_dir(bench.work / name)
        self.port = free_port()
        self.log_path = self.dir / "mosquitto.log"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "max_queued_messages 100000",
                 f"plugin {bench.build / 'mosquitto_iotpipe.so'}",
                 f"plugin_opt_journal_dir {self.dir / 'journal'}", "plugin_opt_journal_max_bytes 8G",
                 "plugin_opt_metrics_interval 1s"]
        lines += [f"plugin_opt_{k} {v}" for k, v in options.items() if v is not None]
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        with open(self.log_path, "ab") as out:
            self.proc = bench.spawn([MOSQUITTO, "-c", self.conf], stdout=out, stderr=subprocess.STDOUT, cwd="/")
        deadline = time.monotonic() + 60
        while True:
            self.check_alive()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto not listening on {self.port} after 60 s")
            time.sleep(0.1)

    def log_tail(self, n=30):
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def check_alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {self.proc.returncode}; log tail:\n{self.log_tail()}")

    def rss_anon(self):
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"^RssAnon:\s+(\d+) kB", status, re.M).group(1)) * 1024

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                log("mosquitto did not stop within 60 s: killed")
                self.proc.kill()
                self.proc.wait()


class Stats:
    """Records every $SYS stats message with its arrival time (time.monotonic())."""

    def __init__(self, broker):
        self.broker = broker
        self.samples = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-stats-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(STATS_TOPIC, 0)
        self.client.on_message = lambda c, u, m: self.samples.append((time.monotonic(), json.loads(m.payload)))
        self.client.connect("127.0.0.1", broker.port, 60)
        self.client.loop_start()

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()

    def wait(self, pred, timeout, what, after=0.0):
        """The first sample newer than `after` for which pred holds; None after timeout."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            self.broker.check_alive()
            samples = self.samples[seen:]
            seen += len(samples)
            for t, s in samples:
                if t > after and pred(s):
                    return t, s
            time.sleep(0.2)
        log(f"gave up after {timeout:.0f} s waiting for {what}")
        return None


class Sim:
    """iotpipe-sim in the background; wait() returns its summary line as numbers."""

    def __init__(self, bench, port, args, name, seconds=None):
        self.name, self.seconds = name, seconds
        self.err = open(bench.work / f"{name}.sim.log", "wb")
        self.t0 = time.monotonic()
        self.proc = bench.spawn([bench.build / "iotpipe-sim", "-p", port, "--quiet", *args],
                                stdout=subprocess.PIPE, stderr=self.err)

    def wait(self, timeout):
        out, _ = self.proc.communicate(timeout=timeout)
        self.t1 = time.monotonic()
        self.err.close()
        last = out.decode().strip().splitlines()[-1:] or [""]
        res = {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", last[0])}
        if "acked" not in res:
            raise RuntimeError(f"iotpipe-sim ({self.name}) exited {self.proc.returncode} without a summary")
        if self.seconds:        # what it sent in the time it was given (its own rate counts connecting and the fence too)
            res["achieved"] = res["sent"] / self.seconds
        log(f"sim: {last[0]}")
        return res


# ---- PostgreSQL and Kafka look-ups ----

def pg_query(url, sql):
    with psycopg.connect(url, autocommit=True) as c:
        return c.execute(sql).fetchall() if sql.lstrip().upper().startswith("SELECT") else c.execute(sql)


def pg_reset(url):
    if pg_query(url, "SELECT to_regclass('metrics') IS NOT NULL")[0][0]:
        pg_query(url, "TRUNCATE metrics, alerts, quarantine, metrics_agg")


def kafka_counts(bootstrap, topic, acked):
    """(records, distinct ids) in topic: ids are read only when there are more records than acks."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}", "log_level": 3,
                  "enable.auto.commit": False, "allow.auto.create.topics": False})
    try:
        md = c.list_topics(topic, timeout=10).topics.get(topic)
        parts = [] if md is None or md.error else \
            [(p, *c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)) for p in md.partitions]
        total = sum(hi - lo for _, lo, hi in parts)
        if total <= acked:
            return total, total
        log(f"Kafka has {total} records for {acked} acks: reading their ids")
        c.assign([TopicPartition(topic, p, lo) for p, lo, hi in parts if hi > lo])
        ids, left, deadline = set(), total, time.monotonic() + 600
        while left > 0 and time.monotonic() < deadline:
            for m in c.consume(10000, 1.0):
                if not m.error():
                    left -= 1
                    hid = dict(m.headers() or []).get("id")      # the record id, as in the JSON
                    ids.add(hid.decode() if hid else json.loads(m.value())["id"])
        return total, len(ids)
    finally:
        c.close()


def kafka_recreate(bootstrap, topic, partitions=4):
    """Deletes topic if it exists and creates it empty (for a probe that reads a fixed topic name)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    if topic in admin.list_topics(timeout=10).topics:
        admin.delete_topics([topic], operation_timeout=30)[topic].result()
    deadline = time.monotonic() + 60
    while True:
        try:
            admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=30)[topic].result()
            return
        except Exception as e:       # still being deleted: try again
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot recreate Kafka topic {topic}: {e}") from None
            time.sleep(0.5)


def kafka_delete(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    with contextlib.suppress(Exception):
        admin.delete_topics([topic], operation_timeout=30)[topic].result()


# ---- one run of the pipeline ----

class PipelineRun:
    """A fresh broker and journal on the shared services, its stats, its own enriched topic."""

    def __init__(self, bench, tag, options=None, topic=None):
        self.bench, self.tag = bench, tag
        self.topic = topic or f"bench-enriched-{tag}-{uuid.uuid4().hex[:6]}"
        self.options = dict(options or {})
        if bench.kafka:
            self.options.update(kafka_brokers=bench.kafka.bootstrap, kafka_topic_enriched=self.topic)
        if bench.pg:
            self.options.update(pg_conninfo=bench.pg_url)

    def __enter__(self):
        if self.bench.pg:
            pg_reset(self.bench.pg_url)
        self.broker = Broker(self.bench, self.tag, self.options)
        self.stats = Stats(self.broker)
        return self

    def __exit__(self, *exc):
        self.stats.close()
        self.broker.stop()
        if self.bench.kafka and self.topic.startswith("bench-"):
            kafka_delete(self.bench.kafka.bootstrap, self.topic)

    def load(self, rate, seconds, *extra):
        log(f"{self.tag}: {rate} msg/s for {seconds} s")
        return Sim(self.bench, self.broker.port, ["--devices", DEVICES, "--connections", CONNECTIONS, "--qos", 1,
                                                  "--rate", rate, "--duration", seconds, *extra], self.tag, seconds)

    def drain(self, after):
        log(f"{self.tag}: waiting for the backlog to drain")
        return self.stats.wait(drained, self.bench.args.drain_timeout, "the backlog to drain", after)

    def reconcile(self, acked):
        """Loss and duplicates against the sim's acks, after drain()."""
        b, r = self.bench, {"acked": int(acked)}
        last = self.stats.samples[-1][1]
        r["received"], r["quarantined"] = last["received"], last["quarantined"]
        if b.pg:
            r["pg_rows"] = pg_query(b.pg_url, "SELECT count(*) FROM metrics")[0][0]
            r["pg_lost"] = r["acked"] - r["pg_rows"]
        if b.kafka:
            r["kafka_records"], r["kafka_distinct"] = kafka_counts(b.kafka.bootstrap, self.topic, r["acked"])
            r["kafka_lost"] = r["acked"] - r["kafka_distinct"]
            r["kafka_dups"] = r["kafka_records"] - r["kafka_distinct"]
        log(f"{self.tag}: reconcile {r}")
        return r

    def timeline(self, t0):
        """Per-interval rates from consecutive samples, t in seconds since t0."""
        out = []
        for (ta, a), (tb, b) in zip(self.stats.samples, self.stats.samples[1:]):
            dt = tb - ta
            if dt > 0.2:
                out.append({"t": tb - t0, "received": (b["received"] - a["received"]) / dt,
                            "kafka": (b["kafka_delivered"] - a["kafka_delivered"]) / dt,
                            "pg": (b["pg_written"] - a["pg_written"]) / dt, "backlog": backlog(b),
                            "unprocessed": b["journaled"] - b["processed"],
                            "kafka_pending": pending(b, "kafka"), "pg_pending": pending(b, "pg"),
                            "received_total": b["received"]})
        return out


# ---- where the CPU goes ----

CLK_TCK = os.sysconf("SC_CLK_TCK")
PLUGIN_THREADS = {"mosquitto": "broker thread (mosquitto + capture)", "iotpipe-proc": "plugin: processor",
                  "iotpipe-kafka": "plugin: Kafka sink thread", "iotpipe-pg": "plugin: PostgreSQL sink thread"}


def _stat_cpu(path):
    """(comm, CPU seconds) of /proc/.../stat"""
    text = Path(path).read_text()
    comm = text[text.index("(") + 1:text.rindex(")")]
    f = text[text.rindex(")") + 2:].split()
    return comm, (int(f[11]) + int(f[12])) / CLK_TCK


def cpu_by_component(broker_pid, sim_pid, kafka_pid):
    """CPU seconds used so far, by component: the broker's threads by name, the simulator, the Kafka
    JVM and every PostgreSQL process."""
    out = {}
    def add(k, v):
        out[k] = out.get(k, 0.0) + v
    for task in Path(f"/proc/{broker_pid}/task").iterdir():
        with contextlib.suppress(OSError):
            comm, s = _stat_cpu(task / "stat")
            add(PLUGIN_THREADS.get(comm, "librdkafka threads" if comm.startswith("rdk:") else "plugin: other threads"), s)
    for name, pid in (("iotpipe-sim (load generator)", sim_pid), ("Kafka broker (JVM)", kafka_pid)):
        with contextlib.suppress(OSError, TypeError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                add(name, _stat_cpu(task / "stat")[1])
    pg_uid = pwd.getpwnam("postgres").pw_uid
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                if p.stat().st_uid == pg_uid:
                    add("PostgreSQL (all backends)", _stat_cpu(p / "stat")[1])
    return out


def sched_by_thread(broker_pid):
    """Seconds each of the broker's named threads ran and waited for a core so far (schedstat: run
    time, run-queue delay), by PLUGIN_THREADS label."""
    out = {}
    for task in Path(f"/proc/{broker_pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            label = PLUGIN_THREADS.get((task / "comm").read_text().strip())
            if label:
                run_ns, wait_ns = (int(x) for x in (task / "schedstat").read_text().split()[:2])
                r, w = out.get(label, (0.0, 0.0))
                out[label] = (r + run_ns / 1e9, w + wait_ns / 1e9)
    return out


def cpu_rows(what, runs):
    """Where the two cores went during the load: CPU time per message, by component (run["cpu"]:
    component -> (CPU seconds, wall seconds), from cpu_by_component)."""
    comps = sorted({k for r in runs for k in r["cpu"]}, key=lambda k: -statistics.median(
        r["cpu"].get(k, (0, 1))[0] for r in runs))
    per_msg = lambda r, k: r["cpu"].get(k, (0, 1))[0] / max(r["acked"], 1) * 1e6
    share = lambda r, k: r["cpu"].get(k, (0, 1))[0] / r["cpu"].get(k, (0, 1))[1] * 100
    for k in comps:
        xs = [per_msg(r, k) for r in runs]
        row(f"{what}: CPU per message, {k}", f"{med(xs, '{:.1f}')} µs", spread(xs, "{:.1f}"),
            f"{med([share(r, k) for r in runs])} % of one core")
    tot = [sum(per_msg(r, k) for k in comps) for r in runs]
    row(f"{what}: CPU per message, all of the above", f"{med(tot, '{:.1f}')} µs", spread(tot, "{:.1f}"),
        f"{med([sum(share(r, k) for k in comps) for r in runs])} % of one core (the machine has {os.cpu_count()} cores)")


def write_csv(path, rows):
    keys = list(rows[0]) if rows else ["t"]
    path.write_text(",".join(keys) + "\n" + "".join(",".join(f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k])
                                                             for k in keys) + "\n" for r in rows))
    return path


def warm_up(bench, rate, *extra):
    if bench.args.warmup > 0:
        with PipelineRun(bench, "warmup") as run:
            run.load(rate, bench.args.warmup, *extra).wait(bench.args.warmup + 300)


# ---- sustained ----

def judge(timeline, rate, seconds, achieved):
    """(held, why): the sim sent >= 97 % of the target, and the backlog's trough (its minimum; the
    sinks' batches and delivery reports make it swing upwards by a second of ingest and more) rose
    from the middle third of the load to the last by less than 1 % of what was received in between
    plus a quarter second of ingest. That misses a deficit under about 1 % + 75 % / seconds."""
    mid = [p for p in timeline if seconds / 3 <= p["t"] < 2 * seconds / 3]
    last = [p for p in timeline if 2 * seconds / 3 <= p["t"] <= seconds]
    if not mid or not last:
        return False, "too few stats samples"
    growth = min(p["backlog"] for p in last) - min(p["backlog"] for p in mid)
    between = last[-1]["received_total"] - mid[-1]["received_total"]
    ok_rate, ok_backlog = achieved >= 0.97 * rate, growth < 0.01 * between + 0.25 * rate
    why = f"sim {achieved:.0f} msg/s ({100 * achieved / rate:.1f} %), backlog trough {growth:+.0f} over {between:.0f} received"
    return ok_rate and ok_backlog, why


def cmd_sustained(bench, a):
    rates = [int(r) for r in a.rates.split(",")]
    bench.start_pg()
    bench.start_kafka()
    reg = {"registry_file": bench.registry()}
    warm_up(bench, rates[0])
    held, ladder, misses = None, [], 0
    for rate in rates:
        with PipelineRun(bench, f"probe-{rate}", reg) as run:
            sim = run.load(rate, a.probe_seconds)
            res = sim.wait(a.probe_seconds + 300)
            tl = run.timeline(sim.t0)
            write_csv(bench.work / f"probe-{rate}.csv", tl)
            ok, why = judge(tl, rate, a.probe_seconds, res["achieved"])
        log(f"probe {rate}: {'held' if ok else 'NOT held'} ({why})")
        ladder.append(f"{rate} {'✓' if ok else '✗'}")
        if ok:
            held, misses = rate, 0
        else:
            misses += 1
            if misses == 2:
                break
    note = "held = sim sent ≥ 97 % of target, backlog trough not growing (see judge())"
    if held is None:
        held, note = rates[0], f"no rate held: runs at {rates[0]}"
    row(f"sustained: highest target rate held, Kafka + PostgreSQL on, QoS 1, {DEVICES} devices over "
        f"{CONNECTIONS} connections ({a.probe_seconds} s probes)", f"{held} msg/s", "ladder: " + ", ".join(ladder),
        note + f" <!-- held={held} -->")   # tests/bench/run.sh reads the held rate back from this
    runs = []
    for i in range(1, a.runs + 1):
        with PipelineRun(bench, f"sustained-{i}", reg) as run:
            kafka_pid = int((bench.kafka.dir / "kafka.pid").read_text())
            sim = run.load(held, a.seconds)
            cpu0 = cpu_by_component(run.broker.proc.pid, sim.proc.pid, kafka_pid)
            cpu1 = None
            while sim.proc.poll() is None:   # the last look before the simulator exits
                now, prev = cpu_by_component(run.broker.proc.pid, sim.proc.pid, kafka_pid), cpu1 or {}
                # CPU times only grow: a look that caught the simulator exiting (its threads already
                # gone from /proc) must not count it as zero
                cpu1 = {k: max(now.get(k, 0.0), prev.get(k, 0.0)) for k in now.keys() | prev.keys()}
                t1 = time.monotonic()
                time.sleep(0.5)
            res = sim.wait(a.seconds + 300)
            cpu = {k: (cpu1.get(k, 0) - v, t1 - sim.t0) for k, v in cpu0.items()} if cpu1 else {}
            drained_ok = bool(run.drain(sim.t1))
            rec = dict(run.reconcile(res["acked"]), drained=drained_ok)
            tl = run.timeline(sim.t0)
            write_csv(bench.work / f"sustained-{i}.csv", tl)
            ok, why = judge(tl, held, a.seconds, res["achieved"])
            load = [p for p in tl if p["t"] <= sim.t1 - sim.t0]
            runs.append(dict(rec, held=ok, why=why, rate=res["achieved"], sim_rate=res["rate"], cpu=cpu,
                             max_backlog=max((p["backlog"] for p in tl), default=0),
                             kafka_rate=statistics.mean(p["kafka"] for p in load) if load else 0,
                             pg_rate=statistics.mean(p["pg"] for p in load) if load else 0))
    what = f"sustained at {held} msg/s, {a.runs} × {a.seconds} s"
    rs = [r["rate"] for r in runs]
    row(f"{what}: achieved (sim: sent / duration, all acked)", f"{med(rs)} msg/s", spread(rs),
        f"held in {sum(r['held'] for r in runs)} of {len(runs)} runs; sim's own rate (incl. connect and final acks) "
        f"{med([r['sim_rate'] for r in runs])}")
    kr, pr = [r["kafka_rate"] for r in runs], [r["pg_rate"] for r in runs]
    row(f"{what}: delivered during the load, Kafka / PostgreSQL ($SYS deltas)", f"{med(kr)} / {med(pr)} records/s",
        f"{spread(kr)}; {spread(pr)}")
    mb = [r["max_backlog"] for r in runs]
    row(f"{what}: max backlog (unprocessed + the slower sink's pending)", f"{med(mb)} records", spread(mb))
    cpu_rows(what, runs)
    for i, r in enumerate(runs, 1):
        row(f"{what}, run {i}: lost (acked − distinct in Kafka / − rows in PG), Kafka duplicates",
            f"{r['kafka_lost']} / {r['pg_lost']}, dups {r['kafka_dups']}",
            f"acked {r['acked']}; Kafka {r['kafka_records']} records, {r['kafka_distinct']} distinct; PG {r['pg_rows']} rows",
            "must be 0" + ("" if r["drained"] else f"; backlog not drained after {a.drain_timeout:.0f} s")
            + (f"; quarantined {r['quarantined']}" if r["quarantined"] else "")
            + (f"; $SYS received {r['received']}" if r["received"] != r["acked"] else ""))
    csv = bench.work / f"sustained-{len(runs)}.csv"
    bench.plot("sustained", f"""set multiplot layout 2,1 title "iotpipe sustained {held} msg/s (QoS 1, Kafka + PostgreSQL), run {len(runs)}"
set ylabel "records/s"
set datafile separator ","
plot "{csv}" u 1:2 w l lw 2 t "received/s", "" u 1:3 w l t "kafka_delivered/s", "" u 1:4 w l t "pg_written/s"
set xlabel "seconds since load start"
set ylabel "backlog (records)"
plot "{csv}" u 1:5 w l lw 2 t "backlog", "" u 1:7 w l t "kafka pending", "" u 1:8 w l t "pg pending", "" u 1:6 w l t "unprocessed"
unset multiplot
""")


# ---- latency ----

PG_DEVICES = 20
PROBES = {"mqtt": "publish → MQTT alert (subscriber on alerts/#)",
          "kafka": "publish → Kafka record consumed (devices.enriched)",
          "kafka_produced": "of which publish → produced to librdkafka (the record's CreateTime: the plugin's share)",
          "pg": f"publish → row visible in PostgreSQL `metrics` (polled, {PG_DEVICES} devices)"}


def copy_stderr(proc, path, ready):
    """Copies the probe's stderr to path; sets ready at its "ready" line (its clock starts then)."""
    with open(path, "wb") as f:
        for line in proc.stderr:
            f.write(line)
            f.flush()
            if b"ready" in line:
                ready.set()
    ready.set()        # it exited: communicate() then reports


def read_histogram(path):
    hist = {}
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                ms, n = line.split(",")
                hist[float(ms)] = hist.get(float(ms), 0) + int(n)
    return hist


def cmd_latency(bench, a):
    probe = bench.build / "tests" / "bench_latency"
    if not probe.exists():
        raise SystemExit(f"{probe} missing: it is built with the tests (bash ci/build.sh plain)")
    bench.start_pg()
    bench.start_kafka()
    reg = {"registry_file": bench.registry(threshold=23)}
    spike = ("--spike", "0.002")
    warm_up(bench, a.rate, *spike)
    results, hists = {p: [] for p in PROBES}, {p: {} for p in PROBES}
    waits = []   # per run: label -> (share of the load spent running, share waiting for a core)
    for i in range(1, a.runs + 1):
        kafka_recreate(bench.kafka.bootstrap, "devices.enriched")
        with PipelineRun(bench, f"latency-{i}", reg, topic="devices.enriched") as run:
            prefix = bench.work / f"latency-{i}"
            lat = bench.spawn([probe, "--kafka", bench.kafka.bootstrap, "--mqtt", run.broker.port,
                               "--pg", bench.pg_url, "--pg-devices", PG_DEVICES, "--seconds", a.seconds + 5,
                               "--skip", 5, "--out", prefix], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            ready = threading.Event()
            threading.Thread(target=copy_stderr, args=(lat, bench.work / f"latency-{i}.probe.log", ready),
                             daemon=True).start()
            if not ready.wait(60) or lat.poll() is not None:
                raise RuntimeError(f"bench_latency not ready (see {bench.work}/latency-{i}.probe.log; --keep keeps it)")
            sched0, t0 = sched_by_thread(run.broker.proc.pid), time.monotonic()
            run.load(a.rate, a.seconds, *spike).wait(a.seconds + 300)
            sched1, wall = sched_by_thread(run.broker.proc.pid), time.monotonic() - t0
            waits.append({k: ((r - sched0.get(k, (0, 0))[0]) / wall, (w - sched0.get(k, (0, 0))[1]) / wall)
                          for k, (r, w) in sched1.items()})
            lat.wait(a.seconds + 120)
            out = lat.stdout.read()
            if lat.returncode != 0:
                log(f"bench_latency exited {lat.returncode}")
            for line in out.decode().splitlines():
                m = re.match(r"probe=(\w+)\s+(.*)", line.strip())
                if m and m.group(1) in results:
                    log(line.strip())
                    results[m.group(1)].append({k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", m.group(2))})
                    for ms, n in read_histogram(Path(f"{prefix}.{m.group(1)}.csv")).items():
                        hists[m.group(1)][ms] = hists[m.group(1)].get(ms, 0) + n
    plots = []
    for name, what in PROBES.items():
        rs = [r for r in results[name] if r.get("n", 0) > 0]
        if not rs:
            row(f"{what}, {a.rate} msg/s", "no samples", "", f"0 of {a.runs} runs reported")
            continue
        figs = [(q, [r[f"{q}_ms"] for r in rs]) for q in ("p50", "p99", "p999")]
        row(f"{what}, {a.rate} msg/s, Kafka + PostgreSQL on",
            ", ".join(f"{q.replace('p999', 'p99.9')} {med(v, '{:.1f}')} ms" for q, v in figs),
            "; ".join(f"{q.replace('p999', 'p99.9')} {spread(v, '{:.1f}')}" for q, v in figs),
            f"median of {len(rs)} runs, n = {med([r['n'] for r in rs])} per run")
        hist, total, cum, cdf = hists[name], sum(hists[name].values()), 0, []
        for ms in sorted(hist):
            if not hist[ms]:
                continue
            cum += hist[ms]
            cdf.append({"latency_ms": max(ms, 0.01), "fraction": cum / total})
        if cdf:
            plots.append(f'"{write_csv(bench.work / f"latency-cdf-{name}.csv", cdf)}" u 1:2 w steps lw 2 t "{name}"')
    # A thread that waits for a core while readings queue behind it is where tails come from: on
    # this machine the load generator, Kafka and PostgreSQL share the two cores with the broker.
    for k in sorted({k for w in waits for k in w}):
        xs = [w[k] for w in waits if k in w]
        row(f"latency run, {a.rate} msg/s: {k}, share of the load spent waiting for a core (schedstat)",
            f"{med([100 * x[1] for x in xs])} %", spread([100 * x[1] for x in xs]),
            f"it ran {med([100 * x[0] for x in xs])} % of the time")
    if plots:
        bench.plot("latency", f"""set title "iotpipe latency from publish, {a.rate} msg/s, {a.runs} run(s)"
set datafile separator ","
set logscale x
set key bottom right
set xlabel "latency (ms)"
set ylabel "fraction of readings"
set yrange [0:1]
plot {", ".join(plots)}
""")


# ---- catch-up ----

def cmd_catchup(bench, a):
    bench.start_pg()
    bench.start_kafka()
    reg = {"registry_file": bench.registry()}
    warm_up(bench, a.rate)
    lead, seconds = 20, 20 + a.outage + max(30, a.outage)
    runs = []
    for i in range(1, a.runs + 1):
        with PipelineRun(bench, f"catchup-{i}", reg) as run:
            sim = run.load(a.rate, seconds)
            time.sleep(max(0.0, sim.t0 + lead - time.monotonic()))
            log(f"catchup-{i}: {'killing' if a.kill else 'stopping'} PostgreSQL for {a.outage} s")
            t_down = time.monotonic()         # the outage counts from here, the stop's own time included
            if a.kill:
                bench.pg.kill()
            else:
                bench.pg.stop()
            time.sleep(max(0.0, t_down + a.outage - time.monotonic()))
            bench.pg.start()
            t_up = time.monotonic()
            log(f"catchup-{i}: PostgreSQL back")
            near_zero = a.rate          # one second of ingest: the sink's batches in flight
            end = run.stats.wait(lambda s: pending(s, "pg") <= near_zero, seconds + 300, "the pg backlog to drain", t_up)
            res = sim.wait(seconds + 300)
            run.drain(sim.t1)
            rec = run.reconcile(res["acked"])
            tl = run.timeline(sim.t0)
            write_csv(bench.work / f"catchup-{i}.csv", tl)
        # the drain starts at the last sample before the writes resume (the backlog is at its peak there)
        sm = run.stats.samples
        base = next((sm[j - 1] for j in range(1, len(sm))
                     if sm[j][0] >= t_up and sm[j][1]["pg_written"] > sm[j - 1][1]["pg_written"]), None)
        at_restart = pending(base[1], "pg") if base else 0
        r = dict(rec, rate=res["achieved"], backlog=at_restart, t_down=t_down - sim.t0, t_up=t_up - sim.t0)
        if end and base and end[0] > base[0]:
            r["drain"] = end[0] - t_up
            r["catchup"] = (end[1]["pg_written"] - base[1]["pg_written"]) / (end[0] - base[0])
            r["after_load"] = end[0] > sim.t1
        log(f"catchup-{i}: backlog at restart {at_restart}, drain {r.get('drain', float('nan')):.1f} s, "
            f"{r.get('catchup', float('nan')):.0f} rows/s")
        runs.append(r)
    how = "kill -9" if a.kill else "pg.sh stop"
    what = f"PostgreSQL catch-up after a {a.outage} s outage ({how}) at {a.rate} msg/s"
    ok = [r for r in runs if "catchup" in r]
    if ok:
        cr, ratio = [r["catchup"] for r in ok], [r["catchup"] / r["rate"] for r in ok]
        row(f"{what}: pg_written/s during the drain", f"{med(cr)} rows/s", spread(cr),
            f"{med(ratio, '{:.1f}')}× the ingest rate ({spread(ratio, '{:.1f}')}; goal ≥ 3×)"
            + ("; drain ended after the load" if any(r["after_load"] for r in ok) else ""))
        dr, bl = [r["drain"] for r in ok], [r["backlog"] for r in ok]
        row(f"{what}: pg backlog at restart; time from restart to ≤ 1 s of ingest pending",
            f"{med(bl)} records; {med(dr, '{:.1f}')} s", f"{spread(bl)}; {spread(dr, '{:.1f}')} s")
    else:
        row(f"{what}", "backlog did not drain", "", f"0 of {len(runs)} runs drained")
    for i, r in enumerate(runs, 1):
        row(f"{what}, run {i}: lost (acked − rows in PG / − distinct in Kafka)", f"{r['pg_lost']} / {r['kafka_lost']}",
            f"acked {r['acked']}; PG {r['pg_rows']} rows; Kafka {r['kafka_distinct']} distinct, {r['kafka_dups']} dups",
            "must be 0")
    last = runs[-1]
    csv = bench.work / f"catchup-{len(runs)}.csv"
    bench.plot("catchup", f"""set title "iotpipe PostgreSQL catch-up: {a.outage} s outage ({how}) at {a.rate} msg/s, run {len(runs)}"
set datafile separator ","
set xlabel "seconds since load start"
set ylabel "records/s"
set y2label "pg backlog (records)"
set y2tics
set ytics nomirror
set arrow from {last['t_down']:.1f}, graph 0 to {last['t_down']:.1f}, graph 1 nohead dt 2
set arrow from {last['t_up']:.1f}, graph 0 to {last['t_up']:.1f}, graph 1 nohead dt 2
set label " PostgreSQL stopped" at {last['t_down']:.1f}, graph 0.97
set label " started" at {last['t_up']:.1f}, graph 0.93
plot "{csv}" u 1:4 w l lw 2 t "pg_written/s", "" u 1:2 w l t "received/s", "" u 1:8 axes x1y2 w l lw 2 t "pg pending (right)"
""")


# ---- memory ----

def cmd_memory(bench, a):
    series = [int(n) for n in a.series.split(",")]
    res = {n: [] for n in series}
    for n in series:
        for i in range(1, a.runs + 1):
            with PipelineRun(bench, f"memory-{n}-{i}", {"unknown_devices": "accept"}) as run:
                time.sleep(3)
                before = run.broker.rss_anon()
                log(f"memory {n} series, run {i}: RssAnon {before / 2**20:.1f} MiB; publishing {2 * n}")
                sim = Sim(bench, run.broker.port, ["--devices", n, "--count", 2 * n, "--qos", 1,
                                                   "--connections", CONNECTIONS], f"memory-{n}-{i}")
                sent = int(sim.wait(3600)["sent"])
                if not run.stats.wait(lambda s: s["processed"] >= sent, 600, f"processed = {sent}"):
                    raise RuntimeError(f"the plugin did not process {sent} messages")
                time.sleep(3)
                after = run.broker.rss_anon()
                res[n].append((after - before) / n)
                log(f"memory {n} series, run {i}: RssAnon {after / 2**20:.1f} MiB, {(after - before) / n:.1f} bytes/series")
    for n in series:
        row(f"plugin memory per active series, {n} series (mosquitto RssAnon after − before, / N)",
            f"{med(res[n], '{:.1f}')} bytes", spread(res[n], "{:.1f}"), f"goal ≤ 256; {len(res[n])} runs")
    csv = write_csv(bench.work / "memory.csv", [{"series": n, "bytes": b} for n in series for b in res[n]])
    bench.plot("memory", f"""set title "iotpipe memory per active series (RssAnon delta / N)"
set datafile separator ","
set logscale x
set xrange [{min(series) / 2}:{max(series) * 2}]
set xlabel "active series"
set ylabel "bytes per series"
set yrange [0:*]
plot "{csv}" u 1:2 w p pt 7 ps 1.5 t "runs", 256 w l dt 2 t "goal 256"
""")


def common_options():
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--build", default=str(REPO / "build" / "plain"), help="build dir (default build/plain)")
    p.add_argument("--out-dir", default=str(REPO / "docs" / "benchmarks"), help="plots (default docs/benchmarks)")
    p.add_argument("--warmup", type=float, default=10, help="seconds of unreported load first (default 10)")
    p.add_argument("--drain-timeout", type=float, default=120, help="bound on waiting for a drain (default 120 s)")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    return p


def interrupted(signum, frame):
    raise KeyboardInterrupt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = common_options()
    for name, opts in (("sustained", [("--rates", str, "10000,15000,20000,25000,30000,40000,50000"), ("--probe-seconds", int, 15),
                                      ("--seconds", int, 60), ("--runs", int, 3)]),
                       ("latency", [("--rate", int, 25000), ("--seconds", int, 40), ("--runs", int, 3)]),
                       ("catchup", [("--rate", int, 25000), ("--outage", int, 60), ("--runs", int, 3)]),
                       ("memory", [("--series", str, "10000,100000,1000000"), ("--runs", int, 3)])):
        p = sub.add_parser(name, parents=[common])
        for opt, kind, default in opts:
            p.add_argument(opt, type=kind, default=default, help=f"default {default}")
        if name == "catchup":
            p.add_argument("--kill", action="store_true", help="kill -9 PostgreSQL instead of a fast shutdown")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, interrupted)
    try:
        with Bench(args) as bench:
            {"sustained": cmd_sustained, "latency": cmd_latency, "catchup": cmd_catchup,
             "memory": cmd_memory}[args.cmd](bench, args)
    except KeyboardInterrupt:
        log("interrupted: cleaned up")
        sys.exit(130)


if __name__ == "__main__":
    main()
