"""Slots: every check of a model, built from the policy, run in one loop.

A slot is one check on one subject: a detector, the alert kind it decides, the
subject (a feature, ``""`` for the model), the columns it reads and its share
of the model's false-alarm budget (:mod:`monitor.engine.budget`). The per-model
monitor (:mod:`monitor.engine.model_monitor`) cuts the model's records into
fixed chunks and hands each chunk to every slot; a slot returns its decisions.
Because chunks do not depend on how Kafka happened to batch the records,
neither do the decisions.

Three shapes of slot cover every check:

- :class:`DetectorSlot`: a detector on a column (a feature, the predicted class,
  the score, the feature matrix, latency scores); a decision per window.
- :class:`SearchSlot`: a search over many subjects at once (trigger
  activation, segment suppression); each evaluation reports what it found and
  clears what it no longer finds.
- :class:`CanarySlot`: golden replays judged one probe at a time.

:func:`build_traffic_slots` builds the checks that learn from the first
records themselves (tamper checks); :func:`build_reference_slots` builds the
checks that compare with the model's reference once it is complete. Both
draw on :data:`CHECKS`, the list of check names the budget is split across.
:func:`slot_from_state` restores any slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from detectors.base import DriftResult
from detectors.drift.output import entropy
from detectors.registry import (
    CATEGORICAL_DETECTORS,
    MULTIVARIATE_DETECTORS,
    NUMERIC_DETECTORS,
    SHAPE_DETECTORS,
    restore,
)
from detectors.anomaly.half_space_trees import HSTDetector
from detectors.drift.chi_square import ChiSquareDrift
from detectors.drift.ks import KSDrift
from detectors.sequential.cusum import CUSUM
from detectors.tamper.canary import CanaryProbes
from detectors.tamper.segment_suppression import SegmentSuppression
from detectors.tamper.trigger_activation import TriggerActivation
from monitor.config import Settings
from monitor.engine.budget import Budget
from monitor.engine.findings import (
    ANOMALY_RATE,
    CANARY_MISMATCH,
    CLEAN,
    INPUT_DRIFT,
    LATENCY_SHIFT,
    OUTPUT_DRIFT,
    OUTPUT_SHAPE,
    SEGMENT_SUPPRESSION,
    TRIGGER_SUSPECTED,
)
from monitor.wire.batch import ModelBatch

#: the feature label under which the latency detector reports
LATENCY = "latency_ms"
#: Half-Space Trees mass window (records); the reference must hold two
HST_WINDOW = 250
#: output checks: check name -> (column read, detector class)
OUTPUT_CHECKS = {
    "prediction_class": ("class", ChiSquareDrift),
    "prediction_score": ("score", KSDrift),
    "prediction_value": ("value", KSDrift),
    "prediction_entropy": ("entropy", KSDrift),
}
#: a subject meaning "every subject of this kind that was not decided here is clean"
SWEEP = "*"


def evaluation_step(settings: Settings) -> int:
    """Records per chunk: every check sees the model's records in chunks of
    this many (about a quarter window), so every decision is taken at the
    same record whatever the poll batches were. A step that divides the
    reference size is preferred, so the reference completes at its last
    record rather than at the next chunk's end.

    >>> from monitor.config import Settings
    >>> evaluation_step(Settings()), evaluation_step(Settings(policy={"reference_size": 1000, "window_size": 250}))
    (250, 50)
    """
    policy = settings.policy
    quarter = max(1, policy.window_size // 4)
    for step in range(quarter, max(1, quarter // 2) - 1, -1):
        if policy.reference_size % step == 0:
            return step
    return quarter


def enabled_checks(settings: Settings) -> list[str]:
    """Every check the policy enables for a model, in a stable order: the
    model's false-alarm budget is split across exactly these."""
    policy, tamper = settings.policy, settings.tamper
    checks = [*policy.numeric_detectors, *policy.categorical_detectors]
    if policy.output_detectors:
        checks += list(OUTPUT_CHECKS)
    checks += policy.multivariate_detectors
    if policy.anomaly_detector:
        checks.append(HSTDetector.name)
    if policy.latency_detector:
        checks.append(CUSUM.name)
    checks += tamper.output_shape.detectors
    if tamper.trigger.enabled:
        checks.append(TriggerActivation.name)
    if tamper.segment_suppression.enabled:
        checks.append(SegmentSuppression.name)
    if settings.kafka.labels_topic is not None:
        checks.append("accuracy")
    return checks


