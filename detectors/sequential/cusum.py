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
drift of ``k - 3/sqrt(warmup)`` (three standard errors worse than the ideal),
so an estimation error does not shorten the run length below the target
(except for the 0.3% of warm-ups off by more; raise ``warmup`` to tighten).

Next to the CUSUM charts runs a windowed GLR chart (see :class:`CUSUM`): the
CUSUM charts are fastest on abrupt shifts, variance increases and bursts, the
GLR chart -- the last L values against everything since the reset -- on small
and slow changes.  Its threshold comes from a hazard formula measured once on
stationary Gaussian streams (:func:`glr_hazard`).

The recurrence ``S_t = max(0, S_{t-1} + z_t - k)`` is a Lindley recursion:
with ``C_t = S_0 + sum(z - k)`` it equals ``C_t - min(0, min_{s<=t} C_s)``,
i.e. a cumulative sum minus its running minimum: two numpy passes per batch.
"""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np

from detectors.base import Detector, DriftResult, shift_examples

_CHUNK = 8192
# Warm-up mean error allowed for, in standard errors. At the run lengths the
# monitor asks for (1e8+ records) the ARL is exponential in the drift margin,
# so one standard error is not enough: a 2-SE warm-up error shortened the run
# length ~300x in the benchmark; 3 SE covers 99.7% of warm-ups.
_SE_MARGIN = 3.0


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


#: window lengths of the GLR chart (multiples of its stride, ~sqrt(2) apart)
GLR_WINDOWS = (128, 176, 256, 368, 512, 720, 1024, 1456, 2048, 2896, 4096)
GLR_STRIDE = 16
#: share of the false-alarm budget (rate) given to the GLR chart: it carries
#: the small and slow changes, where a lower threshold buys the most; large
#: abrupt changes cross even a conservative CUSUM threshold within records
GLR_SHARE = 0.9
#: Per-record false-alarm hazard of the GLR chart (default windows and
#: stride) at threshold c: ``(A0 + A1 c) sqrt(c) exp(-c)``, the form of the
#: Siegmund-Venkatraman approximation for a windowed GLR scan (Gaussian tail
#: ``exp(-c)`` times a number of effectively independent tests growing like
#: ``sqrt(c)``).  The two constants were measured once on stationary N(0,1)
#: streams of 2M-30M records at c = 4, 5, 6, 7 (A = 7.1e-3 ... 7.75e-3,
#: fitted with its slight upward trend in c) -- a property of the statistic,
#: not of any monitored stream.  The hazard counts monitored records (not the
#: warm-up after a reset).  tests/detectors/test_sequential.py re-checks it.
GLR_A0, GLR_A1 = 6.2e-3, 2.2e-4


def glr_hazard(c: float) -> float:
    """Per-record false-alarm rate of the default GLR chart at threshold ``c``."""
    return (GLR_A0 + GLR_A1 * c) * math.sqrt(c) * math.exp(-c)


def glr_threshold_for(arl0: float, windows=GLR_WINDOWS, stride: int = GLR_STRIDE) -> float:
    """GLR threshold ``c`` giving ``arl0`` expected records between false
    alarms of the GLR chart alone (bisection on the hazard formula).  For
    other windows or strides than the defaults the effective number of tests
    is scaled by (windows / default windows) x (default stride / stride): an
    approximation, measured only for the defaults."""
    scale = (len(windows) / len(GLR_WINDOWS)) * (GLR_STRIDE / stride)
    if arl0 <= 1:
        raise ValueError("arl0 must exceed 1")
    lo, hi = 0.5, 200.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if scale * glr_hazard(mid) > 1.0 / arl0:
            lo = mid
        else:
            hi = mid
    return hi


class CUSUM(Detector):
    """Two-sided tabular CUSUM on standardised values, one or several charts,
    plus a windowed GLR chart for small and slow changes.

    A single chart with reference value ``k`` is optimal for shifts of about
    ``2k`` standard deviations and slow for much smaller ones.  The default
    runs two CUSUM charts (k = 0.5, 1.0: tuned for 1 and 2 sd shifts, and the
    fastest on variance increases and bursts) and a GLR chart: every
    ``glr_stride`` values, for each window length in ``glr_windows``
    (128 ... 4096), the Gaussian log-likelihood ratio of "the last L values
    have another mean than all values since the reset before them",
    ``(mean_L - mean_0)**2 / (2 var_0 (1/L + 1/n0))``.  Comparing with the
    whole history (not just the warm-up) keeps the baseline precise, which is
    what slow drifts and 0.2-0.3 sd shifts need.  The detector signals when
    any chart crosses its own threshold.  The false-alarm budget (a rate) is
    split: ``GLR_SHARE`` = 90% to the GLR chart (threshold from its measured
    hazard, see :func:`glr_hazard`), 10% to the CUSUM charts, evenly (each
    gets ``10 x n_charts x ARL0``, Siegmund) -- conservative, since the
    charts are positively correlated.  ``glr_windows=()`` gives the plain CUSUM.

    Parameters
    ----------
    k
        Reference value(s) (allowance) in standard deviations.
    h
        Decision interval(s) in standard deviations, one per ``k`` or one for
        all.  ``None`` (default) derives them from ``expected_run_length``.
    expected_run_length
        ARL0: expected number of stationary records between false alarms
        (all charts together).
    warmup
        Values used (after every reset) to learn mean and standard deviation;
        ignored when ``mean`` and ``std`` are given.
    mean, std
        A known in-control baseline (skips the warm-up).
    clip
        If set, standardised values are clipped to ``[-clip, clip]``: a single
        wild outlier then cannot by itself signal a change.
    glr_windows, glr_stride
        Window lengths of the GLR chart (multiples of ``glr_stride``, the
        number of values between its evaluations); ``()`` turns it off.  Its
        windows start only after ``warmup`` values of baseline.
    glr_threshold
        Threshold of the GLR chart (log-likelihood ratio); ``None`` derives
        it from ``expected_run_length``.

    ``statistic`` is the cumulative sum of the chart closest to (or beyond)
    its threshold, relative to that threshold, and ``threshold`` is that
    chart's ``h``: both in standard deviations.  After a detection the
    detector resets (and warms up again unless a fixed baseline was given),
    like River's detectors.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> cusum = CUSUM(expected_run_length=1_000_000)
    >>> cusum.k, [round(h, 1) for h in cusum.hs], round(cusum.glr_threshold, 1)
    ((0.5, 1.0), [19.1, 8.8], 10.3)
    >>> cusum.update(rng.normal(0, 1, 50_000)).detected
    False
    >>> r = cusum.update(rng.normal(1, 1, 1_000))   # +1 sd from record 50,000
    >>> r.detected, r.change_index, r.extra["detections"]
    (True, 50001, [50049])
    """

    name = "cusum"

    def __init__(
        self,
        k: float | tuple[float, ...] | list[float] = (0.5, 1.0),
        h: float | tuple[float, ...] | list[float] | None = None,
        expected_run_length: float = 1_000_000,
        warmup: int = 1000,
        mean: float | None = None,
        std: float | None = None,
        clip: float | None = None,
        glr_windows: tuple[int, ...] | list[int] = GLR_WINDOWS,
        glr_threshold: float | None = None,
        glr_stride: int = GLR_STRIDE,
    ):
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        if warmup < 2 and mean is None:
            raise ValueError("warmup must be at least 2")
        ks = (float(k),) if np.isscalar(k) else tuple(float(v) for v in k)
        if not ks:
            raise ValueError("k must not be empty")
        self.k = ks[0] if np.isscalar(k) else ks
        self._ks = ks
        self.expected_run_length = float(expected_run_length)
        self.warmup = int(warmup)
        self.fixed_mean = None if mean is None else float(mean)
        self.fixed_std = None if std is None else float(std)
        self.clip = None if clip is None else float(clip)
        self.glr_windows = tuple(int(v) for v in glr_windows)
        self.glr_stride = int(glr_stride)
        if any(v <= 0 or v % self.glr_stride for v in self.glr_windows):
            raise ValueError("glr_windows must be positive multiples of glr_stride")
        # the false-alarm budget: GLR_SHARE of it to the GLR chart, the rest to the CUSUM charts
        share = 1.0 / (1.0 - GLR_SHARE) if self.glr_windows else 1.0
        if glr_threshold is None and self.glr_windows:
            glr_threshold = glr_threshold_for(self.expected_run_length / GLR_SHARE, self.glr_windows, self.glr_stride)
        self.glr_threshold = None if glr_threshold is None else float(glr_threshold)
        if h is None:
            margin = 0.0 if mean is not None else _SE_MARGIN / math.sqrt(self.warmup)
            hs = tuple(h_for_arl(self.expected_run_length * share * len(ks), kk, margin) for kk in ks)
        elif np.isscalar(h):
            hs = (float(h),) * len(ks)
        else:
            hs = tuple(float(v) for v in h)
            if len(hs) != len(ks):
                raise ValueError("give one h per k")
        self._h_arg = h if h is None or np.isscalar(h) else list(hs)
        self.hs = list(hs)
        self.n_seen = 0
        self._reset()

    @property
    def h(self) -> float:
        """Decision interval of the (first) chart."""
        return self.hs[0]

    @classmethod
    def from_arl(cls, arl0: float, **kwargs: Any) -> Self:
        """CUSUM whose thresholds give ``arl0`` expected records between false alarms."""
        return cls(expected_run_length=arl0, **kwargs)

    def _reset(self) -> None:
        self._wn = 0  # warm-up values seen
        self._wsum = 0.0
        self._wsq = 0.0  # sum of squared deviations (Chan et al. merge)
        if self.fixed_mean is not None:
            self._mu, self._sd = self.fixed_mean, max(self.fixed_std, 1e-300)
        else:
            self._mu = self._sd = None
        m = len(self._ks)
        self._s_up = [0.0] * m
        self._s_dn = [0.0] * m
        self._zero_up = [self.n_seen] * m  # stream position where S+ last left zero
        self._zero_dn = [self.n_seen] * m
        self._glr_start(0, 0.0, self.n_seen)

    def _glr_start(self, nbase: int, q0: float, pos0: int) -> None:
        """GLR chart state: the baseline W0 is every value since the reset;
        prefix sums (of z and z**2) are kept at every ``glr_stride``-th value
        after the warm-up, as far back as the longest window."""
        self._g_nbase = nbase  # values before count 0 (the warm-up), their sum of z is 0
        self._g_pos0 = pos0  # stream position of count 1
        self._g_c = 0  # values since then
        self._g_s = 0.0
        self._g_q = q0
        self._g_j0 = 0  # stride index of the first stored prefix
        self._gp_s = [0.0]
        self._gp_q = [q0]

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
            m = len(self._ks)
            self._zero_up = [self.n_seen] * m
            self._zero_dn = [self.n_seen] * m
            # the warm-up values standardised: sum 0, sum of squares wsq / sd**2
            self._glr_start(n, self._wsq / (self._sd * self._sd), self.n_seen)
        return take

    def _glr(self, z: np.ndarray):
        """GLR statistic at every check (every ``glr_stride``-th value) of
        the chunk: for each window ``L`` of the last values against all
        values since the reset before it (W0),

            G_L = (mean_L - mean_0)**2 / (2 var_0 (1/L + 1/n0)),

        the Gaussian log-likelihood ratio for a mean change in the window,
        maximised over the windows.  Returns (check indices in the chunk,
        G, window, upward?, prefix sums of z and z**2)."""
        st = self.glr_stride
        m = len(z)
        cs = self._g_s + np.cumsum(z)
        cq = self._g_q + np.cumsum(z * z)
        i0 = (-(self._g_c + 1)) % st
        idx = np.arange(i0, m, st)
        if not idx.size:
            return idx, None, None, None, cs, cq
        ps = np.concatenate((self._gp_s, cs[idx]))
        pq = np.concatenate((self._gp_q, cq[idx]))
        J = (self._g_c + idx + 1) // st  # stride index of each check
        Ls = np.asarray(self.glr_windows, dtype=np.int64)
        JJ = J[:, None] - (Ls // st)[None, :]  # stride index where each window starts
        n0 = self._g_nbase + JJ * st
        ok = (JJ >= self._g_j0) & (n0 >= self.warmup)
        jj = np.where(ok, JJ - self._g_j0, 0)
        s0, q0 = ps[jj], pq[jj]
        n0f = np.maximum(n0, 2).astype(np.float64)
        Lf = Ls.astype(np.float64)[None, :]
        d = (ps[(J - self._g_j0)][:, None] - s0) / Lf - s0 / n0f
        var0 = np.maximum((q0 - s0 * s0 / n0f) / (n0f - 1.0), 1e-24)
        g = np.where(ok, d * d / (2.0 * var0 * (1.0 / Lf + 1.0 / n0f)), 0.0)
        best = np.argmax(g, axis=1)
        rows = np.arange(len(idx))
        return idx, g[rows, best], Ls[best], d[rows, best] > 0, cs, cq

    def _glr_commit(self, e: int, idx: np.ndarray, cs: np.ndarray, cq: np.ndarray) -> None:
        """Advance the GLR state over the chunk's first ``e + 1`` values."""
        keep = idx[idx <= e]
        self._gp_s += cs[keep].tolist()
        self._gp_q += cq[keep].tolist()
        excess = len(self._gp_s) - (max(self.glr_windows) // self.glr_stride + 1)
        if excess > 0:
            del self._gp_s[:excess], self._gp_q[:excess]
            self._g_j0 += excess
        self._g_s, self._g_q = float(cs[e]), float(cq[e])
        self._g_c += e + 1

    def _scan(self, x: np.ndarray) -> tuple[int, tuple | None]:
        z = (x - self._mu) / self._sd
        if self.clip is not None:
            z = np.clip(z, -self.clip, self.clip)
        m = len(z)
        pos = self.n_seen + np.arange(m)
        runs = []  # per chart and side: (S array, zero array, h)
        for j, (kk, hh) in enumerate(zip(self._ks, self.hs)):
            for side, s0, zero0 in ((1.0, self._s_up[j], self._zero_up[j]), (-1.0, self._s_dn[j], self._zero_dn[j])):
                c = np.cumsum(np.concatenate(([s0], side * z - kk)))
                s = c[1:] - np.minimum.accumulate(np.minimum(c[1:], 0.0))
                runs.append((s, zero0, hh))
        hit = np.zeros(m, dtype=bool)
        for s, _, hh in runs:
            hit |= s > hh
        det = int(np.argmax(hit)) if hit.any() else -1
        if self.glr_windows:
            gidx, G, GL, gup, cs, cq = self._glr(z)
            if G is not None:
                ghit = np.flatnonzero(G > self.glr_threshold)
                if ghit.size and (det < 0 or gidx[ghit[0]] < det):
                    det = int(gidx[ghit[0]])
        e = det if det >= 0 else m - 1
        best = None
        for idx, (s, zero0, hh) in enumerate(runs):
            # S restarts from zero where it hits zero: the change starts after
            zs = np.flatnonzero(s[: e + 1] <= 0.0)
            zero = int(pos[zs[-1]] + 1) if zs.size else zero0
            j, up = divmod(idx, 2)
            if up == 0:
                self._s_up[j], self._zero_up[j] = float(s[e]), zero
            else:
                self._s_dn[j], self._zero_dn[j] = float(s[e]), zero
            ratio = s[e] / hh
            if best is None or ratio > best[0]:
                best = (ratio, float(s[e]), hh, up == 0, zero, f"CUSUM chart k={self._ks[j]:g}")
        if self.glr_windows:
            if G is not None:
                upto = np.flatnonzero(gidx <= e)
                if upto.size:
                    k = upto[-1]
                    ratio = G[k] / self.glr_threshold
                    if ratio > best[0] or (det >= 0 and gidx[k] == det and G[k] > self.glr_threshold):
                        # window start, as a stream position
                        start = self._g_pos0 + self._g_c + int(gidx[k]) + 1 - int(GL[k])
                        best = (ratio, float(G[k]), self.glr_threshold, bool(gup[k]), start, f"GLR chart, window {int(GL[k])}")
            self._glr_commit(e, gidx, cs, cq)
        self.n_seen += e + 1
        return det, best

    def update(self, values: np.ndarray) -> DriftResult | None:
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size and not np.isfinite(x).all():
            raise ValueError("CUSUM: values must be finite (drop NaN/inf before update)")
        batch_start = self.n_seen
        detections: list[int] = []
        changes: list[int] = []
        det_info = None
        last = None
        i = 0
        while i < len(x):
            if self._mu is None:
                i += self._warm(x[i:])
                continue
            det, best = self._scan(x[i : i + _CHUNK])
            last = best
            if det >= 0:
                _, stat, hh, up, change, kind = best
                pos = self.n_seen - 1
                detections.append(pos)
                changes.append(change)
                det_info = (stat, hh, up, pos, change, kind)
                self._reset()
                i += det + 1
            else:
                i += min(_CHUNK, len(x) - i)
        if det_info is not None:
            stat, hh, up, pos, change, kind = det_info
            return DriftResult(
                statistic=stat,
                threshold=hh,
                detected=True,
                n_seen=self.n_seen,
                change_index=change,
                examples=shift_examples(x, batch_start, change, pos, up),
                detail=(
                    f"CUSUM: mean {'increase' if up else 'decrease'} detected at record {pos} "
                    f"({kind}: {stat:.3g} > {hh:.3g}), estimated start at record {change}"
                ),
                extra={"detections": detections, "change_points": changes},
            )
        if last is None:
            return None
        _, stat, hh, _, _, _ = last
        return DriftResult(
            statistic=stat,
            threshold=hh,
            detected=False,
            n_seen=self.n_seen,
            detail=f"CUSUM: no change (S={stat:.3g} <= h={hh:.3g} sd)",
            extra={"detections": [], "mean": self._mu, "std": self._sd},
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "params": {
                "k": self.k if np.isscalar(self.k) else list(self.k),
                "h": list(self.hs),
                "expected_run_length": self.expected_run_length,
                "warmup": self.warmup,
                "mean": self.fixed_mean,
                "std": self.fixed_std,
                "clip": self.clip,
                "glr_windows": list(self.glr_windows),
                "glr_threshold": self.glr_threshold,
                "glr_stride": self.glr_stride,
            },
            "n_seen": self.n_seen,
            "wn": self._wn,
            "wsum": self._wsum,
            "wsq": self._wsq,
            "mu": self._mu,
            "sd": self._sd,
            "s_up": list(self._s_up),
            "s_dn": list(self._s_dn),
            "zero_up": list(self._zero_up),
            "zero_dn": list(self._zero_dn),
            "glr": {
                "nbase": self._g_nbase,
                "pos0": self._g_pos0,
                "c": self._g_c,
                "s": self._g_s,
                "q": self._g_q,
                "j0": self._g_j0,
                "ps": list(self._gp_s),
                "pq": list(self._gp_q),
            },
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        p = dict(state["params"])
        if isinstance(p["k"], list):
            p["k"] = tuple(p["k"])
        p.setdefault("glr_windows", ())  # checkpoints from before the GLR chart
        d = cls(**p)
        d.n_seen = int(state["n_seen"])
        d._wn, d._wsum, d._wsq = int(state["wn"]), float(state["wsum"]), float(state["wsq"])
        d._mu, d._sd = state["mu"], state["sd"]
        d._s_up = [float(v) for v in state["s_up"]]
        d._s_dn = [float(v) for v in state["s_dn"]]
        d._zero_up = [int(v) for v in state["zero_up"]]
        d._zero_dn = [int(v) for v in state["zero_dn"]]
        g = state.get("glr")
        if g is not None:
            d._g_nbase, d._g_pos0, d._g_c = int(g["nbase"]), int(g["pos0"]), int(g["c"])
            d._g_s, d._g_q, d._g_j0 = float(g["s"]), float(g["q"]), int(g["j0"])
            d._gp_s = [float(v) for v in g["ps"]]
            d._gp_q = [float(v) for v in g["pq"]]
        return d
