"""Page-Hinkley test for a change in the mean of a univariate stream.

Same algorithm and decisions as :class:`river.drift.PageHinkley` (fading
cumulative deviation from the running mean, two-sided, reset after a
detection), but a whole batch is processed with numpy: the running mean is a
cumulative sum, the fading sums are a first-order linear recurrence
(``scipy.signal.lfilter``) and the running extrema are ``minimum.accumulate``.
The only sequential part is the reset after a detection: the scan restarts
from the record after it.
"""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np
from scipy.signal import lfilter

from detectors.base import Detector, DriftResult

# Work on slices of records: everything past a detection is recomputed from a
# fresh state, so slices adapt to about twice the typical run between
# detections (bounded both ways). Only speed depends on this, never results.
_MIN_CHUNK, _MAX_CHUNK = 256, 65536


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
        self._chunk = 8192
        self._reset()

    def _reset(self) -> None:
        self._n = 0  # values since the last reset
        self._sum = 0.0  # running sum; mean = sum / n (chunking-invariant)
        self._s_inc = 0.0
        self._s_dec = 0.0
        # River starts the minimum at +inf but the maximum at -1 (a quirk we
        # keep: it changes decisions during the first values).
        self._min_inc = math.inf
        self._max_dec = -1.0
        self._argmin_inc = self.n_seen  # stream position of the running min
        self._argmax_dec = self.n_seen

    # -- core --------------------------------------------------------------
    def _scan(self, x: np.ndarray) -> tuple[int, dict[str, float]]:
        """Advance over ``x`` until the first detection. Returns the index of
        the detecting value in ``x`` (or -1) and the statistics there."""
        m = len(x)
        n = self._n + np.arange(1, m + 1, dtype=np.float64)
        # sequential sums via cumsum: identical floats however the stream is chunked
        csum = np.cumsum(np.concatenate(([self._sum], x)))[1:]
        dev = x - csum / n
        a = self.alpha
        # y_t = alpha * y_{t-1} + u_t ; lfilter carries alpha*y_{t-1} in zi.
        s_inc = lfilter([1.0], [1.0, -a], dev - self.delta, zi=[a * self._s_inc])[0]
        s_dec = lfilter([1.0], [1.0, -a], dev + self.delta, zi=[a * self._s_dec])[0]
        min_inc = np.minimum.accumulate(np.concatenate(([self._min_inc], s_inc)))
        max_dec = np.maximum.accumulate(np.concatenate(([self._max_dec], s_dec)))
        test_inc = s_inc - min_inc[1:]
        test_dec = max_dec[1:] - s_dec
        ok = n >= self.min_instances
        if self.mode == "up":
            hit = ok & (test_inc > self.threshold)
        elif self.mode == "down":
            hit = ok & (test_dec > self.threshold)
        else:
            hit = ok & ((test_inc > self.threshold) | (test_dec > self.threshold))
        det = int(np.argmax(hit)) if hit.any() else -1
        end = det + 1 if det >= 0 else m
        # stream positions where the running extremum was last renewed
        base = self.n_seen
        pos = base + np.arange(end)
        new_min = np.where(s_inc[:end] < min_inc[:end], pos, -1)
        new_max = np.where(s_dec[:end] > max_dec[:end], pos, -1)
        self._argmin_inc = int(max(self._argmin_inc, new_min.max(initial=-1)))
        self._argmax_dec = int(max(self._argmax_dec, new_max.max(initial=-1)))
        self._n += end
        self._sum = float(csum[end - 1])
        self._s_inc = float(s_inc[end - 1])
        self._s_dec = float(s_dec[end - 1])
        self._min_inc = float(min_inc[end])
        self._max_dec = float(max_dec[end])
        self.n_seen += end
        k = end - 1
        stats = {
            "inc": float(test_inc[k]),
            "dec": float(test_dec[k]),
            "ready": bool(ok[k]),
        }
        return det, stats

    def update(self, values: np.ndarray) -> DriftResult | None:
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size and not np.isfinite(x).all():
            raise ValueError("PageHinkley: values must be finite (drop NaN/inf before update)")
        detections: list[int] = []
        changes: list[int] = []
        last_stats = None
        det_stats: dict[str, Any] = {}
        batch_start = self.n_seen
        i = 0
        while i < len(x):
            seg = x[i : i + self._chunk]
            det, stats = self._scan(seg)
            last_stats = stats
            if det >= 0:
                self._chunk = int(min(_MAX_CHUNK, max(_MIN_CHUNK, (self._chunk + 2 * (det + 1)) // 2)))
                up = stats["inc"] > self.threshold and self.mode != "down"
                detections.append(self.n_seen - 1)
                changes.append(self._argmin_inc if up else self._argmax_dec)
                det_stats = dict(stats, up=up)
                self._reset()
                i += det + 1
            else:
                self._chunk = min(_MAX_CHUNK, 2 * self._chunk)
                i += len(seg)
        if last_stats is None:
            return None
        if detections:
            det_pos = detections[-1]
            change = changes[-1]
            inc, dec = det_stats["inc"], det_stats["dec"]
            stat = {"up": inc, "down": dec}.get(self.mode, max(inc, dec))
            lo = max(change, batch_start) - batch_start
            hi = det_pos - batch_start
            sign = 1.0 if det_stats["up"] else -1.0
            seg = x[lo : hi + 1]
            top = np.argsort(-sign * seg, kind="stable")[:5] + lo
            return DriftResult(
                statistic=stat,
                threshold=self.threshold,
                detected=True,
                n_seen=self.n_seen,
                change_index=int(change),
                examples=tuple(sorted(int(t) for t in top)),
                detail=(
                    f"Page-Hinkley: mean {'increase' if det_stats['up'] else 'decrease'} "
                    f"detected at record {det_pos} (statistic {stat:.4g} > lambda "
                    f"{self.threshold:.4g}), estimated start at record {change}"
                ),
                extra={"detections": detections, "change_points": changes},
            )
        if not last_stats["ready"]:
            return None
        inc, dec = last_stats["inc"], last_stats["dec"]
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
            "sum": self._sum,
            "s_inc": self._s_inc,
            "s_dec": self._s_dec,
            # JSON has no infinity: None stands for "no minimum yet"
            "min_inc": None if math.isinf(self._min_inc) else self._min_inc,
            "max_dec": self._max_dec,
            "argmin_inc": self._argmin_inc,
            "argmax_dec": self._argmax_dec,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        d = cls(**state["params"])
        d.n_seen = int(state["n_seen"])
        d._n = int(state["n"])
        d._sum = float(state["sum"])
        d._s_inc = float(state["s_inc"])
        d._s_dec = float(state["s_dec"])
        d._min_inc = math.inf if state["min_inc"] is None else float(state["min_inc"])
        d._max_dec = float(state["max_dec"])
        d._argmin_inc = int(state["argmin_inc"])
        d._argmax_dec = int(state["argmax_dec"])
        return d
