"""Page-Hinkley test for a change in the mean of a univariate stream.

Same algorithm and decisions as :class:`river.drift.PageHinkley` (fading
cumulative deviation from the running mean, two-sided, reset after a
detection).  A whole batch is one call into a small compiled loop (numba,
``cache=True``) that performs River's floating-point operations in River's
order -- the running mean is ``stats.Mean``'s ``mean += (1/n) * (x - mean)``,
the fading sums ``alpha * s + dev -/+ delta`` -- so the decisions are
identical by construction, not merely approximately.  Resets after a
detection happen inside the loop: no Python per value or per detection.
"""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np
from numba import njit

from detectors.base import Detector, DriftResult, shift_examples

_MODES = {"both": 0, "up": 1, "down": 2}


@njit(cache=True, nogil=True, error_model="numpy")
def _ph_kernel(x, fst, ist, min_instances, delta, threshold, alpha, mode, det_out, chg_out, up_out, st_out):  # pragma: no cover - compiled
    """Advance over ``x``.  ``fst`` = [n, mean, s_inc, s_dec, min_inc,
    max_dec, test_inc, test_dec] and ``ist`` = [n_seen, argmin_inc,
    argmax_dec, ready] are updated in place.  Detections (stream position,
    estimated change start, upward?) go to the output arrays; returns their
    count."""
    n = fst[0]
    mean = fst[1]
    s_inc = fst[2]
    s_dec = fst[3]
    min_inc = fst[4]
    max_dec = fst[5]
    t_inc = fst[6]
    t_dec = fst[7]
    n_seen = ist[0]
    am = ist[1]
    aM = ist[2]
    ready = ist[3]
    nd = 0
    for i in range(x.shape[0]):
        v = x[i]
        n += 1.0
        mean += (1.0 / n) * (v - mean)
        dev = v - mean
        s_inc = alpha * s_inc + dev - delta
        s_dec = alpha * s_dec + dev + delta
        if s_inc < min_inc:
            min_inc = s_inc
            am = n_seen
        if s_dec > max_dec:
            max_dec = s_dec
            aM = n_seen
        n_seen += 1
        if n >= min_instances:
            ready = 1
            t_inc = s_inc - min_inc
            t_dec = max_dec - s_dec
            if mode == 1:
                hit = t_inc > threshold
            elif mode == 2:
                hit = t_dec > threshold
            else:
                hit = t_inc > threshold or t_dec > threshold
            if hit:
                up = t_inc > threshold and mode != 2
                det_out[nd] = n_seen - 1
                chg_out[nd] = am if up else aM
                up_out[nd] = up
                st_out[nd, 0] = t_inc
                st_out[nd, 1] = t_dec
                nd += 1
                # River forgets everything (on its next update)
                n = 0.0
                mean = 0.0
                s_inc = 0.0
                s_dec = 0.0
                min_inc = math.inf
                max_dec = -1.0
                am = n_seen
                aM = n_seen
                ready = 0
        else:
            ready = 0
    fst[0] = n
    fst[1] = mean
    fst[2] = s_inc
    fst[3] = s_dec
    fst[4] = min_inc
    fst[5] = max_dec
    fst[6] = t_inc
    fst[7] = t_dec
    ist[0] = n_seen
    ist[1] = am
    ist[2] = aM
    ist[3] = ready
    return nd


