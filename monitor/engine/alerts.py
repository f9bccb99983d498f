"""Alert state machine: pending -> firing -> resolved, with hysteresis and dedup.

An alert is keyed by (model, alert kind, subject). Each window decision about
that subject moves it: ``fire_after`` consecutive detections take it from
inactive through pending to firing (one, for kinds that fire at once: see
:data:`monitor.engine.findings.ALERT_KINDS`); ``resolve_after`` consecutive
clean windows resolve it. Several detectors on one feature decide in the same
window; they are merged into one decision (detected if any detector is), so
one shift pages once, not once per detector. A decision about the subject
``*`` (a search check's sweep) is a clean decision for every open alert of
that kind that was not decided in the same window.

Times are event times of records: an alert's ``since`` is the first record of
the first detected window, its ``at`` the last record of the window that
changed it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from monitor.engine.findings import ALERT_KINDS, CLEAN, Finding
from monitor.engine.slots import SWEEP

log = logging.getLogger("infersight.alerts")


def severity(kind: str) -> str:
    """The ``severity`` label of an alert kind."""
    known = ALERT_KINDS.get(kind)
    return known.severity if known else "warning"


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
    try:
        return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"{epoch!r} (epoch seconds, outside the calendar)"


class AlertBook:
    """Every alert's state; ``observe`` turns findings into events."""

    def __init__(self, fire_after: int = 2, resolve_after: int = 2, max_examples: int = 5):
        self.fire_after = fire_after
        self.resolve_after = resolve_after
        self.max_examples = max_examples
        # (model, kind) -> subject -> state: a sweep touches one kind of one model
        self.states: dict[tuple[str, str], dict[str, _State]] = {}
        # kinds that have had an alert per model, so infersight_alert_active
        # goes back to 0 rather than vanishing (a bounded set: the alert kinds)
        self.kinds_seen: dict[str, set[str]] = {}

    def observe(self, findings: list[Finding]) -> list[AlertEvent]:
        """Step every alert the findings decide, window by window."""
        # One decision per subject per window: the strongest finding stands for it.
        decisions: dict[tuple[str, str, str, int], Finding] = {}
        sweeps: dict[tuple[str, str, int], Finding] = {}
        for finding in findings:
            if finding.feature == SWEEP:
                sweeps[(finding.model, finding.alert, finding.window)] = finding
                continue
            key = (finding.model, finding.alert, finding.feature, finding.window)
            best = decisions.get(key)
            if best is None or _strength(finding) > _strength(best):
                decisions[key] = finding
        for (model, kind, window), sweep in sweeps.items():
            for subject, state in self.states.get((model, kind), {}).items():
                if state.status != "inactive" and (model, kind, subject, window) not in decisions:
                    decisions[(model, kind, subject, window)] = Finding(
                        model, kind, subject, sweep.detector, CLEAN, [], sweep.event_time, window=window)
        events = []
        for (model, kind, subject, _), finding in sorted(decisions.items(), key=lambda item: item[0][3]):
            event = self._step((model, kind, subject), finding)
            if event is not None:
                log.warning("alert %s: %s", event.status, _describe(event))
                events.append(event)
        return events

    def _step(self, key: tuple[str, str, str], finding: Finding) -> AlertEvent | None:
        model, kind, subject = key
        subjects = self.states.get((model, kind), {})
        state = subjects.get(subject)
        if state is None:
            if not finding.result.detected:
                return None  # a clean window of a quiet subject changes nothing, and keeps no state
            state = self.states.setdefault((model, kind), {})[subject] = _State()
            self.kinds_seen.setdefault(model, set()).add(kind)
        state.last_event_time = finding.event_time
        if finding.result.detected:
            state.clears = 0
            state.hits += 1
            if state.status == "inactive":
                state.status = "pending"
                state.since = finding.event_time if finding.since is None else finding.since
                state.since_record = finding.since_record
                state.examples = []
            if len(state.examples) < self.max_examples:
                state.examples.extend(finding.example_request_ids[: self.max_examples - len(state.examples)])
            known = ALERT_KINDS.get(kind)
            fire_after = 1 if known is not None and known.fires_at_once else self.fire_after
            if state.status == "pending" and state.hits >= fire_after:
                state.status = "firing"
                return self._event("firing", key, state, finding)
            return None
        state.hits = 0
        event = None
        if state.status == "pending":
            state.status = "inactive"  # a blip, never paged
        elif state.status == "firing":
            state.clears += 1
            if state.clears >= self.resolve_after:
                state.status = "inactive"
                state.clears = 0
                event = self._event("resolved", key, state, finding)
        if state.status == "inactive":
            del subjects[subject]
            if not subjects:
                del self.states[(model, kind)]
        return event

    def _event(self, status: str, key: tuple[str, str, str], state: _State, finding: Finding) -> AlertEvent:
        model, alert, feature = key
        result = finding.result
        return AlertEvent(
            status=status,
            model=model,
            alert=alert,
            severity=severity(alert),
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
        """One model's open alerts, plain data (for checkpoints)."""
        return [[kind, subject, asdict(state)]
                for (m, kind), subjects in self.states.items() if m == model
                for subject, state in subjects.items()]

    def load_state(self, model: str, states: list) -> None:
        for kind, subject, state in states:
            self.states.setdefault((model, kind), {})[subject] = _State(**state)
            self.kinds_seen.setdefault(model, set()).add(kind)

    def forget(self, model: str) -> None:
        """Drop a model's alerts (its partition moved to another daemon)."""
        for key in [k for k in self.states if k[0] == model]:
            del self.states[key]
        self.kinds_seen.pop(model, None)

    def firing(self) -> dict[tuple[str, str, str], int]:
        """(model, alert, severity) -> 1 if any subject of it is firing, else 0,
        for every alert kind that has had an alert for that model."""
        return {(model, kind, severity(kind)):
                int(any(s.status == "firing" for s in self.states.get((model, kind), {}).values()))
                for model, kinds in self.kinds_seen.items() for kind in sorted(kinds)}


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