# ---------------------------------------------------------------------------
# What a slot reads


def as_numeric(column: np.ndarray) -> np.ndarray:
    if column.dtype == np.float64:
        return column
    # A feature that arrived as strings here: nothing numeric to test.
    return np.full(len(column), np.nan)


def as_categorical(column: np.ndarray) -> np.ndarray:
    if column.dtype == object:
        return column
    out = np.empty(len(column), dtype=object)
    out[:] = [None if np.isnan(v) else repr(float(v)) for v in column]
    return out


@dataclass
class ModelShape:
    """What the model's reference fixed: feature kinds, the matrix of the
    multivariate and anomaly checks, the latency quantiles."""

    kinds: dict[str, str]
    matrix_features: list[str]
    matrix_fill: np.ndarray | None
    latency_quantiles: np.ndarray | None

    def state_dict(self) -> dict:
        return {
            "kinds": self.kinds,
            "matrix_features": self.matrix_features,
            "matrix_fill": None if self.matrix_fill is None else self.matrix_fill.tolist(),
            "latency_quantiles": None if self.latency_quantiles is None else self.latency_quantiles.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict) -> ModelShape:
        def array(values):
            return None if values is None else np.array(values, dtype=np.float64)

        return cls(dict(state["kinds"]), list(state["matrix_features"]), array(state["matrix_fill"]),
                   array(state["latency_quantiles"]))


class Columns:
    """The columns of one chunk's rows, computed once for all slots."""

    def __init__(self, batch: ModelBatch, shape: ModelShape | None):
        self.batch = batch
        self.shape = shape
        self._cache: dict[tuple, np.ndarray] = {}

    def read(self, reads: tuple[str, ...]) -> np.ndarray:
        if reads not in self._cache:
            self._cache[reads] = getattr(self, "_" + reads[0])(*reads[1:])
        return self._cache[reads]

    def _feature(self, name: str) -> np.ndarray:
        batch = self.batch
        column = batch.numeric.get(name)
        if column is None:
            column = batch.categorical.get(name)
        if column is None:
            column = np.full(batch.n, np.nan)
        return as_numeric(column) if self.shape.kinds[name] == "numeric" else as_categorical(column)

    def _output(self, key: str) -> np.ndarray | None:
        return output_column(self.batch, key)

    def _probabilities(self) -> np.ndarray | None:
        batch = self.batch
        return batch.probabilities if batch.classes else None

    def _matrix(self) -> np.ndarray:
        shape = self.shape
        matrix = np.column_stack([self._feature(name) for name in shape.matrix_features])
        return np.where(np.isnan(matrix), shape.matrix_fill, matrix)

    def _latency(self) -> np.ndarray:
        """Normal scores of latencies against the reference quantiles: standard
        normal under no change whatever the latency distribution's shape. A
        record without a latency scores 0 (no evidence either way), so scores
        line up with records."""
        q = self.shape.latency_quantiles
        latency = self.batch.latency_ms
        present = ~np.isnan(latency)
        # mid-rank position, kept off 0 and 1 so the scores stay finite
        rank = (np.searchsorted(q, latency[present], "left") + np.searchsorted(q, latency[present], "right")) / 2
        scores = np.zeros(len(latency))
        scores[present] = special.ndtri((rank + 0.5) / (len(q) + 1))
        return scores


def output_column(batch: ModelBatch, key: str) -> np.ndarray | None:
    """One of the model's output columns: ``class``, ``score``, ``value``, ``entropy``."""
    if key == "class":
        return batch.predicted_class
    if key == "score":
        return batch.score
    if key == "value":
        return batch.prediction_value
    if batch.probabilities is None:
        return np.full(batch.n, np.nan)
    return entropy(batch.probabilities)


# ---------------------------------------------------------------------------
# Slots


@dataclass
class Decision:
    """A slot's decision before the monitor names the model and the time:
    ``first`` is the slot-stream position of the first record of the decided
    window (the monitor turns it into event time)."""

    subject: str
    result: DriftResult
    first: int
    examples: list[str]


