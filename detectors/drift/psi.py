"""Population Stability Index of a numeric feature against a reference sample.

``PSI = sum_b (w_b - r_b) * ln(w_b / r_b)`` over quantile bins of the
reference (``n_bins`` = 10 by default; ties, zero-inflated and constant
features handled by :func:`detectors.drift.window.quantile_bins`), with bin shares
clipped below at ``eps`` so empty bins stay finite.

Threshold. The folklore cut-offs (0.1 "watch", 0.25 "act") ignore sample size:
with 1,000 values per window a stationary feature already has PSI around 0.01
and the cut-offs mean very different false-alarm rates for different window
sizes. Here the threshold comes from PSI's null distribution. For small
differences ``(w - r) ln(w / r) ~ (w - r)^2 / r``, and with ``w`` and ``r``
independent multinomial shares of sizes ``W`` and ``n_ref``,

    PSI / (1/n_ref + 1/W)  ~  chi2 with (bins with reference mass - 1) dof,

so ``threshold = (1/n_ref + 1/W) * chi2.isf(alpha, dof)`` and ``p_value =
chi2.sf(PSI / (1/n_ref + 1/W), dof)``. This is asymptotic: the tests check the
false-alarm rate by simulation at alpha = 0.01 and 0.001 (matches within
binomial error for 10 bins, W = 1,000); at much smaller alpha the chi-square
tail is an extrapolation. Bins with an expected window count below ~5 (many
bins, small windows) make it optimistic: keep ``W / n_bins >= 50``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from detectors.drift.window import NumericWindowDetector, bin_counts, row_sum


class PSIDrift(NumericWindowDetector):
    """PSI drift detector for one numeric feature, calibrated at ``alpha``.

    Parameters are those of every two-sample detector (see
    :mod:`detectors.drift.window`; ``seed`` is unused) plus ``n_bins`` (quantile
    bins of the reference) and ``eps`` (floor on bin shares).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(2)
    >>> det = PSIDrift(rng.normal(size=5000), window_size=1000, alpha=1e-6)
    >>> round(det.threshold, 4)
    0.0538
    >>> r = det.update(rng.normal(size=1000))
    >>> r.detected, round(r.statistic, 4)
    (False, 0.0191)
    >>> r = det.update(rng.normal(loc=0.5, size=1000))
    >>> r.detected, r.change_index
    (True, 1000)
    >>> print(r.detail)
    mean moved from 2.27e-06 to 0.516; values > 1.271 went from 10% of the reference to 21% of the window (PSI=0.267 > 0.0538, p=6.8e-43)

    A zero-inflated feature keeps the zeros in a bin of their own:

    >>> det = PSIDrift(np.r_[np.zeros(600), rng.exponential(size=400)], window_size=500)
    >>> r = det.update(np.r_[np.zeros(200), rng.exponential(size=300)])
    >>> r.detected, r.extra["excess_bin"]
    (True, 'values in (0, 0.2884]')
    """

    name = "psi"
    stat_label = "PSI"

    def _setup(self, *, eps: float = 1e-4, **base: Any) -> None:
        super()._setup(**base)
        if not 0.0 < float(eps) < 1.0:
            raise ValueError("eps must be in (0, 1)")
        self.eps = float(eps)

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "eps": self.eps}

    def _calibrate(self) -> None:
        self._dof = self._occupied_bins_dof()
        self._scale = 1.0 / self._ref_n + 1.0 / self.window_size
        self.threshold = float(self._scale * stats.chi2.isf(self.alpha, self._dof))

    def _test(self, windows: np.ndarray):
        w = np.maximum(bin_counts(windows, self._edges) / windows.shape[1], self.eps)
        r = np.maximum(self._ref_counts / self._ref_n, self.eps)[None, :]
        psi = row_sum((w - r) * np.log(w / r))
        return psi, np.full(len(psi), self.threshold), lambda i: self._p_value(psi[i])

    def _p_value(self, psi):
        return stats.chi2.sf(psi / self._scale, self._dof)
