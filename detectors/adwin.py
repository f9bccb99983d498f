"""ADWIN (adaptive windowing) change detector, batched, with River's decisions.

River's ADWIN (Bifet & Gavalda 2007, the ADWIN2 exponential histogram) keeps
every value since its last reset, compressed into buckets: level ``i`` holds
at most ``max_buckets`` summaries of ``2**i`` consecutive values; when a level
overflows its two oldest summaries merge into one of the next level.  Every
``clock`` values it tries every bucket boundary as a cut ``W0 | W1`` and
signals a change when ``|mean(W0) - mean(W1)|`` exceeds a Hoeffding/Bernstein
bound.  After a detection River's wrapper throws the whole window away.

River 0.26 runs this in Rust.  Here a whole batch is one call into a compiled
loop (numba, ``cache=True``) that does River's bucket updates and running
total/variance with the same floating-point operations in the same order
(logarithms through libm like Rust's ``ln``), so the decisions are identical.

What makes it faster than the Rust loop is the check: River evaluates
``|u0/n0 - u1/n1| > sqrt(2 m v d') + 2/3 d' m`` at every cut (four divisions
and a square root each, ~5 log2(width) cuts every ``clock`` values).  Here a
check first runs a *screen* with products only,

    (|u0 n1 - u1 n0| + E) a b - c1 (a + b) n0 n1 <= 0   or
    (...)**2 <= c2 (a + b) a b (n0 n1)**2,      a, b = n0, n1 - mwl + 1,

which implies River's inequality does not hold at that cut, with ``E`` a
bound on the rounding of River's divisions and a 1e-9 relative margin on
the constants (rounding is ~1e-15): a screen that passes proves no cut
fires.  Only when it cannot (near or after a change, or for the last check
of a batch, whose ratio is reported) are River's exact tests evaluated, in
River's order.  ``_update(x, exact=True)`` skips the screen; the tests check
both paths agree, and both against River.
"""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np
from numba import njit

from detectors.base import Detector, DriftResult

_MAX_LEVELS = 64
# Relative slack of the screening test (far above its rounding error, ~1e-15).
_SLACK = 1e-9
_ULP = 2.0**-52


@njit(cache=True, nogil=True, error_model="numpy")
def _cut_ratio(u0, u1, n0, n1, dp, v, mwl):  # pragma: no cover - compiled
    """River's cut test, its float operations in its order: (|dm|, epsilon)."""
    delta_mean = (u0 / n0) - (u1 / n1)
    m_recip = 1.0 / (n0 - mwl + 1.0) + 1.0 / (n1 - mwl + 1.0)
    eps = math.sqrt(2.0 * m_recip * v * dp) + 2.0 / 3.0 * dp * m_recip
    return abs(delta_mean), eps


