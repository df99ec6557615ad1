"""Throwaway PostgreSQL and Kafka for the end-to-end suites, through ci/pg.sh and ci/kafka.sh.

    with pg_cluster(tmp_path / "pg") as pg:        # pg.url is a libpq conninfo for db iotpipe
        pg.kill(); pg.start()                      # fault injection: kill -9, then recover
    with kafka_broker(tmp_path / "kafka") as kafka:
        kafka.bootstrap                            # "127.0.0.1:PORT"
        kafka.kill(); kafka.restart()

Both stop their service on leaving the block, even when the test failed.
"""

import contextlib
import socket
import subprocess
from pathlib import Path

CI = Path(__file__).resolve().parents[2] / "ci"


class ServiceError(RuntimeError):
    pass


def _run(script, *args):
    proc = subprocess.run([str(CI / script), *map(str, args)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ServiceError(f"{script} {' '.join(map(str, args))} failed "
                           f"({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc.stdout.strip()


def free_port(span=1):
    """A loopback TCP port p such that p .. p+span-1 are all free right now."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + span - 1 > 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for p in range(port + 1, port + span):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
    raise ServiceError(f"no run of {span} free ports found")


class _Service:
    script = ""

    def __init__(self, directory, port):
        self.dir = Path(directory)
        self.port = port

    def start(self):
        _run(self.script, "start", self.dir, self.port)

    def stop(self):
        _run(self.script, "stop", self.dir)

    def kill(self):
        """kill -9, for fault tests; returns once the process is gone."""
        _run(self.script, "kill", self.dir)

    def restart(self):
        self.stop()
        self.start()

    def running(self):
        return subprocess.run([str(CI / self.script), "status", str(self.dir)],
                              capture_output=True).returncode == 0


class PgCluster(_Service):
    script = "pg.sh"

    @property
    def url(self):
        """libpq conninfo for database iotpipe (superuser postgres, trust auth, TCP)."""
        return _run(self.script, "url", self.dir, self.port)


class KafkaBroker(_Service):
    script = "kafka.sh"

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def restart(self):
        """Start again on the existing data (stopping first if it is running)."""
        _run(self.script, "restart", self.dir, self.port)


@contextlib.contextmanager
def pg_cluster(tmpdir, port=None):
    """A PostgreSQL 15 cluster in tmpdir on 127.0.0.1:port (a free port if None)."""
    pg = PgCluster(tmpdir, port or free_port())
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()


@contextlib.contextmanager
def kafka_broker(tmpdir, port=None):
    """A single-node KRaft Kafka in tmpdir on 127.0.0.1:port, controller on port+1."""
    kafka = KafkaBroker(tmpdir, port or free_port(span=2))
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()
