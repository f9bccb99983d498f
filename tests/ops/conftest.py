"""Fixtures for the ops tests: real Prometheus, Alertmanager, Kafka and the daemon.

Helpers live in opskit.py beside this file (pytest runs with --import-mode=importlib,
so this directory is put on sys.path for the tests to import it).
"""

from __future__ import annotations

import http.server
import json
import sys
import threading
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from opskit import (  # noqa: E402
    AM_DIR,
    Alertmanager,
    Prometheus,
    Proc,
    Webhook,
    alertmanager_test_config,
    free_port,
    require_binary,
    shortened_rules,
    start_process,
)


@pytest.fixture
def webhook():
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
    yield hook
    server.shutdown()
    server.server_close()


# --------------------------------------------------------------------------- alertmanager
@pytest.fixture
def alertmanager(tmp_path, webhook):
    binary = require_binary("prometheus-alertmanager", "alertmanager")
    cfg_path = tmp_path / "alertmanager.yml"
    cfg_path.write_text(yaml.safe_dump(alertmanager_test_config(webhook), sort_keys=False))
    port = free_port()
    (tmp_path / "am-data").mkdir()
    proc = start_process(
        "alertmanager",
        [binary, f"--config.file={cfg_path}", f"--storage.path={tmp_path / 'am-data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=info"],
        tmp_path / "alertmanager.log",
        f"http://127.0.0.1:{port}/-/ready",
    )
    yield Alertmanager(f"http://127.0.0.1:{port}", proc)
    proc.stop()


# --------------------------------------------------------------------------- prometheus
@pytest.fixture
def start_prometheus(tmp_path):
    """Factory: start_prometheus(targets, labels=None, alertmanager_url=None, scheme="http", extra=None)."""
    binary = require_binary("prometheus")
    started: list[Proc] = []

    def start(targets: list[str], *, labels: dict | None = None, alertmanager_url: str | None = None,
              job_extra: dict | None = None) -> Prometheus:
        work = tmp_path / f"prom-{len(started)}"
        (work / "rules").mkdir(parents=True)
        rule_files = shortened_rules(work / "rules")
        job = {"job_name": "infersight", "static_configs": [{"targets": targets, "labels": labels or {}}]}
        job.update(job_extra or {})
        cfg = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [job],
        }
        if alertmanager_url:
            cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager_url.split("//")[1]]}]}]}
        (work / "prometheus.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        port = free_port()
        proc = start_process(
            "prometheus",
            [binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle",
             # resend firing alerts to Alertmanager every second, not every minute
             "--rules.alert.resend-delay=1s", "--log.level=info"],
            work / "prometheus.log",
            f"http://127.0.0.1:{port}/-/ready",
        )
        started.append(proc)
        return Prometheus(f"http://127.0.0.1:{port}", proc)

    yield start
    for proc in started:
        proc.stop()
