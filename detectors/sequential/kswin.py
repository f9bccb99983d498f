"""KSWIN: sliding-window Kolmogorov-Smirnov change detector, batched.

Same semantics and, with the same seed, the same decisions as
:class:`river.drift.KSWIN`: a window of the last ``window_size`` values; once
full, every new value draws ``stat_size`` values uniformly (Python
``random.Random(seed).sample``) from the older part and compares them with
the ``stat_size`` most recent values with a two-sample KS test; a change is
signalled when ``p <= alpha`` and ``D > 0.1``, after which the window and the
random generator start afresh.

Why it is much faster than River's (one ``scipy.stats.ks_2samp`` call per
value): one compiled loop (numba, ``cache=True``) per batch does everything.

* The random sample: CPython's ``Random`` is MT19937 and ``sample`` draws
  with ``_randbelow`` = ``getrandbits(bit_length)`` with rejection, where
  ``getrandbits(k <= 32)`` is one 32-bit MT output shifted right by
  ``32 - k``.  The loop runs that very generator on the state taken from
  ``random.Random.getstate()`` (and puts the advanced state back with
  ``setstate``), in both of ``sample``'s branches (pool and set), so the
  samples -- and the generator afterwards -- are bit-identical to River's
  (checked against ``random.sample`` in the tests).
* The test: both samples have ``stat_size`` values, so ``D * stat_size`` is an
  integer ``h`` (the largest gap of the two empirical CDFs, taken after the
  last of equal values, as ``searchsorted(side="right")`` does), and scipy's
  p-value in ``method="auto"`` (exact for equal sizes) depends only on
  ``(stat_size, h)``: it is tabulated once.
"""

from __future__ import annotations

import math
import random
import warnings
from functools import lru_cache
from typing import Any, Self

import numpy as np
from numba import njit
from scipy import stats

from detectors.base import Detector, DriftResult


def _uses_pool(n: int, k: int) -> bool:
    """Whether CPython's ``sample(range(n), k)`` takes the pool branch (same
    expression as CPython's ``random.sample``)."""
    setsize = 21
    if k > 5:
        setsize += 4 ** math.ceil(math.log(k * 3, 4))
    return n <= setsize


@njit(cache=True, nogil=True, inline="always")
def _genrand_uint32(mt, pos):  # pragma: no cover - compiled
    """CPython's ``genrand_uint32`` (MT19937) on a state held in int64s."""
    if pos[0] >= 624:
        for kk in range(227):
            y = (mt[kk] & 0x80000000) | (mt[kk + 1] & 0x7FFFFFFF)
            mt[kk] = mt[kk + 397] ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)
        for kk in range(227, 623):
            y = (mt[kk] & 0x80000000) | (mt[kk + 1] & 0x7FFFFFFF)
            mt[kk] = mt[kk - 227] ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)
        y = (mt[623] & 0x80000000) | (mt[0] & 0x7FFFFFFF)
        mt[623] = mt[396] ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)
        pos[0] = 0
    y = mt[pos[0]]
    pos[0] += 1
    y ^= y >> 11
    y ^= (y << 7) & 0x9D2C5680
    y ^= (y << 15) & 0xEFC60000
    y ^= y >> 18
    return y


@njit(cache=True, nogil=True)
def _bit_length(v):  # pragma: no cover - compiled
    b = 0
    while v > 0:
        b += 1
        v >>= 1
    return b


@njit(cache=True, nogil=True)
def _sample(mt, pos, n, k, use_pool, out, pool, selected):  # pragma: no cover - compiled
    """``random.Random.sample(range(n), k)`` into ``out`` (CPython 3.11+)."""
    if use_pool:
        for i in range(n):
            pool[i] = i
        for i in range(k):
            m = n - i
            sh = 32 - _bit_length(m)
            j = _genrand_uint32(mt, pos) >> sh
            while j >= m:
                j = _genrand_uint32(mt, pos) >> sh
            out[i] = pool[j]
            pool[j] = pool[m - 1]
    else:
        for i in range(n):
            selected[i] = False
        sh = 32 - _bit_length(n)
        for i in range(k):
            j = _genrand_uint32(mt, pos) >> sh
            while j >= n:
                j = _genrand_uint32(mt, pos) >> sh
            while selected[j]:
                j = _genrand_uint32(mt, pos) >> sh
                while j >= n:
                    j = _genrand_uint32(mt, pos) >> sh
            selected[j] = True
            out[i] = j


