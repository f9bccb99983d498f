"""Per-model monitor: learn a reference, then run the model's slots.

Lifecycle of one model:

1. *learning*: the first ``policy.reference_size`` live records are kept as the
   reference sample, column by column (or the reference comes from a file of
   approved records, ``policy.reference_files``, and live records are all
   monitored); the tamper checks, which learn from the first records
   themselves, already run;
2. *monitoring*: the reference's slots (:mod:`monitor.engine.slots`) are built,
   each with its share of the model's false-alarm budget
   (:mod:`monitor.engine.budget`), and run on every later record.

Records are processed in fixed chunks of :func:`monitor.engine.slots.evaluation_step`
records of this model, counted from its first record; a poll batch that ends
mid-chunk leaves its last records waiting for the next one. So every check
decides at the same record whatever the poll batches were, and a replay of a
file at any batch size gives the daemon's alerts. Predictions are remembered
for delayed labels at once (labels may arrive any time).

Decisions come back as :class:`~monitor.engine.findings.Finding` objects for the
alert state machine; the latest result of every detector slot is kept for the
metrics snapshot. All of it round-trips through ``state_dict`` / ``from_state``
for checkpoints.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np

from detectors.base import DriftResult, Frozen
from monitor.config import Settings
from monitor.engine.budget import Budget
from monitor.engine.findings import PERFORMANCE_DEGRADED, Finding
from monitor.engine.performance import PerformanceTracker
from monitor.engine.slots import (
    SWEEP,
    Columns,
    DetectorSlot,
    ModelShape,
    Reference,
    Slot,
    as_categorical,
    as_numeric,
    build_reference_slots,
    build_traffic_slots,
    enabled_checks,
    evaluation_step,
    output_column,
    slot_from_state,
)
from monitor.wire.batch import ModelBatch, batch_from_state, batch_state, concat_batches

STATE_VERSION = 2


class _ReferenceBuffer:
    """Columns accumulated while a model is learning its reference.

    Each feature keeps its parts in arrival order; a part in which the feature
    is absent contributes a NaN stretch, so every feature's column lines up
    with the records. At most ``max_features`` feature names are kept: a
    sender cannot grow the buffer by inventing names (the rest are counted).
    """

    OUTPUTS = ("class", "score", "value", "entropy", "latency")

    def __init__(self, max_features: int = 256) -> None:
        self.n = 0
        self.max_features = max_features
        self.parts: dict[str, list[np.ndarray]] = {}
        self.kinds: dict[str, str] = {}
        self.refused: set[str] = set()
        self.outputs: dict[str, list[np.ndarray]] = {key: [] for key in self.OUTPUTS}

    def add(self, batch: ModelBatch) -> None:
        for kind, columns in (("numeric", batch.numeric), ("categorical", batch.categorical)):
            for name, column in columns.items():
                if name not in self.parts and len(self.parts) >= self.max_features:
                    if len(self.refused) < 1000:
                        self.refused.add(name)
                    continue
                # any string value makes the feature categorical for good
                if self.kinds.get(name) != "categorical":
                    self.kinds[name] = kind
                parts = self.parts.setdefault(name, [np.full(self.n, np.nan)] if self.n else [])
                parts.append(column)
        self.n += batch.n
        for parts in self.parts.values():
            filled = sum(len(p) for p in parts)
            if filled < self.n:
                parts.append(np.full(self.n - filled, np.nan))
        for key in ("class", "score", "value", "entropy"):
            self.outputs[key].append(output_column(batch, key))
        self.outputs["latency"].append(batch.latency_ms)

    def column(self, name: str) -> np.ndarray:
        convert = as_numeric if self.kinds[name] == "numeric" else as_categorical
        return np.concatenate([convert(p) for p in self.parts[name]])

    def complete(self, max_features: int) -> tuple[Reference, set[str]]:
        """The reference, and the features it cannot monitor (too few values,
        or over ``max_features``)."""
        usable, ignored = [], set(self.refused)
        for name, kind in self.kinds.items():
            column = self.column(name)
            present = ~np.isnan(column) if kind == "numeric" else np.array([v is not None for v in column])
            if present.sum() < 2:
                ignored.add(name)  # nothing to compare against
            elif len(usable) >= max_features:
                ignored.add(name)
            else:
                usable.append((name, kind, column))
        outputs = {key: np.concatenate(parts) if parts else np.empty(0) for key, parts in self.outputs.items()}
        return Reference(self.n, usable, outputs), ignored

    def state_dict(self) -> dict:
        return {
            "n": self.n,
            "max_features": self.max_features,
            "kinds": self.kinds,
            "refused": sorted(self.refused),
            "parts": {name: [_column_state(p) for p in parts] for name, parts in self.parts.items()},
            "outputs": {key: [_column_state(p) for p in parts] for key, parts in self.outputs.items()},
        }

    @classmethod
    def from_state(cls, state: dict) -> _ReferenceBuffer:
        buffer = cls(state["max_features"])
        buffer.n = state["n"]
        buffer.kinds = dict(state["kinds"])
        buffer.refused = set(state["refused"])
        buffer.parts = {name: [_column_from_state(p) for p in parts] for name, parts in state["parts"].items()}
        buffer.outputs = {key: [_column_from_state(p) for p in parts] for key, parts in state["outputs"].items()}
        return buffer


def _column_state(column: np.ndarray) -> dict:
    # float columns keep NaN (the checkpoint codec writes it); object columns keep None
    return {"kind": "f" if column.dtype == np.float64 else "o", "values": column.tolist()}


def _column_from_state(state: dict) -> np.ndarray:
    if state["kind"] == "f":
        return np.array(state["values"], dtype=np.float64)
    out = np.empty(len(state["values"]), dtype=object)
    out[:] = state["values"]
    return out


class _TimeRing:
    """Event times of the model's last ``size`` live records, by live index:
    a window's ``since`` is the event time of its first record."""

    def __init__(self, size: int) -> None:
        self.times = np.zeros(size)
        self.end = 0  # live index after the newest stored time

    def extend(self, times: np.ndarray) -> None:
        size = len(self.times)
        times = times[-size:]
        idx = (self.end + np.arange(len(times))) % size
        self.times[idx] = times
        self.end += len(times)

    def at(self, index: int) -> float:
        # clamped to what the ring still holds (a window that spans more
        # records than the ring, e.g. a feature missing most of the time)
        size = len(self.times)
        index = min(max(index, self.end - size, 0), self.end - 1)
        return float(self.times[index % size])

    def state_dict(self) -> dict:
        n = min(self.end, len(self.times))
        return {"size": len(self.times), "end": self.end,
                "times": [self.at(i) for i in range(self.end - n, self.end)]}

    @classmethod
    def from_state(cls, state: dict) -> _TimeRing:
        ring = cls(state["size"])
        ring.end = state["end"] - len(state["times"])
        ring.extend(np.asarray(state["times"], dtype=np.float64))
        return ring


