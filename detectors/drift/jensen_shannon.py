"""Jensen-Shannon divergence of a numeric feature's binned distribution.

``JS(w, r) = (KL(w || m) + KL(r || m)) / 2`` with ``m = (w + r) / 2``, in bits
(so ``0 <= JS <= 1``), over the reference's quantile bins (the same bins as
:mod:`detectors.drift.psi`). Unlike PSI it needs no smoothing: ``m`` is positive
wherever either share is.

Threshold. For close distributions ``KL(w || m) ~ sum (w - m)^2 / (2 m)`` and
``w - m = (w - r) / 2``, so ``JS_nats ~ sum (w - r)^2 / (8 m)``; with ``w``
and ``r`` multinomial shares of sizes ``W`` and ``n_ref`` that makes

    8 * N_eff * JS_nats  ~  chi2 with (bins with reference mass - 1) dof,
    N_eff = n_ref * W / (n_ref + W).

(The factor is 8, not 2, because this is the equal-weight JS. The G-test's
``2 * N * JS_pi`` uses the JS weighted by sample sizes; both agree when the
sizes are equal.) ``threshold = chi2.isf(alpha, dof) / (8 N_eff ln 2)``
bits. Asymptotic; the tests check the false-alarm rate by simulation at
alpha = 0.01 and 0.001. Keep ``W / n_bins >= 50``.
"""

from __future__ import annotations


import numpy as np
from scipy import stats

from detectors.drift.window import NumericWindowDetector, bin_counts

LN2 = float(np.log(2.0))


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise Jensen-Shannon divergence in bits of share arrays (last axis).

    >>> float(js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])))
    1.0
    >>> float(js_divergence(np.array([0.5, 0.5]), np.array([0.5, 0.5])))
    0.0
    """
    p, q = np.broadcast_arrays(np.asarray(p, float), np.asarray(q, float))
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        # In-order sums (see window.row_sum): results must not depend on
        # how many windows are stacked.
        kp = np.cumsum(np.where(p > 0, p * np.log2(p / m), 0.0), axis=-1)[..., -1]
        kq = np.cumsum(np.where(q > 0, q * np.log2(q / m), 0.0), axis=-1)[..., -1]
    return np.maximum((kp + kq) / 2, 0.0)


class JensenShannonDrift(NumericWindowDetector):
    """Jensen-Shannon drift detector for one numeric feature.

    Parameters are those of every two-sample detector (``seed`` unused) plus
    ``n_bins`` (quantile bins of the reference).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> det = JensenShannonDrift(rng.normal(size=5000), window_size=1000, alpha=1e-6)
    >>> round(det.threshold, 4)
    0.0097
    >>> det.update(rng.normal(size=1000)).detected
    False
    >>> r = det.update(rng.normal(scale=2.0, size=1000))   # variance doubled
    >>> r.detected, r.extra["excess_bin"]
    (True, 'values <= -1.267')
    """

    name = "js"
    stat_label = "JS"

    def _calibrate(self) -> None:
        self._dof = self._occupied_bins_dof()
        n, w = float(self._ref_n), float(self.window_size)
        # Converts JS in bits to the statistic that is ~ chi2(dof).
        self._scale = 8.0 * n * w / (n + w) * LN2
        self.threshold = float(stats.chi2.isf(self.alpha, self._dof) / self._scale)

    def _test(self, windows: np.ndarray):
        w = bin_counts(windows, self._edges) / windows.shape[1]
        js = js_divergence(w, (self._ref_counts / self._ref_n)[None, :])
        return js, np.full(len(js), self.threshold), lambda i: self._p_value(js[i])

    def _p_value(self, js):
        return stats.chi2.sf(js * self._scale, self._dof)
