"""Shared fixtures: the real local Kafka broker and a daemon subprocess.

Integration tests talk to the broker that `make kafka-up` starts (docs/architecture.md,
principle 6: no mock broker). If it is not running they fail with the command
that fixes it; they never skip.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BOOTSTRAP = os.environ.get("INFERSIGHT_TEST_BOOTSTRAP", "127.0.0.1:9092")


def wait_for(predicate, timeout: float, interval: float = 0.25, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy and return that; fail
    after ``timeout`` s. Errors while polling (a server still starting) are
    retried; the last one is reported."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last one
            last_error = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}"
                + (f" (last error: {last_error!r})" if last_error else ""))


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, bootstrap_timeout_ms=10000)
        admin.list_topics()
        admin.close()
    except KafkaError as exc:
        pytest.fail(f"no Kafka broker at {BOOTSTRAP} ({type(exc).__name__}); start it with `make kafka-up`")
    return BOOTSTRAP


@pytest.fixture
def topic(kafka_bootstrap) -> str:
    """A fresh topic (3 partitions) per test, so tests never see each other's data."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    name = f"test-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
    admin.close()
    return name


def produce(bootstrap: str, topic: str, items) -> int:
    """Send ``(key, value_bytes)`` pairs and flush; returns the count."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, acks="all")
    count = 0
    for key, value in items:
        producer.send(topic, key=key.encode() if isinstance(key, str) else key, value=value)
        count += 1
    producer.flush(timeout=60)
    producer.close()
    return count


def consume_all(bootstrap: str, topic: str, expect_at_least: int = 1, timeout: float = 30.0, until=None) -> list:
    """Read a topic from the beginning until ``expect_at_least`` messages arrived
    (and ``until(messages)`` holds, if given)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        group_id=None, consumer_timeout_ms=1000,
    )
    messages: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (len(messages) < expect_at_least or (until and not until(messages))):
        for batch in consumer.poll(timeout_ms=500).values():
            messages.extend(batch)
    consumer.close()
    return messages


class DaemonProcess:
    """``infersight run`` as a subprocess with its log in a file."""

    def __init__(self, tmp_path: Path, *args: str, config: str | None = None):
        self.log_path = tmp_path / f"daemon-{uuid.uuid4().hex[:6]}.log"
        command = [sys.executable, "-m", "monitor.cli", "run", "--metrics-port", "0", "--metrics-host", "127.0.0.1"]
        if config is not None:
            config_path = tmp_path / "config.yaml"
            config_path.write_text(config)
            command += ["--config", str(config_path)]
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command + list(args), stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)
        self.port = int(wait_for(self._metrics_port, 30, what="the daemon's metrics port"))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _metrics_port(self):
        if self.process.poll() is not None:
            raise AssertionError(f"daemon exited early ({self.process.returncode}):\n{self.log()}")
        match = re.search(r"metrics on https?://[^:]+:(\d+)/metrics", self.log())
        return match and match.group(1)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
            return response.read().decode()

    def sample(self, name: str, **labels) -> float | None:
        """Value of one series in the current exposition, or None if absent."""
        for line in self.metrics().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return None

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=timeout)
        self._log.close()
        return self.process.returncode


@pytest.fixture
def start_daemon(tmp_path):
    started: list[DaemonProcess] = []

    def start(*args: str, config: str | None = None) -> DaemonProcess:
        daemon = DaemonProcess(tmp_path, *args, config=config)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()
