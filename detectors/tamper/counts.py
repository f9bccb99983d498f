"""Counting rows per class code, shared by the tamper detectors (trigger,
segment suppression) that keep ``(conditions, classes)`` count tables."""

from __future__ import annotations

import numpy as np


def count_by_class(B: np.ndarray, codes: np.ndarray, K: int) -> np.ndarray:
    """Counts ``(columns, K)``: rows of boolean ``B`` per class code (``-1`` rows skipped).

    Rows are grouped by class with one stable sort and summed with
    ``np.add.reduceat``: a single pass over ``B``, ~3x faster than an integer
    matmul (numpy has no BLAS for integers) and independent of BLAS threads.
    """
    out = np.zeros((K, B.shape[1]), dtype=np.int64)
    keep = codes >= 0
    if not keep.any() or B.shape[1] == 0:
        return out.T.copy()
    order = np.nonzero(keep)[0][np.argsort(codes[keep], kind="stable")]
    cs = codes[order]
    present = np.unique(cs)
    starts = np.searchsorted(cs, present)
    out[present] = np.add.reduceat(B[order], starts, axis=0, dtype=np.int64)
    return out.T.copy()
