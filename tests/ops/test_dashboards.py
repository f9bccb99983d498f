"""Structure of the Grafana dashboards and provisioning (no Grafana needed).

What Grafana 10+ needs to load them and what keeps them portable: schemaVersion,
stable unique uids, a `datasource` variable of type prometheus that every panel
and query uses, no hard-coded data source, valid layout. That every query returns
data from a real daemon is checked in test_alert_pipeline.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from opskit import DASHBOARD_DIR, REPO, dashboard_queries, iter_panels, load_dashboards

DASHBOARDS = load_dashboards()
EXPECTED_UIDS = {"infersight-fleet", "infersight-model", "infersight-monitor"}
DS = {"type": "prometheus", "uid": "${datasource}"}
BUILTIN_ANNOTATION_DS = {"type": "grafana", "uid": "-- Grafana --"}


def test_generated_json_is_fresh():
    out = subprocess.run([sys.executable, str(REPO / "grafana" / "build_dashboards.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_expected_dashboards_with_stable_unique_uids():
    uids = [d["uid"] for d in DASHBOARDS.values()]
    assert len(uids) == len(set(uids))
    assert set(uids) == EXPECTED_UIDS
    for name, dash in DASHBOARDS.items():
        assert name == f"{dash['uid']}.json"
        assert len(dash["uid"]) <= 40 and re.fullmatch(r"[a-z0-9-]+", dash["uid"])
        assert dash["title"].startswith("infersight / ")
    titles = [d["title"] for d in DASHBOARDS.values()]
    assert len(titles) == len(set(titles))


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_structure(name):
    dash = DASHBOARDS[name]
    assert dash["schemaVersion"] >= 38
    assert "id" not in dash or dash["id"] is None, "a dashboard id pins it to one Grafana: use uid only"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds_var = variables.get("datasource")
    assert ds_var and ds_var["type"] == "datasource" and ds_var["query"] == "prometheus"
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == DS

    panel_ids = []
    for panel in iter_panels(dash["panels"]):
        panel_ids.append(panel["id"])
        gp = panel["gridPos"]
        assert 0 <= gp["x"] and gp["x"] + gp["w"] <= 24 and gp["h"] > 0, panel["title"]
        if panel["type"] == "row":
            assert not panel.get("targets")
            continue
        assert panel.get("title"), f"untitled panel {panel['id']}"
        assert panel["datasource"] == DS, panel["title"]
        targets = panel.get("targets") or []
        assert targets, f"{panel['title']}: no queries"
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for t in targets:
            assert t["datasource"] == DS, f"{panel['title']} {t['refId']}"
            assert t["expr"].strip(), f"{panel['title']} {t['refId']}: empty query"
            used = set(re.findall(r"\$\{?([a-zA-Z_]\w*)", t["expr"]))
            unknown = {u for u in used if not u.startswith("__")} - set(variables)
            assert not unknown, f"{panel['title']}: undefined variables {unknown}"
    assert len(panel_ids) == len(set(panel_ids)), "duplicate panel ids"
    titles = [p["title"] for p in iter_panels(dash["panels"]) if p["type"] != "row"]
    assert len(titles) == len(set(titles)), "duplicate panel titles"

    # no data source pinned anywhere (by name, id or a concrete uid), except Grafana's built-in annotation
    def walk(node, path="$"):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource" and value not in (DS, BUILTIN_ANNOTATION_DS):
                    pytest.fail(f"{name}: hard-coded datasource at {path}: {value!r}")
                if key == "datasourceId":
                    pytest.fail(f"{name}: datasourceId at {path}")
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")

    walk(dash)


def test_model_dashboard_has_model_variable_used_everywhere():
    dash = DASHBOARDS["infersight-model.json"]
    var = next(v for v in dash["templating"]["list"] if v["name"] == "model")
    assert "label_values(" in var["definition"] and var["query"]["query"] == var["definition"]
    for panel in iter_panels(dash["panels"]):
        for t in panel.get("targets", []):
            assert "$model" in t["expr"], f"{panel['title']}: not filtered by $model"


def test_every_contract_metric_appears_on_a_dashboard():
    exprs = " ".join(e for *_, e in dashboard_queries())
    for metric in [
        "infersight_records_total", "infersight_records_rejected_total", "infersight_drift_score",
        "infersight_drift_threshold", "infersight_drift_p_value", "infersight_drift_detected",
        "infersight_drift_detected_features", "infersight_features_unexported", "infersight_prediction_ratio",
        "infersight_anomaly_ratio", "infersight_model_performance", "infersight_model_artifact_info",
        "infersight_alert_active", "infersight_consumer_lag", "infersight_batch_duration_seconds_bucket",
        "infersight_kafka_connected", "infersight_reference_ready", "infersight_detector_records",
    ]:
        assert metric in exprs, f"{metric} is on no dashboard"


def test_provisioning_files():
    ds = yaml.safe_load((REPO / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["apiVersion"] == 1 and ds["datasources"][0]["type"] == "prometheus"
    prov = yaml.safe_load((REPO / "grafana/provisioning/dashboards/infersight.yml").read_text())
    assert prov["apiVersion"] == 1
    provider = prov["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"]
    assert DASHBOARD_DIR.is_dir()


def test_json_is_plain_json():
    for path in DASHBOARD_DIR.glob("*.json"):
        json.loads(path.read_text())  # no comments, no trailing commas