class Slot:
    """Base: identity, budget and stream bookkeeping shared by every slot.

    ``scope`` says which rows of a chunk it reads: ``monitored`` (live records
    after the reference), ``traffic`` (every live record, from the first) or
    ``everything`` (canary replays too). ``origin`` is the model's live-record
    index of the slot's first record; ``fed`` counts the rows it has been
    given since."""

    shape_name = "slot"

    def __init__(self, check: str, alert: str, subject: str, detector: Any, origin: int, reads: tuple = (),
                 scope: str = "monitored"):
        self.check = check
        self.alert = alert
        self.subject = subject
        self.detector = detector
        self.origin = origin
        self.reads = tuple(reads)
        self.scope = scope
        self.fed = 0

    def run(self, columns: Columns) -> list[Decision]:
        raise NotImplementedError

    def _extra_state(self) -> dict:
        return {}

    def _load_extra(self, state: dict) -> None:
        pass

    def state_dict(self) -> dict:
        return {
            "shape": self.shape_name,
            "check": self.check,
            "alert": self.alert,
            "subject": self.subject,
            "detector": type(self.detector).name,
            "detector_state": self.detector.state_dict(),
            "origin": self.origin,
            "reads": list(self.reads),
            "scope": self.scope,
            "fed": self.fed,
            **self._extra_state(),
        }


def _request_ids(batch: ModelBatch, positions) -> list[str]:
    ids = batch.request_ids
    return [str(ids[i]) for i in positions if 0 <= i < len(ids) and ids[i] is not None]


class DetectorSlot(Slot):
    """A detector on one column. With ``every`` set, rows are collected and
    the detector is updated with exactly ``every`` of them at a time (its
    test is calibrated per that many rows)."""

    shape_name = "detector"

    def __init__(self, check, alert, subject, detector, origin, reads, every: int = 0, scope: str = "monitored"):
        super().__init__(check, alert, subject, detector, origin, reads, scope)
        self.every = int(every)
        self.pending: list[np.ndarray] = []

    def run(self, columns: Columns) -> list[Decision]:
        values = columns.read(self.reads)
        start = self.fed
        self.fed += columns.batch.n
        if values is None:  # e.g. no class on a regression model's records
            return []
        if not self.every:
            return self._decide(self.detector_results(values), start, columns.batch)
        self.pending.append(values)
        held = sum(len(v) for v in self.pending)
        decisions = []
        if held >= self.every:
            rows = np.concatenate(self.pending)
            first = self.fed - held
            cut = held - held % self.every
            for lo in range(0, cut, self.every):
                # examples index rows collected over several chunks: none
                decisions += [Decision(self.subject, r, first + lo if r.change_index is None else r.change_index, [])
                              for r in self.detector_results(rows[lo: lo + self.every])]
            self.pending = [rows[cut:]] if cut < held else []
        return decisions

    def detector_results(self, values: np.ndarray) -> list[DriftResult]:
        update_all = getattr(self.detector, "update_all", None)
        if update_all is not None:
            return update_all(values)
        result = self.detector.update(values)
        return [] if result is None else [result]

    def _decide(self, results: list[DriftResult], start: int, batch: ModelBatch) -> list[Decision]:
        return [Decision(self.subject, r, start if r.change_index is None else r.change_index,
                         _request_ids(batch, r.examples)) for r in results]

    def _extra_state(self) -> dict:
        rows = np.concatenate(self.pending) if self.pending else None
        return {"every": self.every, "pending": None if rows is None else rows.tolist()}

    def _load_extra(self, state: dict) -> None:
        self.every = int(state["every"])
        self.pending = [] if state["pending"] is None else [np.asarray(state["pending"], dtype=np.float64)]


