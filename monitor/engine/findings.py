"""The engine's vocabulary: alert kinds and the findings that step them.

Every check of a model (a *slot*, see :mod:`monitor.engine.slots`) reports
:class:`Finding` objects: one decision of one window about one subject. The
alert state machine (:mod:`monitor.engine.alerts`) turns consecutive
decisions about a subject into pending, firing and resolved alerts; how many
it takes, and how loud the page is, is the alert kind's row in
:data:`ALERT_KINDS`. Metrics, alert events, Prometheus rules, runbooks and
dashboards all use these names.

>>> ALERT_KINDS[ARTIFACT_UNAPPROVED].fires_at_once, ALERT_KINDS[INPUT_DRIFT].severity
(True, 'warning')
"""

from __future__ import annotations

from dataclasses import dataclass

from detectors.base import DriftResult

INPUT_DRIFT = "input_drift"
OUTPUT_DRIFT = "output_drift"
ANOMALY_RATE = "anomaly_rate"
LATENCY_SHIFT = "latency_shift"
PERFORMANCE_DEGRADED = "performance_degraded"
OUTPUT_SHAPE = "output_shape"
ARTIFACT_UNAPPROVED = "artifact_unapproved"
APPROVAL_REJECTED = "approval_rejected"
CANARY_MISMATCH = "canary_mismatch"
TRIGGER_SUSPECTED = "trigger_suspected"
SEGMENT_SUPPRESSION = "segment_suppression"


@dataclass(frozen=True, slots=True)
class AlertKind:
    """One kind of alert: what it means and how it pages.

    ``fires_at_once``: the first detected window pages (a calibrated, specific
    finding such as a swapped artifact must not serve for another window);
    otherwise ``alerts.fire_after_windows`` consecutive detected windows are
    needed. ``exact``: the check has no false-alarm rate (a digest is on the
    approved list or not), so it takes no share of the model's budget.
    """

    name: str
    severity: str
    fires_at_once: bool
    exact: bool
    summary: str


ALERT_KINDS: dict[str, AlertKind] = {
    kind.name: kind
    for kind in (
        AlertKind(INPUT_DRIFT, "warning", False, False, "an input feature's distribution moved from the reference"),
        AlertKind(OUTPUT_DRIFT, "critical", False, False, "the model's answers moved: users see it"),
        AlertKind(ANOMALY_RATE, "warning", False, False, "more records than expected look unlike the reference"),
        AlertKind(LATENCY_SHIFT, "warning", False, False, "the serving latency changed"),
        AlertKind(PERFORMANCE_DEGRADED, "critical", False, False, "accuracy from delayed labels dropped"),
        AlertKind(OUTPUT_SHAPE, "warning", False, False, "the shape of the outputs changed (collapse, bimodality)"),
        AlertKind(ARTIFACT_UNAPPROVED, "critical", True, True, "a model file that is not approved is serving"),
        AlertKind(APPROVAL_REJECTED, "critical", True, True, "a registry approval failed its signature check"),
        AlertKind(CANARY_MISMATCH, "critical", True, True, "a golden query got a different answer"),
        AlertKind(TRIGGER_SUSPECTED, "critical", True, False, "an input condition became tied to one class"),
        AlertKind(SEGMENT_SUPPRESSION, "critical", True, False, "a class vanished inside one segment"),
    )
}


@dataclass(slots=True)
class Finding:
    """One window decision about one subject of one model.

    ``feature`` is the subject (a feature, ``class=7``, ``country=fr``, a
    digest, a probe id; ``""`` for the model as a whole) and ``detector`` the
    check that decided: both are label values of the metrics and fields of
    alert events. ``since`` is the event time of the first record of the
    decided window and ``event_time`` that of its last record, so neither
    depends on how the stream was cut into poll batches. ``window`` orders the
    decisions about one subject (the model record count when the window
    closed; the labelled-record count for accuracy): decisions with the same
    number are one window, decided by several detectors, and are merged.
    """

    model: str
    alert: str
    feature: str
    detector: str
    result: DriftResult
    example_request_ids: list[str]
    event_time: float
    since: float | None = None  # None: the window started at event_time
    since_record: int | None = None  # model record index where the tested change starts
    window: int = 0


#: a decision that nothing is wrong, for checks that only report what they find
CLEAN = DriftResult(statistic=0.0, threshold=0.0, detected=False, n_seen=0, detail="no longer found")