@njit(cache=True, nogil=True, error_model="numpy")
def _adwin_kernel(x, fst, ist, tot, cnt, delta, clock, M, mwl, grace, exact, det_out, info_out):  # pragma: no cover
    """River's ADWIN (Rust ``AdaptiveWindowing`` + the Python wrapper's reset
    after a detection) over ``x``.

    ``fst`` = [width, total, variance, last_ratio, screen d' (cached), the
    width it was computed at]; ``ist`` = [n_seen, n_levels, window start,
    screened checks, exact checks]; ``tot``/``cnt`` = per level the
    bucket totals (oldest first) and counts.  Every
    check first runs a screening test (multiplications only, with a safety
    margin far above rounding error) that proves no cut can fire; only if it
    cannot prove that are River's exact cut tests evaluated, in River's
    order.  ``exact`` skips the screen (for tests).  Returns the number of
    detections; per detection ``det_out`` = stream position and
    ``info_out`` = [ratio, change position, upward, width]."""
    w = fst[0]
    total = fst[1]
    var = fst[2]
    dp_screen = fst[4]
    dp_w = fst[5]
    n_seen = ist[0]
    nlev = ist[1]
    start = ist[2]
    m = x.shape[0]
    nd = 0
    cap = M + 1
    # values until the next check: River checks when tick % clock == 0, and
    # tick == width between resets
    countdown = clock - int(w) % clock
    ncut_max = _MAX_LEVELS * cap
    cn0 = np.empty(ncut_max)
    cu0 = np.empty(ncut_max)
    cu1 = np.empty(ncut_max)
    seg_max = min(clock, 1024)
    seg_tot = np.empty(seg_max + 1)
    seg_inc = np.empty(seg_max)
    qin = np.empty(seg_max + cap)
    qq = np.empty(seg_max + 2 * cap)
    i = 0
    while i < m:
        # -- insert_element for the values up to the next check, in three
        # passes (the divisions of the middle one vectorise); same
        # operations as River's, in its order, for every value
        e = min(m, i + min(countdown, seg_max))
        L = e - i
        seg_tot[0] = total
        for j in range(L):
            seg_tot[j + 1] = seg_tot[j] + x[i + j]
        for j in range(L):
            wj = w + (j + 1.0)
            dv = x[i + j] - seg_tot[j] / (wj - 1.0)
            seg_inc[j] = (wj - 1.0) * dv * dv / wj if wj > 1.0 else 0.0
        for j in range(L):
            var += seg_inc[j]
        total = seg_tot[L]
        w += L
        countdown -= L
        # -- compress_buckets.  A level's evolution depends only on the
        # sequence of summaries pushed into it: with its c buckets followed by
        # the n new ones as Q, River's merges (two oldest, whenever it holds
        # M + 1) produce Q[0]+Q[1], Q[2]+Q[3], ... for the next level (k of
        # them) and leave Q[2k:].  Checks come only at segment ends, so a
        # whole segment is pushed level by level, same sums, same order.
        nin = L
        for j in range(L):
            qin[j] = x[i + j]
        lev = 0
        while nin > 0:
            if lev >= nlev:
                nlev = lev + 1
                cnt[lev] = 0
            c = cnt[lev]
            tl = c + nin
            if tl <= M:
                for j in range(nin):
                    tot[lev, c + j] = qin[j]
                cnt[lev] = tl
                break
            k = 1 + (tl - cap) // 2
            for j in range(c):
                qq[j] = tot[lev, j]
            for j in range(nin):
                qq[c + j] = qin[j]
            for j in range(k):
                qin[j] = qq[2 * j] + qq[2 * j + 1]
            rem = tl - 2 * k
            for j in range(rem):
                tot[lev, j] = qq[2 * k + j]
            cnt[lev] = rem
            nin = k
            lev += 1
        n_seen += L
        i = e
        if countdown != 0:
            continue
        countdown = clock
        if not (w > grace):
            continue
        # prefix sums over the cut points, oldest bucket first, exactly as River
        nc = 0
        n0 = 0.0
        n1 = w
        u0 = 0.0
        u1 = total
        for lev in range(nlev - 1, -1, -1):
            size = float(1 << lev)
            cl = cnt[lev]
            for k in range(cl):
                n0 += size
                n1 -= size
                t = tot[lev, k]
                u0 += t
                u1 -= t
                if lev == 0 and k == cl - 1:
                    break
                cn0[nc] = n0
                cu0[nc] = u0
                cu1[nc] = u1
                nc += 1
        v = var / w
        last_check = i + clock > m
        # d' only grows with the width: the screen may use a value computed
        # at a smaller width (a lower bound), refreshed when the width doubles
        if dp_w <= 0.0 or w >= 2.0 * dp_w or w < dp_w:
            dp_screen = math.log(2.0 * math.log(w) / delta)
            dp_w = w
        safe = not exact and dp_screen > 0.0 and v >= 0.0
        if safe:
            # |dm| <= eps for every valid cut, proved with products only:
            # dm = (u0 n1 - u1 n0) / (n0 n1) up to E (rounding of River's
            # divisions), m_recip = (a + b) / (a b), a = n0 - mwl + 1, b = n1 - mwl + 1.
            # Branch-free so that it vectorises.
            c2 = 2.0 * v * dp_screen * (1.0 - _SLACK)
            c1 = 2.0 / 3.0 * dp_screen * (1.0 - _SLACK)
            bad = 0
            for c in range(nc):
                a0 = cn0[c]
                a1 = w - a0
                b0 = cu0[c]
                b1 = cu1[c]
                num = abs(b0 * a1 - b1 * a0) + 8.0 * _ULP * (abs(b0) * a1 + abs(b1) * a0)
                ra = a0 - mwl + 1.0
                rb = a1 - mwl + 1.0
                q = a0 * a1
                lhs = num * (ra * rb) - c1 * (ra + rb) * q
                fail = (lhs > 0.0) & (lhs * lhs > c2 * (ra + rb) * (ra * rb) * (q * q))
                valid = (a0 >= mwl) & (a1 >= mwl)
                bad += fail & valid
            safe = bad == 0
            ist[3] += 1
        if safe and not last_check:
            continue
        if not safe:
            ist[4] += 1
        dp = math.log(2.0 * math.log(w) / delta)
        hit = False
        best = -1.0  # largest ratio among the cuts that fire
        best_c = -1
        top = 0.0  # largest ratio among all valid cuts
        for c in range(nc):
            a0 = cn0[c]
            a1 = w - a0  # River's n1 (exact: integers below 2**53)
            if not (a1 >= mwl and a0 >= mwl):
                continue
            adm, eps = _cut_ratio(cu0[c], cu1[c], a0, a1, dp, v, mwl)
            ratio = adm / eps
            if ratio > top:
                top = ratio
            if adm > eps:
                hit = True
                if best_c < 0 or ratio > best:
                    best = ratio
                    best_c = c
        if not hit:
            if last_check:
                fst[3] = top
            continue
        c = best_c
        dm = cu0[c] / cn0[c] - cu1[c] / (w - cn0[c])
        det_out[nd] = n_seen - 1
        info_out[nd, 0] = best
        info_out[nd, 1] = start + cn0[c]
        info_out[nd, 2] = 1.0 if dm < 0 else 0.0
        info_out[nd, 3] = w
        nd += 1
        # the wrapper throws the whole window away
        w = 0.0
        total = 0.0
        var = 0.0
        nlev = 1
        cnt[0] = 0
        start = n_seen
        countdown = clock
        dp_w = 0.0
    fst[0] = w
    fst[1] = total
    fst[2] = var
    fst[4] = dp_screen
    fst[5] = dp_w
    ist[0] = n_seen
    ist[1] = nlev
    ist[2] = start
    return nd


