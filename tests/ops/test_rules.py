"""Prometheus rules: promtool syntax check, promtool unit tests, and the house rules
every alert must follow (severity, annotations, runbook, tests that fire and stay silent)."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from opskit import PROM_DIR, REPO, require_binary  # tests/ops/opskit.py, on sys.path via conftest.py

RULE_FILES = sorted((PROM_DIR / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM_DIR / "tests").glob("*.yml"))
RUNBOOK_BASE = "https://github.com/infersight/infersight/blob/main/"
SEVERITIES = {"critical", "warning", "info"}


def alerting_rules() -> list[dict]:
    doc = yaml.safe_load((PROM_DIR / "rules" / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


ALERTS = alerting_rules()
ALERT_NAMES = [r["alert"] for r in ALERTS]


def test_rule_files_exist():
    assert {p.name for p in RULE_FILES} >= {"alerts.yml", "recording.yml"}
    assert TEST_FILES, "no promtool unit tests in deploy/prometheus/tests"


@pytest.mark.prometheus
def test_promtool_check_rules():
    promtool = require_binary("promtool")
    out = subprocess.run([promtool, "check", "rules", *map(str, RULE_FILES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.prometheus
def test_promtool_unit_tests():
    promtool = require_binary("promtool")
    out = subprocess.run([promtool, "test", "rules", *map(str, TEST_FILES)], capture_output=True, text=True,
                         cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(TEST_FILES), out.stdout


def test_required_alerts_present():
    required = {
        "InfersightInputDrift", "InfersightOutputDrift", "InfersightAnomalyRateHigh",
        "InfersightPerformanceDegraded", "InfersightModelSilent", "InfersightArtifactUnapproved",
        "InfersightMonitorDown", "InfersightConsumerLagHigh", "InfersightRecordsRejected",
    }
    assert required <= set(ALERT_NAMES)
    assert len(ALERT_NAMES) == len(set(ALERT_NAMES)), "duplicate alert names"


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_NAMES)
def test_alert_conventions(rule):
    name = rule["alert"]
    assert re.fullmatch(r"Infersight[A-Z][A-Za-z]+", name)
    severity = rule.get("labels", {}).get("severity")
    assert severity, f"{name}: no severity label"
    assert severity in SEVERITIES or severity == "{{ $labels.severity }}", severity
    ann = rule.get("annotations", {})
    assert {"summary", "description", "runbook_url"} <= set(ann), f"{name}: missing annotations"
    # summary and description name what is affected
    if "model" in rule["expr"] and name not in {"InfersightMonitorDown", "InfersightKafkaDisconnected",
                                                  "InfersightConsumerLagHigh", "InfersightRecordsRejected"}:
        assert "$labels.model" in ann["summary"] and "$labels.model" in ann["description"], name
    assert ann["runbook_url"] == f"{RUNBOOK_BASE}docs/runbooks/{name}.md"
    runbook = REPO / "docs" / "runbooks" / f"{name}.md"
    assert runbook.is_file(), f"{name}: no runbook at {runbook.relative_to(REPO)}"
    text = runbook.read_text()
    assert text.startswith(f"# {name}"), f"{runbook}: must start with '# {name}'"
    for section in ("## What it means", "## Confirm", "## What to do"):
        assert section in text, f"{runbook}: missing section {section!r}"


def test_input_drift_alert_is_per_model_and_feature():
    rule = next(r for r in ALERTS if r["alert"] == "InfersightInputDrift")
    by = re.search(r"by \(([^)]*)\)", rule["expr"]).group(1)
    assert {"model", "feature"} <= {s.strip() for s in by.split(",")}
    desc = rule["annotations"]["description"]
    assert "query" in desc and "infersight_drift_threshold" in desc and "$value" in desc


def _unit_test_cases():
    """alertname -> [(test name, eval_time, number of expected alerts)] over all test files."""
    cases: dict[str, list[tuple[str, str, int]]] = {}
    for path in TEST_FILES:
        doc = yaml.safe_load(path.read_text())
        for test in doc["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], []).append(
                    (test.get("name", path.name), case["eval_time"], len(case.get("exp_alerts") or []))
                )
    return cases


@pytest.mark.parametrize("name", ALERT_NAMES)
def test_every_alert_has_firing_and_silent_unit_tests(name):
    cases = _unit_test_cases().get(name, [])
    assert any(n > 0 for _, _, n in cases), f"{name}: no promtool test where it fires"
    assert any(n == 0 for _, _, n in cases), f"{name}: no promtool test where it stays silent"


@pytest.mark.parametrize("name", ALERT_NAMES)
def test_every_alert_names_its_labels_in_unit_tests(name):
    """Expected alerts in the unit tests carry the rule's severity and full annotations
    (promtool compares annotations exactly, so templates are exercised)."""
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                if case["alertname"] != name:
                    continue
                for exp in case.get("exp_alerts") or []:
                    assert "severity" in exp["exp_labels"]
                    assert {"summary", "description", "runbook_url"} <= set(exp.get("exp_annotations", {}))