class SearchSlot(Slot):
    """A check that searches many subjects each evaluation (trigger
    activation, segment suppression). Its findings are complete: after each
    evaluation it also reports a sweep, so a subject it reported before and
    no longer finds gets a clean decision."""

    shape_name = "search"

    def run(self, columns: Columns) -> list[Decision]:
        batch = columns.batch
        start = self.fed
        self.fed += batch.n
        if isinstance(self.detector, TriggerActivation):
            results = self.detector.update(numeric=batch.numeric, categorical=batch.categorical,
                                           predicted_class=batch.predicted_class, request_ids=batch.request_ids)
        else:
            results = self.detector.update(categorical=batch.categorical, predicted_class=batch.predicted_class,
                                           request_ids=batch.request_ids)
        decisions = [Decision(self.subject_of(r), r, start, [str(i) for i in r.extra.get("request_ids", [])[:10]])
                     for r in results]
        decisions.append(Decision(SWEEP, CLEAN, start, []))
        return decisions

    def subject_of(self, result: DriftResult) -> str:
        if "target_class" in result.extra:
            return f"class={result.extra['target_class']}"
        feature, value = result.extra["segment"]
        return f"{feature}={value}"


class CanarySlot(Slot):
    """Golden replays (records tagged ``canary``): each probe replayed in a
    chunk is one decision, failed or clean. Probe ids past the detector's
    ``max_probes`` are refused by it and decide nothing."""

    shape_name = "canary"

    def run(self, columns: Columns) -> list[Decision]:
        batch = columns.batch
        start = self.fed
        self.fed += batch.n
        probes = batch.canary != None  # noqa: E711 - elementwise on an object array
        if not probes.any():
            return []
        results = self.detector.update(batch.canary, batch.predicted_class, batch.score, batch.request_ids)
        failing = {r.extra.get("probe", "") for r in results}
        decisions = [Decision(r.extra.get("probe", ""), r, start, [str(i) for i in r.extra.get("request_ids", [])[:10]])
                     for r in results]
        tracked = self.detector.probes
        for probe in sorted(set(batch.canary[probes].astype(str)) - failing):
            if probe in tracked:
                decisions.append(Decision(probe, CLEAN, start, []))
        return decisions


SLOT_SHAPES: dict[str, type[Slot]] = {cls.shape_name: cls for cls in (DetectorSlot, SearchSlot, CanarySlot)}


def slot_from_state(state: dict) -> Slot:
    """The one way back from a checkpoint to a slot."""
    cls = SLOT_SHAPES[state["shape"]]
    slot = cls.__new__(cls)
    Slot.__init__(slot, state["check"], state["alert"], state["subject"],
                  restore(state["detector"], state["detector_state"]), int(state["origin"]), state["reads"],
                  state["scope"])
    slot.fed = int(state["fed"])
    if cls is DetectorSlot:
        slot.pending = []
    slot._load_extra(state)
    return slot


# ---------------------------------------------------------------------------
# Building slots from the policy


def build_traffic_slots(settings: Settings, budget: Budget, step: int,
                        canary_expectations: dict | None = None) -> list[Slot]:
    """Checks that learn from the model's first live records themselves (the
    tamper checks): they run from the first record on."""
    tamper = settings.tamper
    c, t, s, o = tamper.canary, tamper.trigger, tamper.segment_suppression, tamper.output_shape
    slots: list[Slot] = []
    if c.enabled:
        probes = CanaryProbes(c.learn_first, c.score_tolerance, canary_expectations, c.max_probes)
        slots.append(CanarySlot(CanaryProbes.name, CANARY_MISMATCH, "", probes, 0, scope="everything"))
    if t.enabled:
        trigger = TriggerActivation(
            n_reference=t.n_reference, tail=t.tail, min_support=t.min_support, min_share=t.min_share,
            min_lift=t.min_lift, min_rise=t.min_rise, max_entropy_bits=t.max_entropy_bits,
            alpha=budget.alpha(TriggerActivation.name, step), max_conditions=t.max_conditions, features=t.features,
        )
        slots.append(SearchSlot(TriggerActivation.name, TRIGGER_SUSPECTED, "", trigger, 0, scope="traffic"))
    if s.enabled:
        segments = SegmentSuppression(
            segment_features=s.segment_features, classes=s.classes, n_reference=s.n_reference,
            min_support=s.min_support, min_expected=s.min_expected,
            min_relative_drop=s.min_relative_drop, alpha=budget.alpha(SegmentSuppression.name, step),
        )
        slots.append(SearchSlot(SegmentSuppression.name, SEGMENT_SUPPRESSION, "", segments, 0, scope="traffic"))
    shape_reads = {"class_concentration": ("output", "class"), "confidence_bimodality": ("output", "score"),
                   "entropy_collapse": ("probabilities",)}
    for name in o.detectors:
        detector = SHAPE_DETECTORS[name](o.n_reference, o.window, budget.alpha(name, o.window))
        slots.append(DetectorSlot(name, OUTPUT_SHAPE, name, detector, 0, shape_reads[name], scope="traffic"))
    return slots