class PageHinkley(Detector):
    """Two-sided Page-Hinkley change detector (River semantics, batched).

    ``statistic`` is the larger of the upward and downward Page-Hinkley
    statistics (cumulative deviation above its running minimum, or below its
    running maximum) and ``threshold`` is lambda, on the same scale as the
    values.  After a detection the detector forgets everything, exactly like
    River's, and starts learning the new mean from the next value.

    Parameters
    ----------
    min_instances
        Values needed (since the last reset) before a change can be signalled.
    delta
        Magnitude of changes that are tolerated.
    threshold
        Lambda: the detection threshold on the cumulative statistic.
    alpha
        Forgetting factor of the cumulative sums.
    mode
        ``"up"``, ``"down"`` or ``"both"``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(12345)
    >>> stream = np.concatenate([rng.integers(0, 2, 1000), rng.integers(4, 8, 1000)])
    >>> ph = PageHinkley()
    >>> r = ph.update(stream)
    >>> r.detected, r.extra["detections"]
    (True, [1008])
    >>> PageHinkley().update(np.zeros(5)) is None   # still warming up
    True
    """

    name = "page_hinkley"

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: str = "both",
    ):
        if mode not in ("up", "down", "both"):
            raise ValueError("mode must be 'up', 'down' or 'both'")
        self.min_instances = int(min_instances)
        self.delta = float(delta)
        self.threshold = float(threshold)
        self.alpha = float(alpha)
        self.mode = mode
        self.n_seen = 0
        self._reset()

    def _reset(self) -> None:
        self._n = 0  # values since the last reset
        self._mean = 0.0  # River's stats.Mean: mean += (1/n) * (x - mean)
        self._s_inc = 0.0
        self._s_dec = 0.0
        # River starts the minimum at +inf but the maximum at -1 (a quirk we
        # keep: it changes decisions during the first values).
        self._min_inc = math.inf
        self._max_dec = -1.0
        self._argmin_inc = self.n_seen  # stream position of the running min
        self._argmax_dec = self.n_seen
        self._test = (0.0, 0.0, False)  # (test_inc, test_dec, ready) after the last value

    def update(self, values: np.ndarray) -> DriftResult | None:
        x = np.ascontiguousarray(values, dtype=np.float64).ravel()
        if x.size and not np.isfinite(x).all():
            raise ValueError("PageHinkley: values must be finite (drop NaN/inf before update)")
        if not x.size:
            return None
        batch_start = self.n_seen
        fst = np.array([float(self._n), self._mean, self._s_inc, self._s_dec, self._min_inc, self._max_dec,
                        self._test[0], self._test[1]])
        ist = np.array([self.n_seen, self._argmin_inc, self._argmax_dec, int(self._test[2])], dtype=np.int64)
        m = len(x)
        det = np.empty(m, dtype=np.int64)
        chg = np.empty(m, dtype=np.int64)
        ups = np.empty(m, dtype=np.bool_)
        sts = np.empty((m, 2))
        nd = _ph_kernel(x, fst, ist, float(self.min_instances), self.delta, self.threshold, self.alpha,
                        _MODES[self.mode], det, chg, ups, sts)
        self._n = int(fst[0])
        self._mean, self._s_inc, self._s_dec = float(fst[1]), float(fst[2]), float(fst[3])
        self._min_inc, self._max_dec = float(fst[4]), float(fst[5])
        self.n_seen, self._argmin_inc, self._argmax_dec = int(ist[0]), int(ist[1]), int(ist[2])
        self._test = (float(fst[6]), float(fst[7]), bool(ist[3]))
        if nd:
            detections = det[:nd].tolist()
            changes = chg[:nd].tolist()
            det_pos, change, up = detections[-1], changes[-1], bool(ups[nd - 1])
            inc, dec = float(sts[nd - 1, 0]), float(sts[nd - 1, 1])
            stat = {"up": inc, "down": dec}.get(self.mode, max(inc, dec))
            return DriftResult(
                statistic=stat,
                threshold=self.threshold,
                detected=True,
                n_seen=self.n_seen,
                change_index=int(change),
                examples=shift_examples(x, batch_start, change, det_pos, up),
                detail=(
                    f"Page-Hinkley: mean {'increase' if up else 'decrease'} "
                    f"detected at record {det_pos} (statistic {stat:.4g} > lambda "
                    f"{self.threshold:.4g}), estimated start at record {change}"
                ),
                extra={"detections": detections, "change_points": changes},
            )
        inc, dec, ready = self._test
        if not ready:
            return None
        stat = {"up": inc, "down": dec}.get(self.mode, max(inc, dec))
        return DriftResult(
            statistic=stat,
            threshold=self.threshold,
            detected=False,
            n_seen=self.n_seen,
            detail=f"Page-Hinkley: no change (statistic {stat:.4g} <= lambda {self.threshold:.4g})",
            extra={"detections": []},
        )

    # -- state -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "params": {
                "min_instances": self.min_instances,
                "delta": self.delta,
                "threshold": self.threshold,
                "alpha": self.alpha,
                "mode": self.mode,
            },
            "n_seen": self.n_seen,
            "n": self._n,
            "mean": self._mean,
            "s_inc": self._s_inc,
            "s_dec": self._s_dec,
            # JSON has no infinity: None stands for "no minimum yet"
            "min_inc": None if math.isinf(self._min_inc) else self._min_inc,
            "max_dec": self._max_dec,
            "argmin_inc": self._argmin_inc,
            "argmax_dec": self._argmax_dec,
            "test": list(self._test),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        d = cls(**state["params"])
        d.n_seen = int(state["n_seen"])
        d._n = int(state["n"])
        # older checkpoints stored the running sum instead of the mean
        d._mean = float(state["mean"]) if "mean" in state else (float(state["sum"]) / d._n if d._n else 0.0)
        d._s_inc = float(state["s_inc"])
        d._s_dec = float(state["s_dec"])
        d._min_inc = math.inf if state["min_inc"] is None else float(state["min_inc"])
        d._max_dec = float(state["max_dec"])
        d._argmin_inc = int(state["argmin_inc"])
        d._argmax_dec = int(state["argmax_dec"])
        t = state.get("test", [0.0, 0.0, False])
        d._test = (float(t[0]), float(t[1]), bool(t[2]))
        return d
