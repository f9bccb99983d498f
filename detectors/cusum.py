"""Two-sided tabular CUSUM calibrated to an expected run length.

The textbook chart (k = 0.5, h = 4 or 5 standard deviations) raises a false
alarm every few hundred records on a perfectly stationary stream: fine on a
control chart inspected by hand, useless on a stream of millions of inference
records.  Here ``h`` is derived from the user-facing target instead: the
expected number of in-control records between two false alarms (ARL0), via
Siegmund's approximation for the one-sided chart with Gaussian increments

    ARL(d) = (exp(-2 d b) + 2 d b - 1) / (2 d^2),   b = h + 1.166,  d = mean drift

and 1/ARL(two-sided) = 1/ARL(upper) + 1/ARL(lower).  Mean and standard
deviation are learned from the first ``warmup`` values (after every reset);
because that estimate is itself noisy, ``h`` is computed for an in-control
drift of ``k - 1/sqrt(warmup)`` (one standard error worse than the ideal), so
a typical estimation error does not shorten the run length below the target.

The recurrence ``S_t = max(0, S_{t-1} + z_t - k)`` is a Lindley recursion:
with ``C_t = S_0 + sum(z - k)`` it equals ``C_t - min(0, min_{s<=t} C_s)``,
i.e. a cumulative sum minus its running minimum: two numpy passes per batch.
"""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np

from detectors.base import Detector, DriftResult

_CHUNK = 8192


def siegmund_arl(h: float, k: float, shift: float = 0.0) -> float:
    """Siegmund's approximation of the average run length of a one-sided
    CUSUM with reference value ``k`` and decision interval ``h`` (in standard
    deviations) when the mean is ``shift`` standard deviations off target."""
    d = shift - k
    b = h + 1.166
    if abs(d) < 1e-9:
        return b * b
    return (math.exp(-2 * d * b) + 2 * d * b - 1) / (2 * d * d)


def h_for_arl(arl0: float, k: float = 0.5, drift_margin: float = 0.0) -> float:
    """Decision interval ``h`` giving a two-sided in-control run length of
    ``arl0`` records (bisection on Siegmund's approximation).  ``drift_margin``
    lowers the assumed in-control drift to ``k - drift_margin`` (conservative
    when the baseline mean is estimated)."""
    if arl0 <= 1:
        raise ValueError("arl0 must exceed 1")
    k_eff = max(k - drift_margin, 1e-6)
    # two equal one-sided charts: each needs twice the run length
    target = 2.0 * arl0
    lo, hi = 0.0, 1.0
    while siegmund_arl(hi, k_eff) < target:
        hi *= 2
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if siegmund_arl(mid, k_eff) < target:
            lo = mid
        else:
            hi = mid
    return hi