class ADWIN(Detector):
    """ADWIN change detector with River's parameters and decisions.

    ``statistic`` is the largest ``|mean(W0) - mean(W1)| / epsilon_cut`` over
    the cut points of the latest check and ``threshold`` is 1.0 (so
    ``detected`` is ``statistic > threshold``).  ``change_index`` is the stream
    position of the most significant cut when a change is detected.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(12345)
    >>> stream = np.concatenate([rng.integers(0, 2, 1000), rng.integers(4, 8, 1000)])
    >>> adwin = ADWIN()
    >>> r = adwin.update(stream)
    >>> r.detected, r.extra["detections"], r.change_index
    (True, [1023], 1000)
    """

    name = "adwin"

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ):
        if max_buckets < 2:
            raise ValueError("max_buckets must be at least 2")
        self.delta = float(delta)
        self.clock = int(clock)
        self.max_buckets = int(max_buckets)
        self.min_window_length = int(min_window_length)
        self.grace_period = int(grace_period)
        self._init_state(0, None)

    def _init_state(self, n_seen: int, last_ratio: float | None) -> None:
        """A fresh window; the kernel keeps its state in these arrays."""
        self._tot = np.zeros((_MAX_LEVELS, self.max_buckets + 1))  # bucket totals per level, oldest first
        self._cnt = np.zeros(_MAX_LEVELS, dtype=np.int64)
        # width, total, variance, last ratio, screen d' and the width it was computed at
        self._fst = np.array([0.0, 0.0, 0.0, np.nan if last_ratio is None else last_ratio, 0.0, 0.0])
        # n_seen, levels, window start, screened checks, exact checks (last batch)
        self._ist = np.array([n_seen, 1, n_seen, 0, 0], dtype=np.int64)

    @property
    def n_seen(self) -> int:
        return int(self._ist[0])

    @property
    def _w(self) -> int:
        return int(self._fst[0])

    @property
    def _last_ratio(self) -> float | None:
        v = float(self._fst[3])
        return None if math.isnan(v) else v

    @property
    def _levels(self) -> list[list[float]]:
        if self._w == 0:
            return []
        return [self._tot[i, : self._cnt[i]].tolist() for i in range(int(self._ist[1]))]

    def update(self, values: np.ndarray) -> DriftResult | None:
        x = np.ascontiguousarray(values, dtype=np.float64).ravel()
        if x.size and not np.isfinite(x).all():
            raise ValueError("ADWIN: values must be finite (drop NaN/inf before update)")
        return self._update(x, exact=False)

    def _update(self, x: np.ndarray, exact: bool) -> DriftResult | None:
        batch_start = self.n_seen
        m = len(x)
        ndet = m // max(self.clock, 1) + 1
        det = np.empty(ndet, dtype=np.int64)
        info = np.empty((ndet, 4))
        self._ist[3:] = 0
        nd = _adwin_kernel(x, self._fst, self._ist, self._tot, self._cnt, self.delta, self.clock, self.max_buckets,
                           float(self.min_window_length), float(self.grace_period), exact, det, info)
        if nd:
            detections = det[:nd].tolist()
            changes = [int(v) for v in info[:nd, 1]]
            ratio, change, up, width = float(info[nd - 1, 0]), changes[-1], bool(info[nd - 1, 2]), int(info[nd - 1, 3])
            pos = detections[-1]
            lo = max(change, batch_start) - batch_start
            seg = x[lo : pos - batch_start + 1]
            order = np.argsort(-seg if up else seg, kind="stable")[:5] + lo
            return DriftResult(
                statistic=ratio,
                threshold=1.0,
                detected=True,
                n_seen=self.n_seen,
                change_index=change,
                examples=tuple(sorted(int(t) for t in order)),
                detail=(
                    f"ADWIN: mean {'increase' if up else 'decrease'} detected at record {pos} "
                    f"(|mean difference| = {ratio:.3g} x epsilon over a window of "
                    f"{width}), cut at record {change}"
                ),
                extra={"detections": detections, "change_points": changes},
            )
        if self._last_ratio is None:
            return None
        return DriftResult(
            statistic=self._last_ratio,
            threshold=1.0,
            detected=False,
            n_seen=self.n_seen,
            detail=f"ADWIN: no change over a window of {self._w} (largest |mean difference| = "
            f"{self._last_ratio:.3g} x epsilon)",
            extra={"detections": [], "width": self._w},
        )

    @property
    def width(self) -> int:
        """Values in the current window (since the last reset)."""
        return self._w

    @property
    def estimation(self) -> float:
        """Mean of the current window."""
        return float(self._fst[1]) / self._w if self._w else 0.0

    def state_dict(self) -> dict[str, Any]:
        return {
            "params": {
                "delta": self.delta,
                "clock": self.clock,
                "max_buckets": self.max_buckets,
                "min_window_length": self.min_window_length,
                "grace_period": self.grace_period,
            },
            "n_seen": self.n_seen,
            "w": self._w,
            "total": float(self._fst[1]),
            "variance": float(self._fst[2]),
            "levels": self._levels,
            "start": int(self._ist[2]),
            "last_ratio": self._last_ratio,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        d = cls(**state["params"])
        d._init_state(int(state["n_seen"]), state["last_ratio"])
        levels = [[float(v) for v in lv] for lv in state["levels"]]
        for i, lv in enumerate(levels):
            d._tot[i, : len(lv)] = lv
            d._cnt[i] = len(lv)
        d._fst[:3] = [float(state["w"]), float(state["total"]), float(state["variance"])]
        d._ist[1] = max(1, len(levels))
        d._ist[2] = int(state["start"])
        return d
