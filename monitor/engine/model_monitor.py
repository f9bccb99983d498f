"""Per-model monitor: learn a reference, then run the policy's detectors.

Lifecycle of one model:

1. *learning*: the first ``policy.reference_size`` records are kept as the
   reference sample, column by column (or the reference comes from a file of
   approved records, ``policy.reference_files``, and live records are all
   monitored);
2. *monitoring*: detectors are built from that reference (thresholds at a
   per-test alpha derived from ``policy.expected_run_length``, Bonferroni over
   all of the model's tests) and every later batch updates them.

Besides the per-feature tests it runs the output, multivariate, anomaly and
latency detectors, the tamper watch (monitor/engine/tamper.py) and, with a labels
topic, the accuracy tracker. It returns :class:`Finding` objects, one per
decision, for the alert state machine, and keeps the latest result of every
detector for the Prometheus collector to read at scrape time. All of it
round-trips through ``state_dict`` / ``from_state`` for checkpoints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import special

from detectors.base import Detector, DriftResult
from detectors.calibration import per_test_alpha
from detectors.drift.chi_square import ChiSquareDrift
from detectors.sequential.cusum import CUSUM
from detectors.anomaly.half_space_trees import HSTDetector
from detectors.drift.ks import KSDrift
from detectors.registry import CATEGORICAL_DETECTORS, MULTIVARIATE_DETECTORS, NUMERIC_DETECTORS, detector_from_state
from monitor.wire.batch import ModelBatch
from monitor.config import Settings
from monitor.engine.performance import PerformanceTracker
from monitor.engine.tamper import TamperWatch

INPUT_DRIFT = "input_drift"
OUTPUT_DRIFT = "output_drift"
PERFORMANCE_DEGRADED = "performance_degraded"
ANOMALY_RATE = "anomaly_rate"
LATENCY_SHIFT = "latency_shift"

#: the feature label under which the latency detector reports
LATENCY = "latency_ms"
#: Half-Space Trees mass window (records); the reference must hold two
HST_WINDOW = 250


@dataclass(slots=True)
class Finding:
    """One window decision about one subject (a feature, or the output)."""

    model: str
    alert: str  # the alert kind: INPUT_DRIFT, OUTPUT_DRIFT, ... (monitor/engine/alerts.py SEVERITY)
    feature: str  # the subject: a feature, a digest, a probe id; "" for the model as a whole
    detector: str
    result: DriftResult
    example_request_ids: list[str]
    event_time: float  # event time of the newest record in the batch that decided
    since_record: int | None = None  # model record index where the tested change starts
    # Orders several decisions about one subject in one batch: the delayed-label
    # accuracy windows can close several at a time, and each is a window of
    # its own.  Decisions with the same number are one window (merged).
    window: int = 0


def _as_numeric(column: np.ndarray) -> np.ndarray:
    if column.dtype == np.float64:
        return column
    # A feature that arrived as strings in this batch: nothing numeric to test.
    return np.full(len(column), np.nan)


def _as_categorical(column: np.ndarray) -> np.ndarray:
    if column.dtype == object:
        return column
    out = np.empty(len(column), dtype=object)
    out[:] = [None if np.isnan(v) else repr(float(v)) for v in column]
    return out


class _ReferenceBuffer:
    """Columns accumulated while a model is learning its reference.

    Each feature keeps its batch parts in arrival order; a batch in which the
    feature is absent contributes a NaN stretch, so every feature's column
    lines up with the records.
    """

    def __init__(self) -> None:
        self.n = 0
        self.parts: dict[str, list[np.ndarray]] = {}
        self.kinds: dict[str, str] = {}
        self.outputs: dict[str, list[np.ndarray]] = {
            "class": [], "score": [], "value": [], "entropy": [], "latency": []
        }

    def add(self, batch: ModelBatch) -> None:
        for kind, columns in (("numeric", batch.numeric), ("categorical", batch.categorical)):
            for name, column in columns.items():
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
        self.outputs["class"].append(batch.predicted_class)
        self.outputs["score"].append(batch.score)
        self.outputs["value"].append(batch.prediction_value)
        self.outputs["entropy"].append(_entropy(batch))
        self.outputs["latency"].append(batch.latency_ms)

    def column(self, name: str) -> np.ndarray:
        convert = _as_numeric if self.kinds[name] == "numeric" else _as_categorical
        return np.concatenate([convert(p) for p in self.parts[name]])

    def state_dict(self) -> dict:
        return {
            "n": self.n,
            "kinds": self.kinds,
            "parts": {name: [_column_state(p) for p in parts] for name, parts in self.parts.items()},
            "outputs": {key: [_column_state(p) for p in parts] for key, parts in self.outputs.items()},
        }

    @classmethod
    def from_state(cls, state: dict) -> _ReferenceBuffer:
        buffer = cls()
        buffer.n = state["n"]
        buffer.kinds = dict(state["kinds"])
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


def _entropy(batch: ModelBatch) -> np.ndarray:
    if batch.probabilities is None:
        return np.full(batch.n, np.nan)
    p = batch.probabilities
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1) + np.where(np.isnan(p[:, 0]), np.nan, 0.0)


def _restore_detector(name: str, state: dict) -> Detector:
    # the anomaly and latency detectors are not two-sample tests, so not in the registry
    special = {"hst": HSTDetector, "cusum": CUSUM}
    return special[name].from_state(state) if name in special else detector_from_state(state)


#: a decision that nothing is wrong, for checks that only report findings
CLEAN = DriftResult(statistic=0.0, threshold=0.0, detected=False, n_seen=0, detail="no longer found")


class ModelMonitor:
    """Reference learning and detectors for one deployed model."""

    def __init__(self, model_id: str, settings: Settings, canary_expectations: dict | None = None):
        self.model_id = model_id
        self.policy = policy = settings.policy
        self.limits = limits = settings.limits
        track_labels = settings.kafka.labels_topic is not None
        self.records_seen = 0
        self.live_reference_records = 0  # live records that went into the reference
        self.last_event_time: float | None = None
        self._reference: _ReferenceBuffer | None = _ReferenceBuffer()
        # (detector name, feature) -> detector; feature "" for output detectors
        self.detectors: dict[tuple[str, str], Detector] = {}
        self.kinds: dict[str, str] = {}  # feature -> "numeric" | "categorical"
        self.latest: dict[tuple[str, str], DriftResult] = {}
        self.alpha: float | None = None
        self.ignored_features: set[str] = set()  # seen after the reference, or over the cap
        self.matrix_features: list[str] = []  # numeric features of the multivariate/anomaly detectors
        self.matrix_fill: np.ndarray | None = None  # their reference medians
        self.latency_quantiles: np.ndarray | None = None  # reference latency quantiles, sorted
        self._hst_pending: list[np.ndarray] = []
        self._recent_classes = np.empty(policy.window_size, dtype=object)
        self._recent_filled = 0
        self._recent_next = 0
        self.performance = (
            PerformanceTracker(
                window=policy.window_size,
                alpha=per_test_alpha(policy.expected_run_length, policy.window_size, 1),
                max_pending=limits.max_pending_labels,
            )
            if track_labels
            else None
        )
        self.tamper = TamperWatch(settings.tamper, policy, canary_expectations)

    @property
    def reference_ready(self) -> bool:
        return self._reference is None

    def set_reference(self, batch: ModelBatch) -> None:
        """Use ``batch`` (approved records, e.g. from a file) as the whole
        reference: every live record is then monitored."""
        reference = _ReferenceBuffer()
        reference.add(batch.subset(batch.canary == None))  # noqa: E711 - probes are not traffic
        self._build_detectors(reference)
        self._reference = None

    def update(self, batch: ModelBatch) -> list[Finding]:
        self.records_seen += batch.n
        if batch.n:
            self.last_event_time = float(np.max(batch.timestamps))
        probes = batch.canary != None  # noqa: E711 - elementwise on an object array
        live = batch.subset(~probes) if probes.any() else batch  # golden replays are not traffic
        findings = self._tamper_findings(batch, live, batch.canary[probes])
        batch = live
        if batch.n == 0:
            return findings
        self._remember_classes(batch.predicted_class)
        if self.performance is not None:
            results = self.performance.remember(batch.request_ids, batch.predicted_class)
            findings.extend(self._performance_findings(results, self.last_event_time or 0.0))
        if self._reference is not None:
            needed = self.policy.reference_size - self._reference.n
            self._reference.add(batch.slice(0, needed))
            self.live_reference_records = self._reference.n
            if self._reference.n < self.policy.reference_size:
                return findings
            self._build_detectors(self._reference)
            self._reference = None
            batch = batch.slice(needed, batch.n)
            if batch.n == 0:
                return findings
        return findings + self._run_detectors(batch)

    def _tamper_findings(self, batch: ModelBatch, live: ModelBatch, replayed: np.ndarray) -> list[Finding]:
        event_time = self.last_event_time or 0.0
        findings = []
        for kind, subject, detector, result in self.tamper.update(batch, live):
            examples = [str(r) for r in result.extra.get("request_ids", [])[:10]]
            findings.append(Finding(self.model_id, kind, subject, detector, result, examples, event_time))
        if self.tamper.canary is not None:
            # probes replayed in this batch and not failing are clean decisions
            failing = {f.feature for f in findings if f.alert == "canary_mismatch"}
            for probe in set(replayed) - failing:
                findings.append(Finding(self.model_id, "canary_mismatch", probe, "canary", CLEAN, [], event_time))
        return findings

    # -- building -----------------------------------------------------------

    def _build_detectors(self, ref: _ReferenceBuffer) -> None:
        usable = []
        for name, kind in ref.kinds.items():
            column = ref.column(name)
            present = ~np.isnan(column) if kind == "numeric" else np.array([v is not None for v in column])
            if present.sum() < 2:
                self.ignored_features.add(name)  # nothing to compare against
                continue
            usable.append((name, kind, column))
        for name, _, _ in usable[self.limits.max_features_per_model :]:
            self.ignored_features.add(name)
        usable = usable[: self.limits.max_features_per_model]

        outputs = {}
        if self.policy.output_detectors:
            for key, detector_name, cls in (
                ("class", "prediction_class", ChiSquareDrift),
                ("score", "prediction_score", KSDrift),
                ("value", "prediction_value", KSDrift),
                ("entropy", "prediction_entropy", KSDrift),
            ):
                column = np.concatenate(ref.outputs[key])
                present = (column != None) if key == "class" else ~np.isnan(column)  # noqa: E711
                if present.sum() >= 2:
                    outputs[detector_name] = (cls, column)

        # The matrix detectors (multivariate drift, anomaly) see the first
        # numeric features, missing values filled with the reference median.
        numeric = [(name, column) for name, kind, column in usable if kind == "numeric"]
        numeric = numeric[: self.policy.max_matrix_features]
        self.matrix_features = [name for name, _ in numeric]
        matrix_detectors = list(self.policy.multivariate_detectors) if numeric else []
        use_anomaly = self.policy.anomaly_detector and numeric and ref.n >= 2 * HST_WINDOW
        latency = np.concatenate(ref.outputs["latency"])
        latency = np.sort(latency[~np.isnan(latency)])
        use_latency = self.policy.latency_detector and len(latency) >= 100 and latency[0] < latency[-1]

        n_tests = len(outputs) + len(matrix_detectors) + bool(use_anomaly) + bool(use_latency) + sum(
            len(self.policy.numeric_detectors if kind == "numeric" else self.policy.categorical_detectors)
            for _, kind, _ in usable
        )
        policy = self.policy
        window = policy.window_size
        sliding = policy.sliding_windows
        # a sliding window is tested every window/4 records: four times the tests
        test_every = window // 4 if sliding else window
        self.alpha = per_test_alpha(policy.expected_run_length, test_every, max(n_tests, 1))
        # sequential detectors take their share of the budget as a run length
        own_run_length = policy.expected_run_length * max(n_tests, 1)
        for name, kind, column in usable:
            self.kinds[name] = kind
            registry = NUMERIC_DETECTORS if kind == "numeric" else CATEGORICAL_DETECTORS
            names = policy.numeric_detectors if kind == "numeric" else policy.categorical_detectors
            for detector_name in names:
                self.detectors[(detector_name, name)] = registry[detector_name](
                    column, window, self.alpha, sliding=sliding
                )
        for detector_name, (cls, column) in outputs.items():
            self.detectors[(detector_name, "")] = cls(column, window, self.alpha, sliding=sliding)
        if numeric:
            matrix = np.column_stack([column for _, column in numeric])
            self.matrix_fill = np.nanmedian(matrix, axis=0)
            matrix = self._fill(matrix)
            for detector_name in matrix_detectors:
                cls = MULTIVARIATE_DETECTORS[detector_name]
                if detector_name == "mmd":
                    self.detectors[(detector_name, "")] = cls(matrix, ert=own_run_length)
                else:
                    self.detectors[(detector_name, "")] = cls(matrix, window, self.alpha, sliding=sliding)
            if use_anomaly:
                self.detectors[("hst", "")] = HSTDetector(
                    matrix, target_rate=policy.anomaly_target_rate, alpha=self.alpha, window_size=HST_WINDOW
                )
        if use_latency:
            # Latencies are skewed and heavy-tailed; CUSUM's run length assumes
            # normal values. Normal scores through the reference's empirical
            # CDF are standard normal under no change, whatever the shape.
            self.latency_quantiles = latency[np.linspace(0, len(latency) - 1, min(len(latency), 1001)).astype(int)]
            self.detectors[("cusum", LATENCY)] = CUSUM(expected_run_length=own_run_length, mean=0.0, std=1.0)

    def _fill(self, matrix: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(matrix), self.matrix_fill, matrix)

    def _matrix(self, batch: ModelBatch) -> np.ndarray:
        return self._fill(np.column_stack([self._column(batch, name) for name in self.matrix_features]))

    # -- monitoring ---------------------------------------------------------

    def _column(self, batch: ModelBatch, feature: str) -> np.ndarray:
        kind = self.kinds[feature]
        if feature in batch.numeric:
            column = batch.numeric[feature]
        elif feature in batch.categorical:
            column = batch.categorical[feature]
        else:
            column = np.full(batch.n, np.nan)
        return _as_numeric(column) if kind == "numeric" else _as_categorical(column)

    def _output_column(self, batch: ModelBatch, detector_name: str) -> np.ndarray:
        if detector_name == "prediction_class":
            return batch.predicted_class
        if detector_name == "prediction_score":
            return batch.score
        if detector_name == "prediction_value":
            return batch.prediction_value
        return _entropy(batch)

    def _run_detectors(self, batch: ModelBatch) -> list[Finding]:
        for feature in batch.numeric.keys() | batch.categorical.keys():
            if feature not in self.kinds and len(self.ignored_features) < 1000:
                self.ignored_features.add(feature)
        findings = []
        event_time = float(np.max(batch.timestamps))
        matrix = self._matrix(batch) if self.matrix_features else None
        for (detector_name, feature), detector in self.detectors.items():
            if feature == LATENCY:
                kind, column = LATENCY_SHIFT, self._latency_scores(batch.latency_ms)
            elif feature:
                kind, column = INPUT_DRIFT, self._column(batch, feature)
            elif detector_name == "hst":
                kind, column = ANOMALY_RATE, self._hst_window(matrix)
                if column is None:
                    continue
            elif detector_name in MULTIVARIATE_DETECTORS:
                kind, column = INPUT_DRIFT, matrix
            else:
                kind, column = OUTPUT_DRIFT, self._output_column(batch, detector_name)
            result = detector.update(column)
            if result is None:
                continue
            self.latest[(detector_name, feature)] = result
            # HST and latency examples index their own inputs, not the batch
            examples = [] if kind in (ANOMALY_RATE, LATENCY_SHIFT) else [
                str(batch.request_ids[i]) for i in result.examples if batch.request_ids[i] is not None
            ]
            findings.append(
                Finding(
                    model=self.model_id,
                    alert=kind,
                    feature=feature,
                    detector=detector_name,
                    result=result,
                    example_request_ids=examples,
                    event_time=event_time,
                    # detectors count from the end of the reference
                    since_record=None if result.change_index is None
                    else self.live_reference_records + result.change_index,
                )
            )
        return findings

    def _latency_scores(self, latency: np.ndarray) -> np.ndarray:
        """Normal scores of the batch's latencies (records without one are left
        out: a sequential detector has no use for a gap) against the reference
        quantiles."""
        q = self.latency_quantiles
        latency = latency[~np.isnan(latency)]
        # mid-rank position, kept off 0 and 1 so the scores stay finite
        rank = (np.searchsorted(q, latency, "left") + np.searchsorted(q, latency, "right")) / 2
        return special.ndtri((rank + 0.5) / (len(q) + 1))

    def _hst_window(self, matrix: np.ndarray) -> np.ndarray | None:
        """Rows for the anomaly detector, a full window at a time: its binomial
        test is calibrated per window, so small batches must not multiply tests."""
        self._hst_pending.append(matrix)
        if sum(len(m) for m in self._hst_pending) < self.policy.window_size:
            return None
        rows = np.concatenate(self._hst_pending)
        self._hst_pending = []
        return rows

    def anomaly_ratio(self) -> float | None:
        result = self.latest.get(("hst", ""))
        return None if result is None else result.statistic

    def join_labels(self, labels: list[tuple[str, str]], event_time: float) -> list[Finding]:
        """Join delayed ``(request_id, label)`` pairs; findings for finished windows."""
        if self.performance is None:
            return []
        return self._performance_findings(self.performance.join(labels), event_time)

    def _performance_findings(self, results: list[DriftResult], event_time: float) -> list[Finding]:
        # n_seen is the labelled-record count when the window closed: distinct per window, increasing
        return [Finding(self.model_id, PERFORMANCE_DEGRADED, "", "accuracy", r, [], event_time, window=r.n_seen)
                for r in results]

    # -- checkpoints --------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to resume this model exactly, as plain data."""
        return {
            "version": 1,
            "model_id": self.model_id,
            "records_seen": self.records_seen,
            "live_reference_records": self.live_reference_records,
            "last_event_time": self.last_event_time,
            "reference": None if self._reference is None else self._reference.state_dict(),
            "kinds": self.kinds,
            "alpha": self.alpha,
            "ignored_features": sorted(self.ignored_features),
            "detectors": [[name, feature, d.state_dict()] for (name, feature), d in self.detectors.items()],
            "matrix_features": self.matrix_features,
            "matrix_fill": None if self.matrix_fill is None else self.matrix_fill.tolist(),
            "hst_pending": [rows.tolist() for rows in self._hst_pending],
            "latency_quantiles": None if self.latency_quantiles is None else self.latency_quantiles.tolist(),
            "latest": [[name, feature, asdict(r)] for (name, feature), r in self.latest.items()],
            "recent_classes": _column_state(self._recent_classes[: self._recent_filled]),
            "recent_next": self._recent_next,
            "performance": None if self.performance is None else self.performance.state_dict(),
            "tamper": self.tamper.state_dict(),
        }

    @classmethod
    def from_state(cls, state: dict, settings: Settings) -> ModelMonitor:
        if state.get("version") != 1:
            raise ValueError(f"unsupported model state version {state.get('version')!r}")
        monitor = cls(state["model_id"], settings)
        monitor.records_seen = state["records_seen"]
        monitor.live_reference_records = state["live_reference_records"]
        monitor.last_event_time = state["last_event_time"]
        monitor._reference = None if state["reference"] is None else _ReferenceBuffer.from_state(state["reference"])
        monitor.kinds = dict(state["kinds"])
        monitor.alpha = state["alpha"]
        monitor.ignored_features = set(state["ignored_features"])
        monitor.detectors = {(n, f): _restore_detector(n, d) for n, f, d in state["detectors"]}
        monitor.matrix_features = list(state["matrix_features"])
        monitor.matrix_fill = None if state["matrix_fill"] is None else np.array(state["matrix_fill"])
        if state["latency_quantiles"] is not None:
            monitor.latency_quantiles = np.array(state["latency_quantiles"])
        monitor._hst_pending = [np.array(rows, dtype=np.float64).reshape(-1, len(monitor.matrix_features))
                                for rows in state["hst_pending"]]
        monitor.latest = {
            (n, f): DriftResult(**{**r, "examples": tuple(r["examples"])}) for n, f, r in state["latest"]
        }
        recent = _column_from_state(state["recent_classes"])[-len(monitor._recent_classes) :]
        monitor._recent_classes[: len(recent)] = recent
        monitor._recent_filled = len(recent)
        monitor._recent_next = state["recent_next"] % len(monitor._recent_classes)
        if state["performance"] is not None and monitor.performance is not None:
            monitor.performance = PerformanceTracker.from_state(state["performance"])
        monitor.tamper.load_state(state["tamper"])
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
