"""Helpers for the ops tests (imported by tests/ops/conftest.py and the tests).

Binaries come from Debian's `prometheus` and `prometheus-alertmanager` packages
(`make system-deps`). A missing binary FAILS the test with a message saying what
to install: these tests guard the alerting path and must not silently skip in CI.

Everything listens on 127.0.0.1 on ports picked free at start, and keeps its data
in pytest's tmp dirs, so the tests can run beside a developer's own Prometheus.
"""

from __future__ import annotations

import json
import os
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
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
AM_DIR = REPO / "deploy" / "alertmanager"
DASHBOARD_DIR = REPO / "grafana" / "dashboards"
KAFKA_BOOTSTRAP = os.environ.get("INFERSIGHT_TEST_KAFKA", "127.0.0.1:9092")

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


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; return that or fail."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last one
            last_exc = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))


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

    def alerts(self, **labels) -> list[dict]:
        """Every alert received so far (with the receiver added), matching ``labels``."""
        with self.lock:
            found = []
            for note in self.notifications:
                for alert in note["alerts"]:
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
                    rule["for"] = FAST_FOR
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
