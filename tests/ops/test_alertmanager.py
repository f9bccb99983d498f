"""deploy/alertmanager/alertmanager.yml: amtool validation, the routing tree, and
grouping / inhibition on a real Alertmanager."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from opskit import AM_DIR, require_binary, wait_for

CONFIG = AM_DIR / "alertmanager.yml"


@pytest.mark.prometheus
def test_amtool_check_config():
    amtool = require_binary("amtool")
    out = subprocess.run([amtool, "check-config", str(CONFIG)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


ROUTES = [
    # labels -> receiver
    ({"alertname": "InfersightOutputDrift", "severity": "critical", "team": "fraud", "model": "m"}, "fraud-pager"),
    ({"alertname": "InfersightInputDrift", "severity": "warning", "team": "fraud", "model": "m"}, "fraud-chat"),
    ({"alertname": "InfersightInputDrift", "severity": "warning", "team": "search", "model": "m"}, "search-chat"),
    ({"alertname": "InfersightArtifactUnapproved", "severity": "critical", "team": "search"}, "search-pager"),
    ({"alertname": "InfersightInputDrift", "severity": "warning", "model": "m"}, "ml-platform-chat"),
    ({"alertname": "InfersightOutputDrift", "severity": "critical", "team": "unknown-team"}, "ml-platform-pager"),
    # the monitor's own health goes to the platform team even if the daemon belongs to a model team
    ({"alertname": "InfersightMonitorDown", "severity": "critical", "team": "fraud"}, "ml-platform-pager"),
    ({"alertname": "InfersightConsumerLagHigh", "severity": "warning", "team": "fraud"}, "ml-platform-chat"),
    ({"alertname": "InfersightModelErrors", "severity": "warning", "team": "fraud", "model": "m"},
     "ml-platform-chat"),
]


@pytest.mark.prometheus
@pytest.mark.parametrize("labels,receiver", ROUTES, ids=[f"{l['alertname']}-{r}" for l, r in ROUTES])
def test_routing_tree(labels, receiver):
    amtool = require_binary("amtool")
    out = subprocess.run(
        [amtool, "config", "routes", "test", f"--config.file={CONFIG}", *[f"{k}={v}" for k, v in labels.items()]],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == receiver


def _post(am_url: str, alerts: list[dict]) -> None:
    now = datetime.now(UTC)
    body = [
        {"labels": a, "annotations": {"summary": a["alertname"]},
         "startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=5)).isoformat()}
        for a in alerts
    ]
    req = urllib.request.Request(f"{am_url}/api/v2/alerts", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


@pytest.mark.prometheus
def test_inhibition_and_grouping_on_real_alertmanager(alertmanager, webhook):
    """Monitor down inhibits that job's model alerts (not another job's); an unapproved
    artifact inhibits the same model's drift; one notification per model group."""
    drift_f1 = {"alertname": "InfersightInputDrift", "severity": "warning", "job": "infersight",
                "team": "fraud", "model": "m1", "feature": "f1"}
    drift_f2 = {**drift_f1, "feature": "f2"}
    other_job = {**drift_f1, "job": "infersight-eu", "model": "m9"}
    monitor_down = {"alertname": "InfersightMonitorDown", "severity": "critical", "job": "infersight",
                    "instance": "d1:9108"}
    artifact = {"alertname": "InfersightArtifactUnapproved", "severity": "critical", "job": "infersight-eu",
                "team": "search", "model": "m7", "digest": "sha256:bb"}
    drift_m7 = {"alertname": "InfersightOutputDrift", "severity": "critical", "job": "infersight-eu",
                "team": "search", "model": "m7"}
    _post(alertmanager.url, [monitor_down, drift_f1, drift_f2, other_job, artifact, drift_m7])

    def states():
        got = {}
        for a in alertmanager.alerts():
            key = (a["labels"]["alertname"], a["labels"].get("job"), a["labels"].get("model"), a["labels"].get("feature"))
            got[key] = a["status"]
        return got if len(got) == 6 else None

    def settled():
        s = states()
        return s if s and s[("InfersightInputDrift", "infersight", "m1", "f1")]["inhibitedBy"] \
            and s[("InfersightOutputDrift", "infersight-eu", "m7", None)]["inhibitedBy"] else None

    got = wait_for(settled, 20, what="inhibitions to apply")
    assert got[("InfersightInputDrift", "infersight", "m1", "f2")]["state"] == "suppressed"
    assert got[("InfersightInputDrift", "infersight-eu", "m9", "f1")]["state"] == "active"
    assert got[("InfersightMonitorDown", "infersight", None, None)]["state"] == "active"
    assert got[("InfersightArtifactUnapproved", "infersight-eu", "m7", None)]["state"] == "active"

    # notifications: receivers by team and severity; the inhibited alerts never arrive
    wait_for(lambda: len(webhook.notifications) >= 3, 20, what="3 notifications")
    time.sleep(2)  # anything else that was going to arrive
    delivered = {(a["labels"]["alertname"], a["labels"].get("model"), a["receiver_path"]) for a in webhook.alerts()}
    assert delivered == {
        ("InfersightMonitorDown", None, "ml-platform-pager"),
        ("InfersightInputDrift", "m9", "fraud-chat"),
        ("InfersightArtifactUnapproved", "m7", "search-pager"),
    }