@njit(cache=True, nogil=True)
def _kswin_kernel(buf, L0, W, r, h_min, use_pool, mt, pos, mt0, pos0, det_out, chg_out, h_out, last):  # pragma: no cover
    """Run KSWIN over ``buf`` (the ``L0`` retained window values, then the
    batch).  Returns ``(n_detections, buffer index where the current window
    starts)``; ``mt``/``pos`` (generator state) and ``last`` (h of the latest
    test, -1 if none) are updated in place; after a detection the generator
    restarts from ``mt0``/``pos0`` (River re-seeds)."""
    n = W - r
    picks = np.empty(r, dtype=np.int64)
    pool = np.empty(n, dtype=np.int64)
    selected = np.empty(n, dtype=np.bool_)
    a = np.empty(r)
    b = np.empty(r)
    wstart = 0
    nd = 0
    for g in range(L0, buf.shape[0]):
        if g - wstart + 1 < W:
            continue
        s0 = g - W + 1
        _sample(mt, pos, n, r, use_pool, picks, pool, selected)
        for i in range(r):
            a[i] = buf[s0 + picks[i]]
            b[i] = buf[g - r + 1 + i]
        a.sort()
        b.sort()
        ia = 0
        ib = 0
        h = 0
        while ia < r or ib < r:
            if ib >= r or (ia < r and a[ia] <= b[ib]):
                v = a[ia]
            else:
                v = b[ib]
            while ia < r and a[ia] == v:
                ia += 1
            while ib < r and b[ib] == v:
                ib += 1
            d = ia - ib if ia >= ib else ib - ia
            if d > h:
                h = d
        last[0] = h
        if h >= h_min:
            det_out[nd] = g
            chg_out[nd] = g - r + 1
            h_out[nd] = h
            nd += 1
            # River empties the window and re-seeds its generator
            wstart = g + 1
            for i in range(624):
                mt[i] = mt0[i]
            pos[0] = pos0
    return nd, wstart


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

    def update(self, values: np.ndarray) -> DriftResult | None:
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size and not np.isfinite(x).all():
            raise ValueError("KSWIN: values must be finite (drop NaN/inf before update)")
        if not x.size:
            return None if self._last is None else self._result(None, [], [], 0)
        batch_start = self.n_seen
        W, r = self.window_size, self.stat_size
        L0 = len(self._window)
        buf = np.concatenate((np.asarray(self._window, dtype=np.float64), x))
        version, internal, gauss = self._rng.getstate()
        mt = np.array(internal[:624], dtype=np.int64)
        pos = np.array([internal[624]], dtype=np.int64)
        v0, internal0, _ = random.Random(self.seed).getstate()
        mt0 = np.array(internal0[:624], dtype=np.int64)
        m = len(x)
        det = np.empty(m, dtype=np.int64)
        chg = np.empty(m, dtype=np.int64)
        hs = np.empty(m, dtype=np.int64)
        last = np.array([-1 if self._last is None else self._last[0]], dtype=np.int64)
        nd, wstart = _kswin_kernel(buf, L0, W, r, self._h_min, _uses_pool(W - r, r), mt, pos, mt0,
                                   int(internal0[624]), det, chg, hs, last)
        self._rng.setstate((version, tuple(mt.tolist()) + (int(pos[0]),), gauss))
        tail = buf[max(wstart, len(buf) - (W - 1)) :] if W > 1 else buf[:0]
        self._window = tail.tolist()
        self.n_seen += m
        if last[0] >= 0:
            self._last = (int(last[0]), _p_table(r)[0][int(last[0])])
        shift = batch_start - L0  # buffer index -> stream position
        detections = (det[:nd] + shift).tolist()
        changes = (chg[:nd] + shift).tolist()
        return self._result(int(hs[nd - 1]) if nd else None, detections, changes, batch_start)

    def _result(self, h_det, detections, changes, batch_start) -> DriftResult | None:
        r = self.stat_size
        thr = (self._h_min - 0.5) / r
        if self._last is None:
            return None
        h, p = self._last
        if h_det is not None:
            h = h_det
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