@dataclass
class Reference:
    """A complete reference: usable feature columns and the output columns."""

    n: int
    features: list[tuple[str, str, np.ndarray]]  # (name, kind, column)
    outputs: dict[str, np.ndarray]  # "class", "score", "value", "entropy", "latency"


def build_reference_slots(ref: Reference, settings: Settings, budget: Budget,
                          origin: int) -> tuple[ModelShape, list[Slot]]:
    """Checks that compare traffic with the model's reference."""
    policy = settings.policy
    window, sliding = policy.window_size, policy.sliding_windows
    # a sliding window is tested every window/4 records: four times the tests
    test_every = window // 4 if sliding else window
    numeric = [(name, column) for name, kind, column in ref.features if kind == "numeric"]
    categorical = [(name, column) for name, kind, column in ref.features if kind == "categorical"]
    slots: list[Slot] = []
    for features, names, registry in ((numeric, policy.numeric_detectors, NUMERIC_DETECTORS),
                                      (categorical, policy.categorical_detectors, CATEGORICAL_DETECTORS)):
        for check in names:
            alpha = budget.alpha(check, test_every, len(features))
            for name, column in features:
                detector = registry[check](column, window, alpha, sliding=sliding)
                slots.append(DetectorSlot(check, INPUT_DRIFT, name, detector, origin, ("feature", name)))
    if policy.output_detectors:
        for check, (key, cls) in OUTPUT_CHECKS.items():
            column = ref.outputs[key]
            present = (column != None) if key == "class" else ~np.isnan(column)  # noqa: E711
            if present.sum() >= 2:
                detector = cls(column, window, budget.alpha(check, test_every), sliding=sliding)
                slots.append(DetectorSlot(check, OUTPUT_DRIFT, "", detector, origin, ("output", key)))

    # The matrix checks (multivariate drift, anomaly) see the first numeric
    # features, missing values filled with the reference median.
    matrix_cols = numeric[: policy.max_matrix_features]
    fill = None
    if matrix_cols:
        matrix = np.column_stack([column for _, column in matrix_cols])
        fill = np.nanmedian(matrix, axis=0)
        matrix = np.where(np.isnan(matrix), fill, matrix)
        for check in policy.multivariate_detectors:
            cls = MULTIVARIATE_DETECTORS[check]
            if check == "mmd":
                detector = cls(matrix, ert=budget.run_length(check))
            else:
                detector = cls(matrix, window, budget.alpha(check, test_every), sliding=sliding)
            slots.append(DetectorSlot(check, INPUT_DRIFT, "", detector, origin, ("matrix",)))
        if policy.anomaly_detector and ref.n >= 2 * HST_WINDOW:
            detector = HSTDetector(matrix, target_rate=policy.anomaly_target_rate,
                                   alpha=budget.alpha(HSTDetector.name, window), window_size=HST_WINDOW)
            # its binomial test is calibrated per window: one update per window of rows
            slots.append(DetectorSlot(HSTDetector.name, ANOMALY_RATE, "", detector, origin, ("matrix",),
                                      every=window))
    latency = ref.outputs["latency"]
    latency = np.sort(latency[~np.isnan(latency)])
    quantiles = None
    if policy.latency_detector and len(latency) >= 100 and latency[0] < latency[-1]:
        # Latencies are skewed and heavy-tailed; CUSUM's run length assumes
        # normal values: it reads normal scores (see Columns._latency).
        quantiles = latency[np.linspace(0, len(latency) - 1, min(len(latency), 1001)).astype(int)]
        detector = CUSUM(expected_run_length=budget.run_length(CUSUM.name), mean=0.0, std=1.0)
        slots.append(DetectorSlot(CUSUM.name, LATENCY_SHIFT, LATENCY, detector, origin, ("latency",)))
    shape = ModelShape({name: kind for name, kind, _ in ref.features},
                       [name for name, _ in matrix_cols], fill, quantiles)
    return shape, slots

