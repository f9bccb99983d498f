"""Helpers for the ops tests (imported by tests/ops/conftest.py and the tests).

Binaries come from Debian's `prometheus` and `prometheus-alertmanager` packages
(`make system-deps`). A missing binary FAILS the test with a message saying what
to install: these tests guard the alerting path and must not silently skip in CI.

Everything listens on 127.0.0.1 on ports picked free at start, and keeps its data
in pytest's tmp dirs, so the tests can run beside a developer's own Prometheus.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import contextlib
import http.server
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.conftest import BOOTSTRAP, wait_for  # noqa: F401 - wait_for is part of this kit

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
AM_DIR = REPO / "deploy" / "alertmanager"
DASHBOARD_DIR = REPO / "grafana" / "dashboards"
KAFKA_BOOTSTRAP = BOOTSTRAP

_INSTALL_HINT = {
    "prometheus": "apt-get install prometheus (or `make system-deps`)",
    "promtool": "apt-get install prometheus (or `make system-deps`)",
    "prometheus-alertmanager": "apt-get install prometheus-alertmanager (or `make system-deps`)",
    "alertmanager": "apt-get install prometheus-alertmanager (or `make system-deps`)",
    "amtool": "apt-get install prometheus-alertmanager (or `make system-deps`)",
}


def require_binary(*names: str) -> str:
    """Path of the first of ``names`` on PATH; fail (never skip) if none is."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"{' / '.join(names)} not found on PATH: {_INSTALL_HINT.get(names[0], 'install it')}", pytrace=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --------------------------------------------------------------------------- processes
@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}", pytrace=False)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


def start_process(name: str, argv: list[str], log: Path, ready_url: str | None, timeout: float = 30.0,
                  env: dict | None = None) -> Proc:
    handle = open(log, "wb")  # noqa: SIM115 - lives as long as the process
    popen = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             cwd=REPO, env=env)
    proc = Proc(name, popen, log)
    if ready_url:
        def ready():
            proc.check_alive()
            return http_get(ready_url, timeout=2)[0] == 200
        try:
            wait_for(ready, timeout, 0.2, f"{name} at {ready_url}")
        except BaseException:
            proc.stop()
            raise
    return proc


# --------------------------------------------------------------------------- webhook receiver
@dataclass
class Webhook:
    """Collects Alertmanager webhook notifications; path = receiver name."""

    port: int
    notifications: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, receiver: str) -> str:
        return f"http://127.0.0.1:{self.port}/{receiver}"

    def alerts(self, status: str | None = None, **labels) -> list[dict]:
        """Every alert received so far (with the receiver added as ``receiver_path``),
        in arrival order, with ``status`` ("firing"/"resolved") and ``labels``."""
        with self.lock:
            found = []
            for note in self.notifications:
                for alert in note["alerts"]:
                    if status is not None and alert["status"] != status:
                        continue
                    if all(alert["labels"].get(k) == v for k, v in labels.items()):
                        found.append({**alert, "receiver_path": note["_path"]})
            return found


def alertmanager_test_config(webhook: Webhook) -> dict:
    """deploy/alertmanager/alertmanager.yml with every receiver replaced by the test
    webhook (path = receiver name) and fast grouping; routes and inhibitions kept."""
    cfg = yaml.safe_load((AM_DIR / "alertmanager.yml").read_text())
    cfg["receivers"] = [
        {"name": r["name"], "webhook_configs": [{"url": webhook.url(r["name"]), "send_resolved": True}]}
        for r in cfg["receivers"]
    ]
    cfg.pop("templates", None)

    def fast(route):
        for key, value in (("group_wait", "1s"), ("group_interval", "1s"), ("repeat_interval", "1h")):
            if key in route or route is cfg["route"]:
                route[key] = value
        for child in route.get("routes", []):
            fast(child)

    fast(cfg["route"])
    return cfg



@dataclass
class Alertmanager:
    url: str
    proc: Proc

    def alerts(self) -> list[dict]:
        return json.loads(http_get(f"{self.url}/api/v2/alerts")[1])


FAST_FOR = "3s"
# Prometheus applies newly discovered targets up to 5 s after start, so up{} is
# absent that long: keep absent()-based alerts longer than that or they fire on start.
FAST_FOR_OVERRIDES = {"InfersightMonitorDown": "10s"}


