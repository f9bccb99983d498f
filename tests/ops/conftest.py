"""Fixtures for the ops tests: real Prometheus, Alertmanager, Kafka and the daemon.

Helpers live in opskit.py beside this file (pytest runs with --import-mode=importlib,
so this directory is put on sys.path for the tests to import it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from opskit import run_alertmanager, run_webhook  # noqa: E402


@pytest.fixture
def webhook():
    with run_webhook() as hook:
        yield hook


@pytest.fixture
def alertmanager(tmp_path, webhook):
    with run_alertmanager(tmp_path / "alertmanager", webhook) as am:
        yield am
