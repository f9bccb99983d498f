"""Multivariate drift from PCA reconstruction error (NannyML's "data
reconstruction drift").

Fit: standardise the reference features, keep the principal components that
explain ``variance`` (65%) of their variance. Each row's *reconstruction
error* is the Euclidean distance between the standardised row and its
projection back from those components. When the joint distribution changes
(a correlation breaks, a feature moves, a new cluster appears) rows stop
lying where the reference's components expect them and the mean error of a
window moves, often when no single feature's marginal test fires.

Calibration (unlike NannyML's "mean +- 3 sd of reference chunks"):

* The reference is shuffled (``seed``) and split: the PCA is fit on one half
  and the error distribution measured on the other, so the errors it is
  compared with are out-of-sample like the stream's (errors on the fitting
  rows are biased low).
* Under no drift a window's mean error ``m`` has mean ``mu`` and variance
  ``sigma^2 / W``; ``mu`` itself is estimated from ``n_cal`` rows, so the
  statistic ``|m - mu|`` has sd ``se = sigma sqrt(1/W + 1/n_cal)``.
* Threshold ``z * se`` with ``z = Phi^-1(1 - alpha/2)`` (two-sided: errors
  can also *fall*, e.g. when features collapse onto each other), corrected
  for the skewness ``g`` of the error distribution by Cornish-Fisher
  (``z + (z^2 - 1) g / (6 sqrt(W))`` above the mean, minus below): errors are
  positive and right-skewed, and at ``alpha = 1e-7`` the plain normal tail
  would under-cover the upper side by ~2-3x. Still an approximation, checked
  by simulation at ``alpha = 0.01`` in the tests.

Missing cells are imputed with the reference mean (0 after standardising);
rows with no value at all are dropped. The window holds one error per row,
so the checkpoint stays small.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from detectors.drift.window import WindowedTwoSampleDetector, fmt_p, row_sum


class PCAReconstructionDrift(WindowedTwoSampleDetector):
    """PCA reconstruction-error drift detector for a feature matrix.

    Parameters
    ----------
    reference
        ``(rows, features)`` float array (NaN = missing), at least 20 rows.
    window_size, alpha, sliding
        As for every two-sample detector (see :mod:`detectors.drift.window`); a
        window is ``window_size`` rows.
    seed
        Shuffles the reference before splitting it into fit/calibration halves.
    variance
        Fraction of the standardised variance the kept components explain.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(5)
    >>> cov = 0.8 * np.ones((4, 4)) + 0.2 * np.eye(4)     # correlated features
    >>> ref = rng.multivariate_normal(np.zeros(4), cov, size=4000)
    >>> det = PCAReconstructionDrift(ref, window_size=500, alpha=1e-6)
    >>> det.n_components
    1
    >>> det.update(rng.multivariate_normal(np.zeros(4), cov, size=500)).detected
    False
    >>> # Same marginals (each feature still N(0, 1)), correlation gone:
    >>> r = det.update(rng.normal(size=(500, 4)))
    >>> r.detected
    True
    >>> print(r.detail)
    mean reconstruction error rose from 0.717 to 1.58 (|change|=0.865 > 0.0746, p<1e-300): the features no longer vary together as in the reference
    """

    name = "pca_reconstruction"
    stat_label = "|change|"

    def __init__(
        self,
        reference: np.ndarray,
        window_size: int = 1000,
        alpha: float = 1e-6,
        *,
        sliding: bool = False,
        seed: int = 0,
        variance: float = 0.65,
    ) -> None:
        super().__init__(
            reference, window_size, alpha, sliding=sliding, seed=seed, variance=variance
        )

    def _setup(self, *, variance: float = 0.65, **base: Any) -> None:
        super()._setup(**base)
        if not 0.0 < float(variance) <= 1.0:
            raise ValueError("variance must be in (0, 1]")
        self.variance = float(variance)

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "variance": self.variance}

    # ------------------------------------------------------------- reference

    def _fit(self, reference: np.ndarray) -> None:
        x = np.asarray(reference, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 20 or x.shape[1] < 1:
            raise ValueError("the reference must be a (rows >= 20, features >= 1) array")
        x = np.where(np.isfinite(x), x, np.nan)
        x = x[~np.isnan(x).all(axis=1)]
        mean = np.nanmean(x, axis=0)
        mean = np.where(np.isnan(mean), 0.0, mean)  # an all-missing column
        std = np.nanstd(x, axis=0)
        # Constant (or all-missing) columns: unit scale, so any change in
        # them shows up as error instead of dividing by zero.
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        self._mean, self._std = mean, std
        z = self._standardise(x)
        rng = np.random.default_rng(self.seed)
        perm = rng.permutation(len(z))
        fit, cal = z[perm[: len(z) // 2]], z[perm[len(z) // 2 :]]
        # PCA by SVD of the centred fitting half.
        center = fit.mean(axis=0)
        _, s, vt = np.linalg.svd(fit - center, full_matrices=False)
        explained = s**2 / max(float((s**2).sum()), 1e-300)
        k = int(np.searchsorted(np.cumsum(explained), self.variance - 1e-12) + 1)
        k = min(k, vt.shape[0])
        self._center, self._components = center, vt[:k]
        self._explained = float(explained[:k].sum())
        err = self._errors(cal)
        self._err_mean = float(err.mean())
        self._err_std = float(err.std(ddof=1))
        self._err_skew = float(stats.skew(err)) if self._err_std > 0 else 0.0
        self._n_cal = len(err)

    def _reference_state(self) -> dict[str, Any]:
        return {
            "mean": self._mean.tolist(),
            "std": self._std.tolist(),
            "center": self._center.tolist(),
            "components": self._components.tolist(),
            "explained": self._explained,
            "err_mean": self._err_mean,
            "err_std": self._err_std,
            "err_skew": self._err_skew,
            "n_cal": self._n_cal,
        }

    def _load_reference(self, state: dict[str, Any]) -> None:
        self._mean = np.asarray(state["mean"], dtype=np.float64)
        self._std = np.asarray(state["std"], dtype=np.float64)
        self._center = np.asarray(state["center"], dtype=np.float64)
        self._components = np.asarray(state["components"], dtype=np.float64).reshape(
            -1, len(self._mean)
        )
        self._explained = float(state["explained"])
        self._err_mean = float(state["err_mean"])
        self._err_std = float(state["err_std"])
        self._err_skew = float(state["err_skew"])
        self._n_cal = int(state["n_cal"])

    def _calibrate(self) -> None:
        self._se = self._err_std * np.sqrt(1.0 / self.window_size + 1.0 / self._n_cal)
        z = float(stats.norm.isf(self.alpha / 2))
        g = self._err_skew / np.sqrt(self.window_size)  # skewness of a window mean
        shift = (z * z - 1) * g / 6
        self.threshold_up = float(max(z + shift, 0.0) * self._se)
        self.threshold_down = float(max(z - shift, 0.0) * self._se)

    @property
    def n_components(self) -> int:
        return len(self._components)

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        z = (x - self._mean) / self._std
        return np.where(np.isnan(z), 0.0, z)  # missing -> reference mean

    def _errors(self, z: np.ndarray) -> np.ndarray:
        c = z - self._center
        recon = (c @ self._components.T) @ self._components
        return np.sqrt(row_sum((c - recon) ** 2)) if len(z) else np.empty(0)

    # ---------------------------------------------------------------- window

    def _empty_values(self) -> np.ndarray:
        return np.empty(0, dtype=np.float64)

    def _clean(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(values, dtype=np.float64)
        if x.ndim == 1 and x.size == 0:
            x = x.reshape(0, len(self._mean))
        if x.ndim != 2 or x.shape[1] != len(self._mean):
            raise ValueError(f"expected (rows, {len(self._mean)}) values, got shape {x.shape}")
        x = np.where(np.isfinite(x), x, np.nan)
        keep = ~np.isnan(x).all(axis=1)
        return keep, self._errors(self._standardise(x[keep]))

    def _values_to_state(self, values: np.ndarray) -> list:
        return values.tolist()

    def _values_from_state(self, values: list) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    def _test(self, windows: np.ndarray):
        dev = row_sum(windows) / windows.shape[1] - self._err_mean
        thr = np.where(dev > 0, self.threshold_up, self.threshold_down)
        return np.abs(dev), thr, lambda i: self._p_value(dev[i])

    def _p_value(self, dev):
        z = np.abs(dev) / self._se if self._se > 0 else np.full(np.shape(dev), np.inf)
        return np.minimum(1.0, 2 * stats.norm.sf(z))

    def _explain(self, window, positions, batch_start, statistic, threshold, detected, p_value):
        wm = float(window.mean())
        direction = "rose" if wm > self._err_mean else "fell"
        cmp = ">" if detected else "<="
        test = f"{self.stat_label}={statistic:.3g} {cmp} {threshold:.3g}{fmt_p(p_value)}"
        if detected:
            why = (
                "the features no longer vary together as in the reference"
                if direction == "rose"
                else "the features vary together more tightly than in the reference"
            )
            detail = (
                f"mean reconstruction error {direction} from {self._err_mean:.3g} "
                f"to {wm:.3g} ({test}): {why}"
            )
        else:
            detail = f"no drift: {test} (mean reconstruction error {wm:.3g} vs {self._err_mean:.3g})"
        # Examples: this batch's rows that the reference's components
        # explain worst (or best, when the error fell).
        cand = np.flatnonzero(positions >= batch_start)
        key = -window[cand] if direction == "rose" else window[cand]
        pick = cand[np.argsort(key, kind="stable")[:5]]
        extra = {
            "reference_error_mean": self._err_mean,
            "window_error_mean": wm,
            "n_components": self.n_components,
            "explained_variance": self._explained,
        }
        return detail, extra, tuple((positions[pick] - batch_start).tolist())
