"""Delayed-label join and the accuracy-drop test."""

import numpy as np

from monitor.engine.performance import PerformanceTracker


def ids(start, n):
    return np.array([f"r{i}" for i in range(start, start + n)], dtype=object)


def test_labels_join_in_either_order_and_accuracy_drop_is_detected():
    tracker = PerformanceTracker(window=200, alpha=1e-6, max_pending=10_000)
    rng = np.random.default_rng(0)
    predicted = np.array(["a"] * 1000, dtype=object)
    # labels before predictions for the first half, after for the second
    first = [(f"r{i}", "a" if rng.random() < 0.9 else "b") for i in range(500)]
    assert tracker.join(first) == []
    results = tracker.remember(ids(0, 500), predicted[:500])
    results += tracker.remember(ids(500, 500), predicted[500:])
    later = [(f"r{i}", "a" if rng.random() < (0.9 if i < 800 else 0.5) else "b") for i in range(500, 1000)]
    results += tracker.join(later)
    assert tracker.matched == 1000 and tracker.unmatched == 0 and tracker.forgotten == 0
    assert 0.82 < tracker.reference_accuracy < 0.98  # +-3.8 sd of a 200-sample mean at 0.9
    # windows 2-4 are at 90% (quiet), window 5 (records 800-999) at 50%:
    # z is ~9 there; a false detection at 90% has probability < 1e-5 per window.
    assert [r.detected for r in results] == [False, False, False, True]
    assert tracker.accuracy() < 0.6


def test_pending_predictions_and_early_labels_are_bounded():
    tracker = PerformanceTracker(window=100, alpha=1e-6, max_pending=50)
    tracker.remember(ids(0, 80), np.array(["x"] * 80, dtype=object))
    assert len(tracker.pending) == 50 and tracker.forgotten == 30
    tracker.join([(f"other{i}", "x") for i in range(70)])
    assert len(tracker.early_labels) == 50 and tracker.unmatched == 20
