"""Turn model outputs into 1-d streams that drift detectors can watch.

A classifier's probability matrix (``ModelBatch.probabilities``: rows x
classes, NaN rows where a record had none) becomes:

* :func:`entropy` - how unsure the model is, per row (watch with ``ks``: a
  swapped or poisoned model is often more or less confident than the
  approved one long before its predicted-class mix changes);
* :func:`top_probability` and :func:`margin` - the winning score and its lead
  over the runner-up;
* :func:`predicted_labels` - the arg-max class as a label (watch with
  ``chi2``).

All functions are row-wise numpy, NaN in / NaN (or ``None``) out, and
tolerate rows that do not sum to 1 (they are renormalised) or contain small
negative values from float error (clipped to 0).

>>> import numpy as np
>>> p = np.array([[0.5, 0.5], [1.0, 0.0], [np.nan, np.nan], [0.2, 0.6]])
>>> entropy(p).round(3).tolist()
[1.0, 0.0, nan, 0.811]
>>> margin(p).round(2).tolist()
[0.0, 1.0, nan, 0.5]
>>> predicted_labels(p, ["cat", "dog"]).tolist()
['cat', 'cat', None, 'dog']
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _rows(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clipped, renormalised rows and a mask of usable ones."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"expected a (rows, classes) matrix, got shape {p.shape}")
    p = np.clip(p, 0.0, None)  # NaN stays NaN
    total = p.sum(axis=1)
    ok = np.isfinite(total) & (total > 0)
    p = np.where(ok[:, None], p / np.where(ok, total, 1.0)[:, None], np.nan)
    return p, ok


def entropy(probabilities: np.ndarray, *, base: float = 2.0, normalize: bool = False) -> np.ndarray:
    """Shannon entropy of each row (bits by default; ``normalize=True``
    divides by ``log(n_classes)`` so it lies in [0, 1] whatever the number of
    classes). Rows with NaN, or summing to 0, give NaN."""
    p, ok = _rows(probabilities)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    k = p.shape[1]
    if normalize:
        h = h / np.log(k) if k > 1 else np.zeros_like(h)
    else:
        h = h / np.log(base)
    return np.where(ok, np.maximum(h, 0.0), np.nan)


def top_probability(probabilities: np.ndarray) -> np.ndarray:
    """Largest class probability per row (NaN for unusable rows)."""
    p, ok = _rows(probabilities)
    if p.shape[1] == 0:
        return np.full(len(p), np.nan)
    return np.where(ok, np.nanmax(np.where(ok[:, None], p, 0.0), axis=1), np.nan)


def margin(probabilities: np.ndarray) -> np.ndarray:
    """Top probability minus the runner-up per row (NaN for unusable rows;
    equals the top probability when there is a single class)."""
    p, ok = _rows(probabilities)
    q = np.where(ok[:, None], p, 0.0)
    if q.shape[1] < 2:
        return top_probability(probabilities)
    two = -np.partition(-q, 1, axis=1)[:, :2]
    return np.where(ok, two[:, 0] - two[:, 1], np.nan)


def predicted_index(probabilities: np.ndarray) -> np.ndarray:
    """Arg-max column per row, -1 for unusable rows (ties: first column)."""
    p, ok = _rows(probabilities)
    if p.shape[1] == 0:
        return np.full(len(p), -1, dtype=np.int64)
    return np.where(ok, np.argmax(np.where(ok[:, None], p, -1.0), axis=1), -1)


def predicted_labels(probabilities: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Arg-max class label per row as an object array (``None`` for unusable
    rows), ready for :class:`detectors.drift.chi_square.ChiSquareDrift`."""
    idx = predicted_index(probabilities)
    labels = np.asarray(list(classes) + [None], dtype=object)
    if len(labels) - 1 != np.shape(probabilities)[1]:
        raise ValueError("classes must name every column")
    return labels[idx]  # -1 picks the trailing None
