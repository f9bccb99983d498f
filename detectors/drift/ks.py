"""Two-sample Kolmogorov-Smirnov drift test against a fixed reference sample.

The statistic is ``D = sup_x |F_ref(x) - F_window(x)|`` and its p-value is the
one ``scipy.stats.ks_2samp(..., method="asymp")`` reports: the one-sample
Kolmogorov distribution ``scipy.stats.kstwo`` with ``n = round(n_ref * W /
(n_ref + W))``. The threshold is the same distribution's inverse survival
function at ``alpha``, so ``detected == (D > threshold) == (p_value < alpha)``
up to floating point. The asymptotic p-value is within a few percent of
scipy's exact one for the sizes used here (checked in the tests) and is the
one scipy itself uses when either sample exceeds 10,000 values.

The test is distribution free for continuous features. With ties (integer or
rounded features) it is conservative: fewer false alarms than ``alpha``, and
less power; prefer ``psi`` or ``chi2`` for features with few distinct values.

Cost: the reference is sorted once; each window is sorted and placed in the
reference with ``searchsorted``: ``O(W log W + W log n_ref)``, all windows of
a batch at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import optimize, stats

from detectors.drift.window import NumericWindowDetector


class KSDrift(NumericWindowDetector):
    """Kolmogorov-Smirnov drift detector for one numeric feature.

    Parameters
    ----------
    reference
        Values the feature had when the model was approved (NaN/inf ignored).
    window_size
        Non-missing values per test.
    alpha
        False-alarm probability per test (see :mod:`detectors.calibration`).
    sliding
        Test the last ``window_size`` values every ``window_size // 4`` values
        instead of disjoint windows.
    seed
        Unused (the test is deterministic); accepted for a uniform constructor.
    n_bins
        Quantile bins used only to explain a result.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> det = KSDrift(rng.normal(size=5000), window_size=500, alpha=1e-6)
    >>> det.update(rng.normal(size=300)) is None    # window still filling
    True
    >>> r = det.update(rng.normal(size=200))        # stationary: quiet
    >>> r.detected, r.change_index, r.n_seen
    (False, 0, 500)
    >>> r = det.update(rng.normal(loc=0.5, size=1000))  # mean +0.5 sd
    >>> r.detected, r.change_index, r.n_seen, r.extra["tests_in_batch"]
    (True, 1000, 1500, 2)
    >>> print(r.detail)
    mean moved from -0.00453 to 0.502; values > 1.294 went from 10% of the reference to 21% of the window (KS D=0.232 > 0.126, p=4.7e-22)
    """

    name = "ks"
    stat_label = "KS D"

    def _fit_sorted(self, ref: np.ndarray) -> None:
        self._ref = ref

    def _calibrate(self) -> None:
        n, w = sorted([float(self._ref_n), float(self.window_size)], reverse=True)
        # scipy's asymptotic mode: kstwo with the rounded effective size.
        self._en = float(np.round(n * w / (n + w)))
        d0 = float(stats.kstwo.isf(self.alpha, self._en))
        # kstwo.isf is accurate to ~1e-4 relative in alpha; polish it so that
        # D > threshold agrees with p < alpha to the last digit.
        f = lambda d: np.log(stats.kstwo.sf(d, self._en)) - np.log(self.alpha)  # noqa: E731
        lo, hi = d0 * 0.999, min(1.0, d0 * 1.001)
        self._threshold = float(optimize.brentq(f, lo, hi, xtol=1e-15)) if f(lo) * f(hi) < 0 else d0

    def _reference_state(self) -> dict[str, Any]:
        return {**super()._reference_state(), "sorted": self._ref.tolist()}

    def _load_reference(self, state: dict[str, Any]) -> None:
        super()._load_reference(state)
        self._ref = np.asarray(state["sorted"], dtype=np.float64)

    def _test(self, windows: np.ndarray):
        W = windows.shape[1]
        s = np.sort(windows, axis=1)
        n = len(self._ref)
        j = np.arange(W)
        # Both ECDFs are step functions, so the sup is reached at a window
        # value: either F_w - F_ref just at it (right limits; with ties the
        # last copy gives the exact value, earlier copies only underestimate)
        # or F_ref - F_w just before it (left limits; exact at the first copy).
        left = np.searchsorted(self._ref, s, side="left")
        # Right counts differ from left ones only where the value occurs in
        # the reference; search again just there (halves the cost).
        right = left.copy()
        tie = self._ref[np.minimum(left, n - 1)] == s
        if tie.any():
            right[tie] = np.searchsorted(self._ref, s[tie], side="right")
        d_plus = ((j + 1) / W - right / n).max(axis=1)
        d_minus = (left / n - j / W).max(axis=1)
        d = np.maximum(d_plus, d_minus)
        return d, np.full(len(d), self._threshold), lambda i: self._p_value(d[i])

    def _p_value(self, d):
        return np.clip(stats.kstwo.sf(d, self._en), 0.0, 1.0)