def shortened_rules(dest: Path) -> list[Path]:
    """Copies of deploy/prometheus/rules/*.yml with every `for:` cut to FAST_FOR,
    so an alert pipeline test finishes in about two minutes instead of 10+.
    Expressions, labels and annotations are untouched."""
    out = []
    for src in sorted((PROM_DIR / "rules").glob("*.yml")):
        doc = yaml.safe_load(src.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = FAST_FOR_OVERRIDES.get(rule.get("alert"), FAST_FOR)
        path = dest / src.name
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        out.append(path)
    return out


@dataclass
class Prometheus:
    url: str
    proc: Proc

    def api(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params)
        status, body = http_get(f"{self.url}/api/v1/{path}?{query}", timeout=10)
        doc = json.loads(body)
        if status != 200 or doc.get("status") != "success":
            raise AssertionError(f"Prometheus API {path} {params}: HTTP {status}: {doc}")
        return doc["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def query_range(self, expr: str, seconds: float, step: str = "1s") -> list[dict]:
        end = time.time()
        return self.api("query_range", query=expr, start=end - seconds, end=end, step=step)["result"]

    def targets_up(self) -> bool:
        active = self.api("targets")["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)


# --------------------------------------------------------------------------- dashboards
def load_dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def iter_panels(panels: list[dict]):
    for p in panels:
        yield p
        yield from iter_panels(p.get("panels", []))  # collapsed rows hold their panels


def dashboard_queries() -> list[tuple[str, str, str, str]]:
    """(dashboard uid, panel title, refId, expr) for every panel target and every
    Prometheus annotation query of every dashboard."""
    out = []
    for dash in load_dashboards().values():
        for panel in iter_panels(dash["panels"]):
            for t in panel.get("targets", []):
                out.append((dash["uid"], panel["title"], t["refId"], t["expr"]))
        for ann in dash["annotations"]["list"]:
            if "expr" in ann:
                out.append((dash["uid"], f"annotation: {ann['name']}", "-", ann["expr"]))
    return out


GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "${__rate_interval}": "1m",
    "$__interval": "15s",
    "${__interval}": "15s",
    "$__range": "1h",
    "${__range}": "1h",
    "$__range_s": "3600",
}


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Expand Grafana's built-in and the dashboards' template variables in a query."""
    values = dict(GRAFANA_VARIABLES)
    for name, value in variables.items():
        values[f"${{{name}}}"] = value
        values[f"${name}"] = value
    for key in sorted(values, key=len, reverse=True):  # $__range_s before $__range
        expr = expr.replace(key, values[key])
    left = re.findall(r"\$\{?\w+", expr)
    assert not left, f"unexpanded variables {left} in {expr}"
    return expr


# --------------------------------------------------------------------------- running components
@contextlib.contextmanager
def run_webhook():
    """A webhook receiver for Alertmanager on a free loopback port."""
    hook = Webhook(port=0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            note = json.loads(body)
            note["_path"] = self.path.strip("/")
            with hook.lock:
                hook.notifications.append(note)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def run_alertmanager(workdir: Path, webhook: Webhook):
    binary = require_binary("prometheus-alertmanager", "alertmanager")
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / "alertmanager.yml"
    cfg_path.write_text(yaml.safe_dump(alertmanager_test_config(webhook), sort_keys=False))
    port = free_port()
    proc = start_process(
        "alertmanager",
        [binary, f"--config.file={cfg_path}", f"--storage.path={workdir / 'am-data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=info"],
        workdir / "alertmanager.log",
        f"http://127.0.0.1:{port}/-/ready",
    )
    try:
        yield Alertmanager(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.stop()


@contextlib.contextmanager
def run_prometheus(workdir: Path, targets: list[str], *, labels: dict | None = None,
                   alertmanager_url: str | None = None, job_extra: dict | None = None):
    """Prometheus scraping ``targets`` as job "infersight" every second, with the
    repo's rules (``for:`` shortened, see shortened_rules) evaluated every second."""
    binary = require_binary("prometheus")
    (workdir / "rules").mkdir(parents=True, exist_ok=True)
    rule_files = shortened_rules(workdir / "rules")
    cfg = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [{"job_name": "infersight",
                            "static_configs": [{"targets": targets, "labels": labels or {}}],
                            **(job_extra or {})}],
    }
    if alertmanager_url:
        cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager_url.split("//")[1]]}]}]}
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    port = free_port()
    proc = start_process(
        "prometheus",
        [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}",
         # resend firing alerts to Alertmanager every second, not every minute
         "--rules.alert.resend-delay=1s", "--log.level=info"],
        workdir / "prometheus.log",
        f"http://127.0.0.1:{port}/-/ready",
    )
    try:
        yield Prometheus(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.stop()


def require_kafka(bootstrap: str = KAFKA_BOOTSTRAP) -> str:
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            return bootstrap
    except OSError as exc:
        pytest.fail(f"no Kafka broker at {bootstrap} ({exc.strerror or exc}): start it with `make kafka-up` "
                    "(`make test` starts it for you)", pytrace=False)


def infersight_cli() -> list[str]:
    return [sys.executable, "-m", "monitor.cli"]


@dataclass
class Daemon:
    url: str
    topic: str
    labels_topic: str | None
    proc: Proc

    def metrics(self) -> str:
        status, body = http_get(f"{self.url}/metrics")
        assert status == 200, status
        return body.decode()


@contextlib.contextmanager
def run_daemon(workdir: Path, config: dict, *, bootstrap: str = KAFKA_BOOTSTRAP):
    """`infersight run` on a fresh topic and consumer group, metrics on a free port,
    delayed labels on ``<topic>.labels`` (unless the config names a labels topic)."""
    workdir.mkdir(parents=True, exist_ok=True)
    topic = f"ops-test-{uuid.uuid4().hex[:10]}"
    config = json.loads(json.dumps(config))  # a copy
    labels_topic = config.setdefault("kafka", {}).setdefault("labels_topic", f"{topic}.labels")
    cfg_path = workdir / "infersight.yaml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    proc = start_process(
        "infersight daemon",
        [*infersight_cli(), "run", "--bootstrap-servers", bootstrap, "--topic", topic, "--group-id", topic,
         "--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--config", str(cfg_path)],
        workdir / "daemon.log",
        f"http://127.0.0.1:{port}/healthz",
        timeout=60,
    )
    daemon = Daemon(f"http://127.0.0.1:{port}", topic, labels_topic, proc)
    try:
        wait_for(lambda: proc.check_alive() or "infersight_kafka_connected 1.0" in daemon.metrics(), 60,
                 what="the daemon to connect to Kafka")
        yield daemon
    finally:
        proc.stop()


def simulate(daemon: Daemon, *args: str, bootstrap: str = KAFKA_BOOTSTRAP, timeout: float = 180) -> str:
    out = subprocess.run(
        [*infersight_cli(), "simulate", "--bootstrap-servers", bootstrap, "--topic", daemon.topic,
         *(["--labels-topic", daemon.labels_topic] if daemon.labels_topic else []), *args],
        capture_output=True, text=True, cwd=REPO, timeout=timeout,
    )
    assert out.returncode == 0, f"simulate failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout
