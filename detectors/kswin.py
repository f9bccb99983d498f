"""KSWIN: sliding-window Kolmogorov-Smirnov change detector, batched.

Same semantics and, with the same seed, the same decisions as
:class:`river.drift.KSWIN`: a window of the last ``window_size`` values; once
full, every new value draws ``stat_size`` values uniformly (Python
``random.Random(seed).sample``, the very same calls) from the older part and
compares them with the ``stat_size`` most recent values with a two-sample KS
test; a change is signalled when ``p <= alpha`` and ``D > 0.1``, after which
the window and the random generator start afresh.

Why it is much faster than River's (one ``scipy.stats.ks_2samp`` call per
value): all tests of a batch are evaluated together.  Both samples have
``stat_size`` values, so ``D * stat_size`` is an integer ``h`` (the largest
gap of the two empirical CDFs, found with one row-wise argsort and a
cumulative sum over the merged samples, evaluated only at the end of tie
runs, as ``searchsorted(side="right")`` does), and scipy's p-value in
``method="auto"`` (exact for equal sizes) depends only on ``(stat_size, h)``:
it is tabulated once.  The only per-value Python left is drawing the random
sample, to keep River's random stream (CPython's ``sample`` with its method
layers inlined, checked against ``random.sample`` at import): it is about
two thirds of the cost, the price of identical decisions.
"""

from __future__ import annotations

import random
import warnings
from functools import lru_cache
from typing import Any, Self

import numpy as np
from scipy import stats

from detectors.base import Detector, DriftResult

_TESTS_PER_SLICE = 2048


def _pool_samples(rng: random.Random, n: int, k: int, count: int) -> list[list[int]]:
    """``count`` successive ``rng.sample(range(n), k)`` results, consuming the
    generator exactly as CPython's ``sample`` does in its "pool" branch
    (``_randbelow`` = ``getrandbits(bit_length)`` with rejection), with the
    method-call layers inlined: ~1.6x faster than calling ``sample``."""
    grb = rng.getrandbits
    bits = [(n - i).bit_length() for i in range(k)]
    base = list(range(n))
    out = []
    for _ in range(count):
        pool = base[:]
        res = [0] * k
        for i in range(k):
            m = n - i
            b = bits[i]
            j = grb(b)
            while j >= m:
                j = grb(b)
            res[i] = pool[j]
            pool[j] = pool[m - 1]
        out.append(res)
    return out


def _uses_pool(n: int, k: int) -> bool:
    """Whether CPython's sample(range(n), k) takes the pool branch."""
    import math

    setsize = 21
    if k > 5:
        setsize += 4 ** math.ceil(math.log(k * 3, 4))
    return n <= setsize


def _check_pool_emulation() -> bool:
    a, b = random.Random(7), random.Random(7)
    ok = [a.sample(range(70), 30) for _ in range(50)] == _pool_samples(b, 70, 30, 50)
    return ok and a.random() == b.random()


_POOL_OK = _check_pool_emulation()  # falls back to rng.sample on other Pythons


@lru_cache(maxsize=32)
def _p_table(r: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """scipy's ks_2samp p-value and statistic for two samples of size ``r``
    whose empirical CDFs differ by at most ``h / r``, for h = 0..r."""
    base = np.arange(r, dtype=np.float64)
    ps, ds = [], []
    for h in range(r + 1):
        # scipy may fall back from exact to asymptotic (with a warning), as it
        # does inside River's per-value call: same (r, h), same p-value
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            res = stats.ks_2samp(base, base + h, method="auto")
        ps.append(float(res.pvalue))
        ds.append(float(res.statistic))
    return tuple(ps), tuple(ds)


class KSWIN(Detector):
    """Kolmogorov-Smirnov windowing (River semantics, batched).

    ``statistic`` is the KS distance D of the latest test and ``threshold``
    the smallest distance (minus half a step) that gives ``p <= alpha`` and
    ``D > 0.1`` for ``stat_size`` values; ``p_value`` is the test's p-value.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(12345)
    >>> stream = np.concatenate([rng.integers(0, 2, 1000), rng.integers(4, 8, 1000)])
    >>> kswin = KSWIN(alpha=0.0001, seed=42)
    >>> r = kswin.update(stream)
    >>> r.detected, r.extra["detections"]
    (True, [1016])
    """

    name = "kswin"

    def __init__(
        self,
        alpha: float = 0.005,
        window_size: int = 100,
        stat_size: int = 30,
        seed: int = 42,
        window: list[float] | None = None,
    ):
        if not 0 <= alpha <= 1:
            raise ValueError("alpha must be between 0 and 1")
        if window_size - stat_size < stat_size:
            # River's sample() of stat_size values from the older part needs this
            raise ValueError("window_size - stat_size must be at least stat_size")
        self.alpha = float(alpha)
        self.window_size = int(window_size)
        self.stat_size = int(stat_size)
        self.seed = int(seed)
        self.n_seen = 0
        self._last: tuple[int, float] | None = None  # (h, p) of the latest test
        self._reset()
        if window:
            self._window = [float(v) for v in window][-self.window_size :]
        ps, ds = _p_table(self.stat_size)
        ok = [h for h in range(self.stat_size + 1) if ps[h] <= self.alpha and ds[h] > 0.1]
        self._h_min = ok[0] if ok else self.stat_size + 1

    def _reset(self) -> None:
        self._window: list[float] = []
        self._rng = random.Random(self.seed)

    def _scan(self, x: np.ndarray) -> int:
        """Consume ``x`` until the first detection (index) or the end (-1)."""
        W, r = self.window_size, self.stat_size
        buf = np.concatenate((np.asarray(self._window, dtype=np.float64), x))
        L0 = len(self._window)
        first = max(W - 1, L0)  # buf index of the first value whose window is full
        g = np.arange(first, len(buf))
        det = -1
        if len(g):
            pop = range(W - r)
            if _POOL_OK and _uses_pool(W - r, r):
                picks = np.array(_pool_samples(self._rng, W - r, r, len(g)), dtype=np.int64)
            else:
                sample = self._rng.sample
                picks = np.array([sample(pop, r) for _ in range(len(g))], dtype=np.int64)
            start = (g - W + 1)[:, None]
            a = buf[start + picks]
            b = buf[(g - r + 1)[:, None] + np.arange(r)[None, :]]
            both = np.concatenate((a, b), axis=1)
            order = np.argsort(both, axis=1, kind="stable")
            srt = np.take_along_axis(both, order, axis=1)
            step = np.where(order < r, 1, -1)
            cdf_gap = np.cumsum(step, axis=1)
            # evaluate the CDFs only after the last of equal values
            end_of_run = np.ones_like(srt, dtype=bool)
            end_of_run[:, :-1] = srt[:, 1:] != srt[:, :-1]
            h = np.where(end_of_run, np.abs(cdf_gap), 0).max(axis=1)
            hit = h >= self._h_min
            if hit.any():
                det = int(np.argmax(hit))
                hh = int(h[det])
            else:
                hh = int(h[-1])
            ps, _ = _p_table(r)
            self._last = (hh, ps[hh])
            if det >= 0:
                gd = int(g[det])
                self._det = {"h": hh, "recent_start": gd - r + 1 - L0}  # index in x
                self.n_seen += gd - L0 + 1
                return gd - L0
        tail = buf[-(W - 1) :] if W > 1 else buf[:0]
        self._window = tail.tolist()
        self.n_seen += len(x)
        return -1

    def update(self, values: np.ndarray) -> DriftResult | None:
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size and not np.isfinite(x).all():
            raise ValueError("KSWIN: values must be finite (drop NaN/inf before update)")
        batch_start = self.n_seen
        detections: list[int] = []
        changes: list[int] = []
        info = None
        i = 0
        while i < len(x):
            seg = x[i : i + _TESTS_PER_SLICE]
            seg_start = self.n_seen
            det = self._scan(seg)
            if det >= 0:
                info = dict(self._det)
                detections.append(self.n_seen - 1)
                changes.append(seg_start + info["recent_start"])
                # River keeps the recent values, then resets everything
                # (window and random generator) on the next update
                self._reset()
                i += det + 1
            else:
                i += len(seg)
        r = self.stat_size
        thr = (self._h_min - 0.5) / r
        if self._last is None:
            return None
        h, p = self._last
        if info is not None:
            h = info["h"]
            p = _p_table(r)[0][h]
            pos, change = detections[-1], changes[-1]
            lo = max(change, batch_start) - batch_start
            return DriftResult(
                statistic=h / r,
                threshold=thr,
                detected=True,
                n_seen=self.n_seen,
                p_value=p,
                change_index=change,
                examples=tuple(range(lo, pos - batch_start + 1))[:5],
                detail=(
                    f"KSWIN: distribution change at record {pos}: the last {r} values differ from "
                    f"the window before (KS D={h / r:.3f}, p={p:.2g} <= alpha={self.alpha:g})"
                ),
                extra={"detections": detections, "change_points": changes},
            )
        return DriftResult(
            statistic=h / r,
            threshold=thr,
            detected=False,
            n_seen=self.n_seen,
            p_value=p,
            detail=f"KSWIN: no change (KS D={h / r:.3f}, p={p:.2g})",
            extra={"detections": []},
        )

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self._rng.getstate()
        return {
            "params": {
                "alpha": self.alpha,
                "window_size": self.window_size,
                "stat_size": self.stat_size,
                "seed": self.seed,
            },
            "n_seen": self.n_seen,
            "window": list(self._window),
            "rng": [version, list(internal), gauss],
            "last": None if self._last is None else list(self._last),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        d = cls(**state["params"])
        d.n_seen = int(state["n_seen"])
        d._window = [float(v) for v in state["window"]]
        version, internal, gauss = state["rng"]
        d._rng.setstate((version, tuple(internal), gauss))
        d._last = None if state["last"] is None else (int(state["last"][0]), float(state["last"][1]))
        return d
