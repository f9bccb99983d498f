#!/usr/bin/env python3
"""Generate the infersight Grafana dashboards (grafana/dashboards/*.json).

    python grafana/build_dashboards.py          # rewrite the JSON files
    python grafana/build_dashboards.py --check  # exit 1 if the files are stale (CI)

The JSON is the artefact Grafana loads (via grafana/provisioning/); this script
is how it is edited, so the three dashboards share one style and every panel
follows the rules tests/ops/test_dashboards.py checks: Grafana 10+ schema,
stable uids, a `datasource` variable of type prometheus, every query on
`${datasource}`, no hard-coded datasource ids.

Queries use the metrics contract (docs/architecture.md) directly, not recording rules, so
the dashboards work on any Prometheus that scrapes infersight.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 39  # Grafana 10.4
DS = {"type": "prometheus", "uid": "${datasource}"}
RUNBOOKS = "https://github.com/infersight/infersight/blob/main/docs/runbooks/"
# hst (anomaly ratio) and cusum (latency) share the drift metrics but are not input drift
INPUT = 'detector!~"prediction_.*|hst|cusum"'
OUTPUT = 'detector=~"prediction_.*"'


# --------------------------------------------------------------------------- building blocks
def target(expr: str, legend: str = "", *, ref: str = "A", instant: bool = False, fmt: str = "time_series") -> dict:
    t = {
        "refId": ref,
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "format": fmt,
        "editorMode": "code",
    }
    return t


def _targets(queries) -> list[dict]:
    out = []
    for i, q in enumerate(queries):
        if isinstance(q, str):
            q = target(q)
        out.append({**q, "refId": chr(ord("A") + i)})
    return out


def panel(kind: str, title: str, queries, *, w: int = 12, h: int = 8, unit: str | None = None,
          description: str = "", options: dict | None = None, defaults: dict | None = None,
          overrides: list | None = None, transformations: list | None = None) -> dict:
    d = {"unit": unit} if unit else {}
    d.update(defaults or {})
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": _targets(queries),
        "fieldConfig": {"defaults": d, "overrides": overrides or []},
        "options": options or {},
        "gridPos": {"w": w, "h": h},
    }
    if transformations:
        p["transformations"] = transformations
    return p


def timeseries(title, queries, *, unit=None, stack=False, min_=None, max_=None, thresholds=None, **kw):
    defaults = {"custom": {"lineWidth": 1, "fillOpacity": 20 if stack else 0, "showPoints": "never",
                           "stacking": {"mode": "normal" if stack else "none", "group": "A"}}}
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    if thresholds:
        defaults["thresholds"] = {"mode": "absolute", "steps": thresholds}
        defaults["custom"]["thresholdsStyle"] = {"mode": "dashed"}
    options = {"legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "max"]},
               "tooltip": {"mode": "multi", "sort": "desc"}}
    return panel("timeseries", title, queries, unit=unit, defaults=defaults, options=options, **kw)


def stat(title, query, *, unit=None, thresholds=None, w=4, h=4, mappings=None, **kw):
    defaults = {"thresholds": {"mode": "absolute", "steps": thresholds or [{"color": "green", "value": None}]},
                "color": {"mode": "thresholds"}}
    if mappings:
        defaults["mappings"] = mappings
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
               "colorMode": "background", "graphMode": "area", "textMode": "auto"}
    return panel("stat", title, [query], unit=unit, w=w, h=h, defaults=defaults, options=options, **kw)


def state_timeline(title, queries, *, mappings, **kw):
    defaults = {"mappings": mappings, "color": {"mode": "thresholds"},
                "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                             {"color": "red", "value": 1}]},
                "custom": {"fillOpacity": 80, "lineWidth": 0}}
    options = {"showValue": "never", "mergeValues": True, "rowHeight": 0.8,
               "legend": {"showLegend": False}, "tooltip": {"mode": "single"}}
    return panel("state-timeline", title, queries, defaults=defaults, options=options, **kw)


def table(title, queries, *, transformations=None, overrides=None, **kw):
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    return panel("table", title, queries, options=options, transformations=transformations,
                 overrides=overrides, **kw)


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "gridPos": {"w": 24, "h": 1}}


RED_IF_1 = [{"color": "green", "value": None}, {"color": "red", "value": 1}]
OK_MAP = [{"type": "value", "options": {"0": {"text": "ok", "color": "green"}, "1": {"text": "DRIFT", "color": "red"}}}]
BOOL_MAP = [{"type": "value", "options": {"0": {"text": "no", "color": "red"}, "1": {"text": "yes", "color": "green"}}}]


def layout(panels: list[dict]) -> list[dict]:
    """Place panels left to right, wrapping at 24 columns; give them stable ids."""
    x = y = line_h = 0
    for i, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if p["type"] == "row" or x + w > 24:
            x, y = 0, y + line_h
            line_h = 0
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        p["id"] = i
        x += w
        line_h = max(line_h, h)
        if p["type"] == "row":
            x, y, line_h = 0, y + h, 0
    return panels


DATASOURCE_VAR = {
    "name": "datasource",
    "label": "Data source",
    "type": "datasource",
    "query": "prometheus",
    "current": {},
    "hide": 0,
    "refresh": 1,
    "regex": "",
    "options": [],
}


def query_var(name: str, query: str, label: str) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-variable"},
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "includeAll": False,
        "multi": False,
        "current": {},
        "hide": 0,
        "options": [],
        "regex": "",
    }


def dashboard(uid: str, title: str, description: str, panels: list[dict], *, variables=(), annotations=(),
              links=()) -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["infersight"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "templating": {"list": [DATASOURCE_VAR, *variables]},
        "annotations": {"list": [
            {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
             "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"},
            *annotations,
        ]},
        "links": [
            {"title": "infersight dashboards", "type": "dashboards", "tags": ["infersight"], "asDropdown": True,
             "includeVars": False, "keepTime": True},
            *links,
        ],
        "panels": layout(panels),
    }


def model_link(field: str = "model") -> dict:
    """Table override: clicking a model opens its drill-down with the same data source."""
    return {
        "matcher": {"id": "byName", "options": field},
        "properties": [{"id": "links", "value": [{
            "title": "Open model ${__value.text}",
            "url": "/d/infersight-model/infersight-model?var-model=${__value.text}&${datasource:queryparam}&${__url_time_range}",
        }]}],
    }


# --------------------------------------------------------------------------- fleet overview
def fleet() -> dict:
    ri = "$__rate_interval"
    per_model = [
        target(f"sum by (model) (rate(infersight_records_total[{ri}]))", instant=True, fmt="table"),
        target(f"max by (model) (infersight_drift_detected_features{{{INPUT}}})", instant=True, fmt="table"),
        target(f"max by (model) (infersight_drift_detected{{{OUTPUT}}})", instant=True, fmt="table"),
        target("max by (model) (infersight_anomaly_ratio)", instant=True, fmt="table"),
        target("sum by (model) (infersight_alert_active) or sum by (model) (infersight_records_total) * 0",
               instant=True, fmt="table"),
        target('max by (model) (infersight_model_artifact_info{approved="false"}) '
               "or max by (model) (infersight_model_artifact_info) * 0", instant=True, fmt="table"),
        target("min by (model) (infersight_reference_ready)", instant=True, fmt="table"),
    ]
    names = ["records/s", "drifted input features", "output drift", "anomaly ratio", "daemon alerts firing",
             "unapproved artifact", "reference ready"]
    rename = {f"Value #{chr(ord('A') + i)}": n for i, n in enumerate(names)}
    status_table = table(
        "Models: status",
        per_model,
        w=24, h=10,
        description="One row per monitored model. Red cells need attention; click a model to drill down.",
        transformations=[
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True}, "renameByName": rename}},
        ],
        overrides=[
            model_link(),
            *[{"matcher": {"id": "byName", "options": n},
               "properties": [{"id": "custom.cellOptions", "value": {"type": "color-background"}},
                              {"id": "thresholds", "value": {"mode": "absolute", "steps": RED_IF_1}}]}
              for n in ("drifted input features", "output drift", "daemon alerts firing", "unapproved artifact")],
            {"matcher": {"id": "byName", "options": "anomaly ratio"},
             "properties": [{"id": "unit", "value": "percentunit"},
                            {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                            {"id": "thresholds", "value": {"mode": "absolute", "steps": [
                                {"color": "green", "value": None}, {"color": "red", "value": 0.05}]}}]},
            {"matcher": {"id": "byName", "options": "records/s"}, "properties": [{"id": "unit", "value": "reqps"}]},
            {"matcher": {"id": "byName", "options": "reference ready"},
             "properties": [{"id": "mappings", "value": BOOL_MAP},
                            {"id": "custom.cellOptions", "value": {"type": "color-text"}}]},
        ],
    )
    panels = [
        row("Fleet"),
        stat("Models monitored", "count(count by (model) (infersight_records_total))"),
        stat("Records / s", f"sum(rate(infersight_records_total[{ri}]))", unit="reqps"),
        stat("Rejected", f"sum(rate(infersight_records_rejected_total[{ri}])) / "
             f"(sum(rate(infersight_records_rejected_total[{ri}])) + sum(rate(infersight_records_total[{ri}])))",
             unit="percentunit", thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 0.01}],
             description="Share of received records rejected (dead-lettered). Alert: InfersightRecordsRejected."),
        stat("Prometheus alerts firing",
             'count(ALERTS{alertname=~"Infersight.+", alertstate="firing"}) or vector(0)',
             thresholds=RED_IF_1),
        stat("Monitors up", 'sum(up{job="infersight"})',
             description="Daemons Prometheus scrapes successfully. Alert: InfersightMonitorDown.",
             thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}]),
        stat("Consumer lag", "sum(infersight_consumer_lag)", unit="short",
             thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 10000},
                         {"color": "red", "value": 100000}]),
        row("Models"),
        status_table,
        timeseries("Records / s by model", [target(f"sum by (model) (rate(infersight_records_total[{ri}]))",
                                                    "{{model}}")], unit="reqps", stack=True),
        timeseries("Drifted input features by model",
                   [target(f"max by (model) (infersight_drift_detected_features{{{INPUT}}})", "{{model}}")],
                   min_=0, description="Features whose latest window tested as drifted (max over detectors, "
                   "all features, exported or not)."),
        timeseries("Alerts firing (Prometheus)",
                   [target('count by (alertname, severity) (ALERTS{alertname=~"Infersight.+", alertstate="firing"})',
                           "{{alertname}} ({{severity}})"),
                    target('count(ALERTS{alertname=~"Infersight.+", alertstate="firing"}) or vector(0)', "total")],
                   min_=0,
                   description="Alerts from deploy/prometheus/rules/alerts.yml. Runbooks: " + RUNBOOKS),
        timeseries("Daemon alert state by model",
                   [target("sum by (model, alert) (infersight_alert_active)", "{{model}} {{alert}}")],
                   min_=0, max_=1, description="infersight_alert_active: the daemon's own state machine "
                   "(hysteresis), 1 while firing."),
        timeseries("Rejected records / s by reason",
                   [target(f"sum by (reason) (rate(infersight_records_rejected_total[{ri}]))", "{{reason}}")],
                   unit="reqps", stack=True),
        timeseries("Consumer lag by topic / partition",
                   [target("sum by (topic, partition) (infersight_consumer_lag)", "{{topic}}/{{partition}}")],
                   unit="short", min_=0),
    ]
    return dashboard(
        "infersight-fleet", "infersight / Fleet overview",
        "Every monitored model: status, alerts, throughput, rejects, consumer lag.", panels,
        links=[{"title": "Model drill-down", "type": "link", "url": "/d/infersight-model/infersight-model",
                "includeVars": True, "keepTime": True, "icon": "dashboard"},
               {"title": "Monitor health", "type": "link", "url": "/d/infersight-monitor/infersight-monitor",
                "includeVars": True, "keepTime": True, "icon": "dashboard"}],
    )


# --------------------------------------------------------------------------- per-model drill-down
def model() -> dict:
    m = 'model="$model"'
    ri = "$__rate_interval"
    panels = [
        row("Status"),
        stat("Records / s", f"sum(rate(infersight_records_total{{{m}}}[{ri}]))", unit="reqps"),
        stat("Reference learned", f"min(infersight_reference_ready{{{m}}})", mappings=BOOL_MAP,
             thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}],
             description="Drift tests start once the model's reference window is learned."),
        stat("Drifted input features", f"max(infersight_drift_detected_features{{{m},{INPUT}}})",
             thresholds=RED_IF_1),
        stat("Daemon alerts firing", f"sum(infersight_alert_active{{{m}}}) or vector(0)", thresholds=RED_IF_1),
        stat("Anomaly ratio (now)", f"max(infersight_anomaly_ratio{{{m}}})", unit="percentunit",
             thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 0.05}]),
        stat("Unexported features", f"max(infersight_features_unexported{{{m}}})",
             description="Features over metrics.max_exported_features: monitored, but not exported one by one."),
        table("Artifact (served model file) and who signed its approval",
              [target(f"max by (digest, approved, signer) (infersight_model_artifact_info{{{m}}})", instant=True,
                      fmt="table")],
              w=18, h=4,
              description="Digests reported by the model's records (infersight digest PATH computes them); "
                          "approved=false pages (InfersightArtifactUnapproved). signer: fingerprint of the "
                          "trusted key whose signed approval lets the digest serve; none = not signed "
                          "(config approval, unsigned registry approval or trust on first use).",
              transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}],
              overrides=[{"matcher": {"id": "byName", "options": "approved"},
                          "properties": [{"id": "mappings", "value": [{"type": "value", "options": {
                              "true": {"color": "green", "text": "approved"},
                              "false": {"color": "red", "text": "NOT APPROVED"}}}]},
                                         {"id": "custom.cellOptions", "value": {"type": "color-background"}}]},
                         {"matcher": {"id": "byName", "options": "signer"},
                          "properties": [{"id": "mappings", "value": [{"type": "value", "options": {
                              "none": {"color": "orange", "text": "unsigned"}}}]},
                                         {"id": "custom.cellOptions", "value": {"type": "color-text"}}]}]),
        stat("Refused registry approvals", f"count(infersight_approval_rejected_info{{{m}}}) or vector(0)",
             w=6, thresholds=RED_IF_1,
             description="Approvals of this model the daemon refused (unsigned, untrusted key, altered, ...) "
                         "and no valid signed approval has superseded yet; each pages "
                         "(InfersightApprovalRejected)."),
        row("Input drift"),
        timeseries("Drift score / threshold per feature (> 1 = drift)",
                   [target(f"max by (feature, detector) (infersight_drift_score{{{m},{INPUT}}}"
                           f" / infersight_drift_threshold{{{m},{INPUT}}})",
                           "{{feature}} {{detector}}")],
                   w=24, h=10, min_=0,
                   thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
                   description="Each test's statistic divided by its calibrated critical value, so "
                               "features and detectors share one scale. feature=\"\" is a multivariate "
                               "test (mmd, pca_reconstruction)."),
        state_timeline("Drift decision per feature",
                       [target(f'max by (feature) (label_replace(infersight_drift_detected{{{m},{INPUT}}}, '
                               f'"feature", "(all features)", "feature", ""))', "{{feature}}")],
                       mappings=OK_MAP, w=12, h=10),
        table("Latest tests",
              [target(f"max by (feature, detector) (infersight_drift_score{{{m}}})", instant=True, fmt="table"),
               target(f"max by (feature, detector) (infersight_drift_threshold{{{m}}})", instant=True, fmt="table"),
               target(f"max by (feature, detector) (infersight_drift_p_value{{{m}}})", instant=True, fmt="table"),
               target(f"max by (feature, detector) (infersight_drift_detected{{{m}}})", instant=True, fmt="table"),
               target(f"max by (feature, detector) (infersight_detector_records{{{m}}})", instant=True,
                      fmt="table")],
              w=12, h=10,
              transformations=[
                  {"id": "merge", "options": {}},
                  {"id": "organize", "options": {"excludeByName": {"Time": True}, "renameByName": {
                      "Value #A": "score", "Value #B": "threshold", "Value #C": "p-value",
                      "Value #D": "detected", "Value #E": "values seen"}}},
                  {"id": "sortBy", "options": {"sort": [{"field": "detected", "desc": True}]}},
              ],
              overrides=[{"matcher": {"id": "byName", "options": "detected"},
                          "properties": [{"id": "mappings", "value": OK_MAP},
                                         {"id": "custom.cellOptions", "value": {"type": "color-background"}}]}]),
        row("Outputs"),
        timeseries("Prediction mix", [target(f"max by (class) (infersight_prediction_ratio{{{m}}})", "{{class}}")],
                   unit="percentunit", stack=True, min_=0, max_=1),
        timeseries("Output drift score / threshold (> 1 = drift)",
                   [target(f"max by (detector) (infersight_drift_score{{{m},{OUTPUT}}}"
                           f" / infersight_drift_threshold{{{m},{OUTPUT}}})", "{{detector}}")],
                   min_=0, thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}]),
        timeseries("Anomaly ratio", [target(f"max(infersight_anomaly_ratio{{{m}}})", "anomalous")],
                   unit="percentunit", min_=0,
                   thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 0.05}]),
        timeseries("Performance (delayed labels)",
                   [target(f"max by (metric) (infersight_model_performance{{{m}}})", "{{metric}}")],
                   min_=0, description="Needs the labels topic (delayed ground truth)."),
        timeseries("Delayed labels / s by outcome",
                   [target(f"sum by (outcome) (rate(infersight_labels_total{{{m}}}[{ri}]))", "{{outcome}}")],
                   unit="reqps", stack=True,
                   description="Label messages joined to a remembered prediction (matched), without one "
                               "(unmatched), or arriving after the prediction was forgotten. Few matched "
                               "labels = a performance number on little evidence."),
        row("Alerts"),
        state_timeline("Daemon alerts", [target(f"max by (alert) (infersight_alert_active{{{m}}})", "{{alert}}")],
                       mappings=[{"type": "value", "options": {"0": {"text": "ok", "color": "green"},
                                                                "1": {"text": "FIRING", "color": "red"}}}],
                       w=12),
        table("Prometheus alerts for this model",
              [target(f'count by (alertname, severity, feature, alertstate) (ALERTS{{{m}}})', instant=True,
                      fmt="table")],
              w=12, transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True,
                                                                                       "Value": True}}}]),
    ]
    return dashboard(
        "infersight-model", "infersight / Model drill-down",
        "One model: drift per feature over time, prediction mix, anomaly ratio, performance, artifact digest "
        "and who signed it.",
        panels,
        variables=[query_var("model", "label_values(infersight_records_total, model)", "Model")],
        annotations=[{"name": "Prometheus alerts", "datasource": DS, "enable": True, "iconColor": "red",
                      "expr": f'ALERTS{{{m}, alertstate="firing"}}', "step": "60s",
                      "titleFormat": "{{alertname}}", "textFormat": "{{feature}}", "useValueForTime": False}],
        links=[{"title": "Fleet overview", "type": "link", "url": "/d/infersight-fleet/infersight-fleet",
                "includeVars": False, "keepTime": True, "icon": "dashboard"}],
    )


# --------------------------------------------------------------------------- the monitor's own health
def monitor() -> dict:
    ri = "$__rate_interval"
    j = 'job="infersight"'
    panels = [
        row("Daemons"),
        stat("Daemons up", f"sum(up{{{j}}})", thresholds=[{"color": "red", "value": None},
                                                         {"color": "green", "value": 1}]),
        stat("Kafka connected", "min(infersight_kafka_connected)", mappings=BOOL_MAP,
             thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}]),
        stat("Batch p99", f"histogram_quantile(0.99, sum by (le) (rate(infersight_batch_duration_seconds_bucket[{ri}])))",
             unit="s"),
        stat("Series exported", f"sum(scrape_samples_scraped{{{j}}})",
             description="Samples per scrape over all daemons: the monitor's own cardinality."),
        stat("Models", "count(count by (model) (infersight_records_total))"),
        stat("Consumer lag", "sum(infersight_consumer_lag)", unit="short"),
        timeseries("Scrape target up", [target(f"up{{{j}}}", "{{instance}}")], min_=0, max_=1),
        timeseries("Kafka connection by instance", [target("infersight_kafka_connected", "{{instance}}")], min_=0, max_=1),
        row("Throughput and latency"),
        timeseries("Records / s (accepted, rejected)",
                   [target(f"sum by (instance) (rate(infersight_records_total[{ri}]))", "{{instance}} accepted"),
                    target(f"sum by (instance) (rate(infersight_records_rejected_total[{ri}]))",
                           "{{instance}} rejected")], unit="reqps"),
        timeseries("Batch duration",
                   [target(f"histogram_quantile(0.5, sum by (instance, le) "
                           f"(rate(infersight_batch_duration_seconds_bucket[{ri}])))", "{{instance}} p50"),
                    target(f"histogram_quantile(0.99, sum by (instance, le) "
                           f"(rate(infersight_batch_duration_seconds_bucket[{ri}])))", "{{instance}} p99")],
                   unit="s"),
        timeseries("Batches / s", [target(f"sum by (instance) (rate(infersight_batch_duration_seconds_count[{ri}]))",
                                          "{{instance}}")], unit="ops"),
        timeseries("Consumer lag by partition",
                   [target("sum by (topic, partition) (infersight_consumer_lag)", "{{topic}}/{{partition}}")],
                   unit="short", min_=0),
        row("Limits and cardinality"),
        timeseries("Rejected / s by reason",
                   [target(f"sum by (reason) (rate(infersight_records_rejected_total[{ri}]))", "{{reason}}")],
                   unit="reqps", stack=True,
                   description="model_limit, too_many_features, record_too_large: a limit was hit (docs/architecture.md, "
                               "principle 5)."),
        timeseries("Detector errors / s by model",
                   [target(f"sum by (model) (rate(infersight_model_errors_total[{ri}]))"
                           f" or sum by (model) (rate(infersight_records_total[{ri}])) * 0", "{{model}}")],
                   unit="reqps", min_=0,
                   description="Records a model's detectors failed on (internal errors, logged with a traceback): "
                               "not monitored. Alert: InfersightModelErrors."),
        timeseries("Features not exported / ignored per model",
                   [target("sum by (model) (infersight_features_unexported)", "{{model}} unexported"),
                    target("sum by (model) (infersight_features_ignored)", "{{model}} ignored")], min_=0),
        timeseries("Scrape: samples and duration",
                   [target(f"scrape_samples_scraped{{{j}}}", "{{instance}} samples"),
                    target(f"scrape_duration_seconds{{{j}}} * 1000", "{{instance}} duration ms")]),
        table("Versions", [target("count by (instance, version) (infersight_build_info)", instant=True,
                                  fmt="table")],
              transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}]),
    ]
    return dashboard(
        "infersight-monitor", "infersight / Monitor health",
        "The infersight daemons themselves: up, Kafka, throughput, batch latency, lag, limits, cardinality.",
        panels,
        links=[{"title": "Fleet overview", "type": "link", "url": "/d/infersight-fleet/infersight-fleet",
                "includeVars": False, "keepTime": True, "icon": "dashboard"}],
    )


DASHBOARDS = {"infersight-fleet.json": fleet, "infersight-model.json": model, "infersight-monitor.json": monitor}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2, sort_keys=False) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the JSON files differ from this script")
    args = parser.parse_args(argv)
    stale = []
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        path = OUT / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}; run python grafana/build_dashboards.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
