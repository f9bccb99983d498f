"""Model performance from delayed labels (the labels topic).

Predictions are remembered by request id until their label arrives, and labels
that arrive first (a backlog being replayed, or partitions read unevenly) wait
for their prediction; both sides are bounded, the oldest forgotten first. Each join adds one correct/incorrect outcome. The
first ``window`` outcomes are the reference accuracy; every later window of
``window`` outcomes is tested against it with a one-sided two-proportion z-test
(has accuracy dropped?) at the given alpha.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from scipy import stats

from detectors.base import DriftResult


class PerformanceTracker:
    def __init__(self, window: int, alpha: float, max_pending: int):
        self.window = window
        self.alpha = alpha
        self.max_pending = max_pending
        self.pending: OrderedDict[str, tuple[str, float]] = OrderedDict()  # request id -> (predicted class, event time)
        self.early_labels: OrderedDict[str, str] = OrderedDict()  # request id -> true label
        self.matched = 0
        self.unmatched = 0  # labels evicted before their prediction came
        self.forgotten = 0  # predictions evicted before their label came
        self.reference_accuracy: float | None = None
        self._outcomes: list[bool] = []  # current (reference or test) window
        self._window_times: list[float] = []  # event times of its first and latest prediction
        self._recent = np.zeros(window, dtype=bool)  # ring of the last `window` outcomes
        self._recent_filled = 0
        self._recent_next = 0
        self._z_threshold = float(stats.norm.isf(alpha))

    def remember(self, request_ids: np.ndarray, predicted: np.ndarray,
                 times: np.ndarray | None = None) -> list[DriftResult]:
        """Keep predictions (with their event times) until their labels come;
        join labels that came first."""
        results = []
        if times is None:
            times = np.zeros(len(request_ids))
        for request_id, label, time in zip(request_ids, predicted, times.tolist()):
            if request_id is None or label is None:
                continue
            truth = self.early_labels.pop(request_id, None) if self.early_labels else None
            if truth is None:
                self.pending[request_id] = (label, time)
            else:
                results.extend(self._outcome(label == truth, time))
        self.forgotten += _trim(self.pending, self.max_pending)
        return results

    def join(self, labels: list[tuple[str, str]]) -> list[DriftResult]:
        """Join ``(request_id, true_label)`` pairs; return a result per completed window."""
        results = []
        for request_id, truth in labels:
            predicted = self.pending.pop(request_id, None)
            if predicted is None:
                self.early_labels[request_id] = truth
            else:
                results.extend(self._outcome(predicted[0] == truth, predicted[1]))
        self.unmatched += _trim(self.early_labels, self.max_pending)
        return results

    def _outcome(self, correct: bool, time: float) -> list[DriftResult]:
        self.matched += 1
        self._window_times = [self._window_times[0] if self._window_times else time, time]
        self._recent[self._recent_next] = correct
        self._recent_next = (self._recent_next + 1) % self.window
        self._recent_filled = min(self.window, self._recent_filled + 1)
        self._outcomes.append(correct)
        if len(self._outcomes) < self.window:
            return []
        result = self._close_window()
        return [] if result is None else [result]

    def _close_window(self) -> DriftResult | None:
        accuracy = float(np.mean(self._outcomes))
        first_time, last_time = self._window_times
        self._outcomes, self._window_times = [], []
        if self.reference_accuracy is None:
            self.reference_accuracy = accuracy
            return None
        p0, n = self.reference_accuracy, self.window
        pooled = (p0 + accuracy) / 2
        se = np.sqrt(max(pooled * (1 - pooled), 1e-12) * 2 / n)
        z = float((p0 - accuracy) / se)
        return DriftResult(
            statistic=z,
            threshold=self._z_threshold,
            detected=z > self._z_threshold,
            n_seen=self.matched,
            p_value=float(stats.norm.sf(z)),
            detail=f"accuracy {accuracy:.1%} over the last {n} labelled records vs {p0:.1%} in the reference",
            # event times of the window's first and last labelled prediction
            extra={"accuracy": accuracy, "reference_accuracy": p0, "first_time": first_time, "last_time": last_time},
        )

    def state_dict(self) -> dict:
        return {
            "window": self.window,
            "alpha": self.alpha,
            "max_pending": self.max_pending,
            "pending": [[rid, label, time] for rid, (label, time) in self.pending.items()],
            "early_labels": list(self.early_labels.items()),
            "counts": [self.matched, self.unmatched, self.forgotten],
            "reference_accuracy": self.reference_accuracy,
            "outcomes": [bool(x) for x in self._outcomes],
            "window_times": self._window_times,
            "recent": self._recent.tolist(),
            "recent_filled": self._recent_filled,
            "recent_next": self._recent_next,
        }

    @classmethod
    def from_state(cls, state: dict) -> PerformanceTracker:
        tracker = cls(state["window"], state["alpha"], state["max_pending"])
        tracker.pending = OrderedDict((rid, (label, time)) for rid, label, time in state["pending"])
        tracker.early_labels = OrderedDict(map(tuple, state["early_labels"]))
        tracker.matched, tracker.unmatched, tracker.forgotten = state["counts"]
        tracker.reference_accuracy = state["reference_accuracy"]
        tracker._outcomes = list(state["outcomes"])
        tracker._window_times = list(state["window_times"])
        tracker._recent = np.array(state["recent"], dtype=bool)
        tracker._recent_filled = state["recent_filled"]
        tracker._recent_next = state["recent_next"]
        return tracker

    def accuracy(self) -> float | None:
        """Accuracy over the last ``window`` labelled records (None before any)."""
        if self._recent_filled == 0:
            return None
        return float(self._recent[: self._recent_filled].mean())


def _trim(entries: OrderedDict, limit: int) -> int:
    """Drop the oldest entries over ``limit``; return how many were dropped."""
    dropped = max(0, len(entries) - limit)
    for _ in range(dropped):
        entries.popitem(last=False)
    return dropped