class CUSUM(Detector):
    """Two-sided tabular CUSUM on standardised values.

    Parameters
    ----------
    k
        Reference value (allowance) in standard deviations: about half the
        shift one wants to detect fastest.
    h
        Decision interval in standard deviations.  ``None`` (default) derives
        it from ``expected_run_length``.
    expected_run_length
        ARL0: expected number of stationary records between false alarms.
    warmup
        Values used (after every reset) to learn mean and standard deviation;
        ignored when ``mean`` and ``std`` are given.
    mean, std
        A known in-control baseline (skips the warm-up).
    clip
        If set, standardised values are clipped to ``[-clip, clip]``: a single
        wild outlier then cannot by itself signal a change.

    ``statistic`` is max(S+, S-) and ``threshold`` is ``h``, both in standard
    deviations.  After a detection the detector resets (and warms up again
    unless a fixed baseline was given), like River's detectors.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> cusum = CUSUM(expected_run_length=1_000_000)
    >>> round(cusum.h, 2)
    13.44
    >>> cusum.update(rng.normal(0, 1, 50_000)).detected
    False
    >>> r = cusum.update(rng.normal(1, 1, 1_000))   # +1 sd from record 50,000
    >>> r.detected, r.change_index, r.extra["detections"]
    (True, 50001, [50043])
    """

    name = "cusum"

    def __init__(
        self,
        k: float = 0.5,
        h: float | None = None,
        expected_run_length: float = 1_000_000,
        warmup: int = 1000,
        mean: float | None = None,
        std: float | None = None,
        clip: float | None = None,
    ):
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        if warmup < 2 and mean is None:
            raise ValueError("warmup must be at least 2")
        self.k = float(k)
        self.expected_run_length = float(expected_run_length)
        self.warmup = int(warmup)
        self.fixed_mean = None if mean is None else float(mean)
        self.fixed_std = None if std is None else float(std)
        self.clip = None if clip is None else float(clip)
        if h is None:
            margin = 0.0 if mean is not None else 1.0 / math.sqrt(self.warmup)
            h = h_for_arl(self.expected_run_length, self.k, margin)
        self.h = float(h)
        self.n_seen = 0
        self._reset()

    @classmethod
    def from_arl(cls, arl0: float, **kwargs: Any) -> Self:
        """CUSUM whose threshold gives ``arl0`` expected records between false alarms."""
        return cls(expected_run_length=arl0, **kwargs)

    def _reset(self) -> None:
        self._wn = 0  # warm-up values seen
        self._wsum = 0.0
        self._wsq = 0.0  # sum of squared deviations (Chan et al. merge)
        if self.fixed_mean is not None:
            self._mu, self._sd = self.fixed_mean, max(self.fixed_std, 1e-300)
        else:
            self._mu = self._sd = None
        self._s_up = 0.0
        self._s_dn = 0.0
        self._zero_up = self.n_seen  # stream position where S+ last left zero
        self._zero_dn = self.n_seen

    def _warm(self, x: np.ndarray) -> int:
        take = min(len(x), self.warmup - self._wn)
        if take <= 0:
            return 0
        w = x[:take]
        # merge batch mean / squared deviations into the running ones
        n_b, m_b = take, float(w.mean())
        q_b = float(((w - m_b) ** 2).sum())
        n_a = self._wn
        m_a = self._wsum / n_a if n_a else 0.0
        n = n_a + n_b
        self._wsq += q_b + (m_b - m_a) ** 2 * n_a * n_b / n
        self._wsum += float(w.sum())
        self._wn = n
        self.n_seen += take
        if n == self.warmup:
            self._mu = self._wsum / n
            sd = math.sqrt(self._wsq / (n - 1))
            # a constant warm-up: any later deviation is a change; avoid /0
            self._sd = max(sd, 1e-12 * max(1.0, abs(self._mu)))
            self._zero_up = self._zero_dn = self.n_seen
        return take

    def _scan(self, x: np.ndarray) -> tuple[int, bool]:
        z = (x - self._mu) / self._sd
        if self.clip is not None:
            z = np.clip(z, -self.clip, self.clip)
        m = len(z)
        pos = self.n_seen + np.arange(m)
        out = []
        for s0, y, zero0 in ((self._s_up, z - self.k, self._zero_up), (self._s_dn, -z - self.k, self._zero_dn)):
            c = np.cumsum(np.concatenate(([s0], y)))
            run_min = np.minimum.accumulate(np.minimum(c[1:], 0.0))
            s = c[1:] - run_min
            # S restarts from zero where C hits a new running minimum <= 0
            zero = np.maximum.accumulate(np.where(s <= 0.0, pos + 1, zero0))
            out.append((s, zero))
        (s_up, z_up), (s_dn, z_dn) = out
        hit = (s_up > self.h) | (s_dn > self.h)
        det = int(np.argmax(hit)) if hit.any() else -1
        e = det if det >= 0 else m - 1
        self._s_up, self._s_dn = float(s_up[e]), float(s_dn[e])
        self._zero_up, self._zero_dn = int(z_up[e]), int(z_dn[e])
        self.n_seen += e + 1
        self._last_z = z[: e + 1]
        return det, bool(s_up[e] > self.h)

    def update(self, values: np.ndarray) -> DriftResult | None:
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size and not np.isfinite(x).all():
            raise ValueError("CUSUM: values must be finite (drop NaN/inf before update)")
        batch_start = self.n_seen
        detections: list[int] = []
        changes: list[int] = []
        det_info: tuple[float, bool, int, int] | None = None
        scanned = False
        i = 0
        while i < len(x):
            if self._mu is None:
                i += self._warm(x[i:])
                continue
            det, up = self._scan(x[i : i + _CHUNK])
            scanned = True
            if det >= 0:
                pos = self.n_seen - 1
                change = self._zero_up if up else self._zero_dn
                stat = max(self._s_up, self._s_dn)
                detections.append(pos)
                changes.append(change)
                det_info = (stat, up, pos, change)
                self._reset()
                i += det + 1
            else:
                i += min(_CHUNK, len(x) - i)
        if det_info is not None:
            stat, up, pos, change = det_info
            lo = max(change, batch_start) - batch_start
            seg = x[lo : pos - batch_start + 1]
            order = np.argsort(seg if not up else -seg, kind="stable")[:5] + lo
            return DriftResult(
                statistic=stat,
                threshold=self.h,
                detected=True,
                n_seen=self.n_seen,
                change_index=change,
                examples=tuple(sorted(int(t) for t in order)),
                detail=(
                    f"CUSUM: mean {'increase' if up else 'decrease'} detected at record {pos} "
                    f"(S={stat:.3g} > h={self.h:.3g} sd), estimated start at record {change}"
                ),
                extra={"detections": detections, "change_points": changes},
            )
        if not scanned:
            return None
        stat = max(self._s_up, self._s_dn)
        return DriftResult(
            statistic=stat,
            threshold=self.h,
            detected=False,
            n_seen=self.n_seen,
            detail=f"CUSUM: no change (S={stat:.3g} <= h={self.h:.3g} sd)",
            extra={"detections": [], "mean": self._mu, "std": self._sd},
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "params": {
                "k": self.k,
                "h": self.h,
                "expected_run_length": self.expected_run_length,
                "warmup": self.warmup,
                "mean": self.fixed_mean,
                "std": self.fixed_std,
                "clip": self.clip,
            },
            "n_seen": self.n_seen,
            "wn": self._wn,
            "wsum": self._wsum,
            "wsq": self._wsq,
            "mu": self._mu,
            "sd": self._sd,
            "s_up": self._s_up,
            "s_dn": self._s_dn,
            "zero_up": self._zero_up,
            "zero_dn": self._zero_dn,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        d = cls(**state["params"])
        d.n_seen = int(state["n_seen"])
        d._wn, d._wsum, d._wsq = int(state["wn"]), float(state["wsum"]), float(state["wsq"])
        d._mu, d._sd = state["mu"], state["sd"]
        d._s_up, d._s_dn = float(state["s_up"]), float(state["s_dn"])
        d._zero_up, d._zero_dn = int(state["zero_up"]), int(state["zero_dn"])
        return d