def load_expectations(path) -> dict:
    """Canary expectations file: JSON ``{probe_id: {"label", "score", "tolerance"}}``."""
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object of probe id -> expectation")
    return data


class ModelMonitor:
    """Reference learning and the slots of one deployed model."""

    def __init__(self, model_id: str, settings: Settings, canary_expectations: dict | None = None):
        self.model_id = model_id
        self.settings = settings
        self.policy = policy = settings.policy
        self.limits = limits = settings.limits
        self.budget = Budget(policy.expected_run_length, enabled_checks(settings))
        self.step = evaluation_step(settings)
        self.records_seen = 0  # every record routed to this model
        self.records_done = 0  # of those, processed in whole chunks
        self.live_done = 0  # live (non-canary) records processed
        self.live_reference_records = 0  # live records that went into the reference
        self.last_event_time: float | None = None
        self._pending: list[ModelBatch] = []  # records of the chunk being filled
        self._reference: _ReferenceBuffer | None = _ReferenceBuffer(limits.max_features_per_model)
        self.shape: ModelShape | None = None
        self._frozen_shape: Frozen | None = None
        self.ignored_features: set[str] = set()  # seen after the reference, or over the cap
        self.slots: list[Slot] = build_traffic_slots(settings, self.budget, self.step, canary_expectations)
        self.latest: dict[tuple[str, str], DriftResult] = {}
        self._times = _TimeRing(4 * policy.window_size)
        self._recent_classes = np.empty(policy.window_size, dtype=object)
        self._recent_filled = 0
        self._recent_next = 0
        self.performance = (
            PerformanceTracker(
                window=policy.window_size,
                alpha=self.budget.alpha("accuracy", policy.window_size),
                max_pending=limits.max_pending_labels,
            )
            if settings.kafka.labels_topic is not None
            else None
        )

    @property
    def reference_ready(self) -> bool:
        return self._reference is None

    @property
    def kinds(self) -> dict[str, str]:
        """Monitored feature -> ``numeric`` | ``categorical`` (empty while learning)."""
        return {} if self.shape is None else self.shape.kinds

    @property
    def matrix_features(self) -> list[str]:
        return [] if self.shape is None else self.shape.matrix_features

    @property
    def detectors(self) -> dict[tuple[str, str], object]:
        """(check, subject) -> detector, for every slot."""
        return {(slot.check, slot.subject): slot.detector for slot in self.slots}

    def set_reference(self, batch: ModelBatch) -> None:
        """Use ``batch`` (approved records, e.g. from a file) as the whole
        reference: every live record is then monitored."""
        reference = _ReferenceBuffer(self.limits.max_features_per_model)
        reference.add(batch.subset(batch.canary == None))  # noqa: E711 - probes are not traffic
        self._build(reference)

    def update(self, batch: ModelBatch) -> list[Finding]:
        """Take the model's records of one poll batch; decisions of every chunk they complete."""
        if batch.n == 0:
            return []
        self.records_seen += batch.n
        self.last_event_time = float(np.max(batch.timestamps))
        live = batch.canary == None  # noqa: E711 - elementwise on an object array
        self._remember_classes(batch.predicted_class[live])
        findings = []
        if self.performance is not None:
            findings += self._performance_findings(self.performance.remember(
                batch.request_ids[live], batch.predicted_class[live], batch.timestamps[live]))
        self._pending.append(batch)
        held = self.records_seen - self.records_done
        if held < self.step:
            return findings
        rows = concat_batches(self._pending)
        cut = held - held % self.step
        for start in range(0, cut, self.step):
            findings += self._run_chunk(rows.slice(start, start + self.step))
        self._pending = [rows.slice(cut, held)] if cut < held else []
        return findings

    def _run_chunk(self, chunk: ModelBatch) -> list[Finding]:
        self.records_done += chunk.n
        live_mask = chunk.canary == None  # noqa: E711
        live = chunk if live_mask.all() else chunk.subset(live_mask)
        first_live = self.live_done
        self.live_done += live.n
        self._times.extend(live.timestamps)
        findings: list[Finding] = []
        # Tamper checks watch all traffic, reference records included; the
        # canary check sees the probes too.
        by_scope = {"everything": Columns(chunk, self.shape), "traffic": Columns(live, self.shape)}
        for slot in self.slots:
            if slot.scope in by_scope:
                findings += self._decide(slot, slot.run(by_scope[slot.scope]), chunk)
        if live.n == 0:
            return findings
        monitored = live
        if self._reference is not None:
            needed = self.policy.reference_size - self._reference.n
            self._reference.add(live.slice(0, needed))
            self.live_reference_records = self._reference.n
            if self._reference.n < self.policy.reference_size:
                return findings
            self._build(self._reference, origin=first_live + needed)
            monitored = live.slice(needed, live.n)
            if monitored.n == 0:
                return findings
        for feature in monitored.numeric.keys() | monitored.categorical.keys():
            if feature not in self.shape.kinds and len(self.ignored_features) < 1000:
                self.ignored_features.add(feature)
        columns = Columns(monitored, self.shape)
        for slot in self.slots:
            if slot.scope == "monitored":
                findings += self._decide(slot, slot.run(columns), chunk)
        return findings

    def _decide(self, slot: Slot, decisions, chunk: ModelBatch) -> list[Finding]:
        findings = []
        end_time = float(chunk.timestamps[-1]) if chunk.n else (self.last_event_time or 0.0)
        for d in decisions:
            if isinstance(slot, DetectorSlot) and d.subject != SWEEP:
                self.latest[(slot.check, slot.subject)] = d.result
            live_index = slot.origin + d.first
            findings.append(Finding(
                model=self.model_id,
                alert=slot.alert,
                feature=d.subject,
                detector=slot.check,
                result=d.result,
                example_request_ids=d.examples,
                event_time=end_time,
                since=self._times.at(live_index),
                since_record=None if d.result.change_index is None else live_index,
                window=self.records_done,
            ))
        return findings

    def _build(self, reference: _ReferenceBuffer, origin: int = 0) -> None:
        ref, ignored = reference.complete(self.limits.max_features_per_model)
        self.ignored_features |= ignored
        self.shape, slots = build_reference_slots(ref, self.settings, self.budget, origin)
        self.slots += slots
        self._reference = None

    def anomaly_ratio(self) -> float | None:
        result = self.latest.get(("hst", ""))
        return None if result is None else result.statistic

    def join_labels(self, labels: list[tuple[str, str]]) -> list[Finding]:
        """Join delayed ``(request_id, label)`` pairs; findings for finished windows."""
        if self.performance is None:
            return []
        return self._performance_findings(self.performance.join(labels))

    def _performance_findings(self, results: list[DriftResult]) -> list[Finding]:
        return [Finding(self.model_id, PERFORMANCE_DEGRADED, "", "accuracy", r, [],
                        event_time=r.extra["last_time"], since=r.extra["first_time"],
                        # the labelled-record count when the window closed: distinct per window, increasing
                        window=r.n_seen)
                for r in results]

    # -- checkpoints --------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to resume this model exactly, as plain data."""
        pending = concat_batches(self._pending) if self._pending else None
        return {
            "version": STATE_VERSION,
            "model_id": self.model_id,
            "records_seen": self.records_seen,
            "records_done": self.records_done,
            "live_done": self.live_done,
            "live_reference_records": self.live_reference_records,
            "last_event_time": self.last_event_time,
            "pending": None if pending is None else batch_state(pending),
            "reference": None if self._reference is None else self._reference.state_dict(),
            "shape": self._shape_state(),
            "ignored_features": sorted(self.ignored_features),
            "slots": [slot.state_dict() for slot in self.slots],
            "latest": [[check, subject, asdict(r)] for (check, subject), r in self.latest.items()],
            "times": self._times.state_dict(),
            "recent_classes": _column_state(self._recent_classes[: self._recent_filled]),
            "recent_next": self._recent_next,
            "performance": None if self.performance is None else self.performance.state_dict(),
        }

    def _shape_state(self) -> dict | None:
        # fixed by the reference: the same (frozen) object every time
        if self.shape is None:
            return None
        if self._frozen_shape is None:
            self._frozen_shape = Frozen(self.shape.state_dict())
        return self._frozen_shape

    @classmethod
    def from_state(cls, state: dict, settings: Settings) -> ModelMonitor:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"model state version {state.get('version')!r} is not {STATE_VERSION} "
                             "(written by another infersight version); the model relearns its reference")
        monitor = cls(state["model_id"], settings)
        monitor.records_seen = state["records_seen"]
        monitor.records_done = state["records_done"]
        monitor.live_done = state["live_done"]
        monitor.live_reference_records = state["live_reference_records"]
        monitor.last_event_time = state["last_event_time"]
        monitor._pending = [] if state["pending"] is None else [batch_from_state(state["pending"])]
        monitor._reference = None if state["reference"] is None else _ReferenceBuffer.from_state(state["reference"])
        monitor.shape = None if state["shape"] is None else ModelShape.from_state(state["shape"])
        if isinstance(state["shape"], Frozen):
            monitor._frozen_shape = state["shape"]
        monitor.ignored_features = set(state["ignored_features"])
        monitor.slots = [slot_from_state(s) for s in state["slots"]]
        monitor.latest = {
            (c, s): DriftResult(**{**r, "examples": tuple(r["examples"])}) for c, s, r in state["latest"]
        }
        monitor._times = _TimeRing.from_state(state["times"])
        recent = _column_from_state(state["recent_classes"])[-len(monitor._recent_classes):]
        monitor._recent_classes[: len(recent)] = recent
        monitor._recent_filled = len(recent)
        monitor._recent_next = state["recent_next"] % len(monitor._recent_classes)
        if state["performance"] is not None and monitor.performance is not None:
            monitor.performance = PerformanceTracker.from_state(state["performance"])
        return monitor

    # -- prediction mix -----------------------------------------------------

    def _remember_classes(self, classes: np.ndarray | None) -> None:
        if classes is None or len(classes) == 0:
            return
        size = len(self._recent_classes)
        classes = classes[-size:]
        idx = (self._recent_next + np.arange(len(classes))) % size
        self._recent_classes[idx] = classes
        self._recent_next = int((self._recent_next + len(classes)) % size)
        self._recent_filled = min(size, self._recent_filled + len(classes))

    def prediction_ratios(self) -> dict[str, float]:
        """Share of each predicted class over the last ``window_size`` records
        (top ``limits.max_classes - 1`` classes, the rest as ``__other__``)."""
        recent = self._recent_classes[: self._recent_filled]
        recent = recent[recent != None]  # noqa: E711 - elementwise on an object array
        if len(recent) == 0:
            return {}
        labels, counts = np.unique(recent.astype(str), return_counts=True)
        order = np.argsort(-counts, kind="stable")
        keep = self.limits.max_classes - 1
        ratios = {str(labels[i]): counts[i] / len(recent) for i in order[:keep]}
        if len(order) > keep:
            ratios["__other__"] = counts[order[keep:]].sum() / len(recent)
        return ratios
