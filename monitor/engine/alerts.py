"""Alert state machine: pending -> firing -> resolved, with hysteresis and dedup.

An alert is keyed by (model, alert kind, feature). Each window decision about
that subject moves it: ``fire_after`` consecutive detections take it from
inactive through pending to firing; ``resolve_after`` consecutive clean windows
resolve it. Several detectors on one feature decide in the same window; they
are merged into one decision (detected if any detector is), so one shift pages
once, not once per detector.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from monitor.engine.model_monitor import CLEAN, Finding

log = logging.getLogger("infersight.alerts")

#: severity of each alert kind (the ``severity`` label of infersight_alert_active)
SEVERITY = {
    "input_drift": "warning",
    "output_drift": "critical",  # the model's answers changed: users see it
    "anomaly_rate": "warning",
    "latency_shift": "warning",
    "performance_degraded": "critical",
    "output_shape": "warning",
    "artifact_unapproved": "critical",
    "approval_rejected": "critical",  # a registry approval failed its signature check
    "canary_mismatch": "critical",
    "trigger_suspected": "critical",
    "segment_suppression": "critical",
}


@dataclass(slots=True)
class AlertEvent:
    """A state change worth telling someone about (published as JSON)."""

    status: str  # "firing" | "resolved"
    model: str
    alert: str
    severity: str
    feature: str
    detector: str
    statistic: float
    threshold: float
    p_value: float | None
    since: str  # RFC 3339 event time of the first detection
    since_record: int | None
    example_request_ids: list[str]
    detail: str
    at: str  # RFC 3339 event time of this change

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(slots=True)
class _State:
    status: str = "inactive"  # inactive | pending | firing
    hits: int = 0
    clears: int = 0
    since: float = 0.0
    since_record: int | None = None
    examples: list[str] = field(default_factory=list)
    last_event_time: float = 0.0


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


#: kinds that page on the first detection: each is already a calibrated,
#: specific finding, and a swapped model must not serve for another window
FIRE_AT_ONCE = frozenset({"artifact_unapproved", "approval_rejected", "canary_mismatch", "trigger_suspected",
                          "segment_suppression"})


class AlertBook:
    """Every alert's state; ``observe`` turns findings into events."""

    def __init__(self, fire_after: int = 2, resolve_after: int = 2, max_examples: int = 5):
        self.fire_after = fire_after
        self.resolve_after = resolve_after
        self.max_examples = max_examples
        self.states: dict[tuple[str, str, str], _State] = {}

    def observe(self, findings: list[Finding], complete: set[tuple[str, str]] = frozenset()) -> list[AlertEvent]:
        """Step every alert the findings decide. For ``(model, kind)`` pairs in
        ``complete`` the findings are the whole truth: an open alert of that
        kind that was not found again gets a clean decision."""
        # One decision per subject per window: the strongest finding stands for
        # it.  Most subjects have one window per call; several (delayed-label
        # accuracy windows) are stepped in their order.
        decisions: dict[tuple[str, str, str, int], Finding] = {}
        for finding in findings:
            key = (finding.model, finding.alert, finding.feature, finding.window)
            best = decisions.get(key)
            if best is None or _strength(finding) > _strength(best):
                decisions[key] = finding
        decided = {key[:3] for key in decisions}
        for key, state in self.states.items():
            if key[:2] in complete and key not in decided and state.status != "inactive":
                decisions[(*key, 0)] = Finding(key[0], key[1], key[2], "", CLEAN, [], state.last_event_time)
        events = []
        for (model, kind, subject, _), finding in sorted(decisions.items(), key=lambda item: item[0][3]):
            event = self._step((model, kind, subject), finding)
            if event is not None:
                log.warning("alert %s: %s", event.status, _describe(event))
                events.append(event)
        return events

    def _step(self, key: tuple[str, str, str], finding: Finding) -> AlertEvent | None:
        state = self.states.setdefault(key, _State())
        state.last_event_time = finding.event_time
        if finding.result.detected:
            state.clears = 0
            state.hits += 1
            if state.status == "inactive":
                state.status = "pending"
                state.since = finding.event_time
                state.since_record = finding.since_record
                state.examples = []
            if len(state.examples) < self.max_examples:
                state.examples.extend(finding.example_request_ids[: self.max_examples - len(state.examples)])
            fire_after = 1 if key[1] in FIRE_AT_ONCE else self.fire_after
            if state.status == "pending" and state.hits >= fire_after:
                state.status = "firing"
                return self._event("firing", key, state, finding)
            return None
        state.hits = 0
        if state.status == "pending":
            state.status = "inactive"  # a blip, never paged
        elif state.status == "firing":
            state.clears += 1
            if state.clears >= self.resolve_after:
                state.status = "inactive"
                state.clears = 0
                return self._event("resolved", key, state, finding)
        return None

    def _event(self, status: str, key: tuple[str, str, str], state: _State, finding: Finding) -> AlertEvent:
        model, alert, feature = key
        result = finding.result
        return AlertEvent(
            status=status,
            model=model,
            alert=alert,
            severity=SEVERITY.get(alert, "warning"),
            feature=feature,
            detector=finding.detector,
            statistic=float(result.statistic),
            threshold=float(result.threshold),
            p_value=None if result.p_value is None else float(result.p_value),
            since=_iso(state.since),
            since_record=state.since_record,
            example_request_ids=list(state.examples),
            detail=result.detail,
            at=_iso(finding.event_time),
        )

    def state_dict(self, model: str) -> list:
        """One model's alert states, plain data (for checkpoints)."""
        return [[alert, feature, asdict(state)] for (m, alert, feature), state in self.states.items() if m == model]

    def load_state(self, model: str, states: list) -> None:
        for alert, feature, state in states:
            self.states[(model, alert, feature)] = _State(**state)

    def forget(self, model: str) -> None:
        """Drop a model's alerts (its partition moved to another daemon)."""
        for key in [k for k in self.states if k[0] == model]:
            del self.states[key]

    def firing(self) -> dict[tuple[str, str, str], int]:
        """(model, alert, severity) -> 1 if any subject of it is firing, else 0,
        for every alert kind that has ever been observed for that model."""
        out: dict[tuple[str, str, str], int] = {}
        for (model, alert, _), state in self.states.items():
            key = (model, alert, SEVERITY.get(alert, "warning"))
            out[key] = max(out.get(key, 0), int(state.status == "firing"))
        return out


def _strength(finding: Finding) -> tuple[bool, float]:
    result = finding.result
    ratio = result.statistic / result.threshold if result.threshold else 0.0
    return (result.detected, ratio)


def _describe(event: AlertEvent) -> str:
    where = f"{event.model}/{event.feature}" if event.feature else event.model
    return (
        f"{event.alert} [{event.severity}] {where} by {event.detector}: "
        f"{event.statistic:.4g} vs threshold {event.threshold:.4g} since {event.since}"
        f" - {event.detail} (examples: {', '.join(event.example_request_ids[:3]) or 'none'})"
    )
