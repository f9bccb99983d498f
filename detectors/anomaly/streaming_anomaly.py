"""Univariate streaming anomaly scorer for operational series.

For latency, request rate, mean confidence and the like: one value per time
step, possibly seasonal, trending, with gaps and level shifts.  Every score
uses only the values up to and including its own (no look-ahead).

Model (robust Holt-Winters in error-correction form):

* prediction = level + damped trend + seasonal[phase];
* residual e, robust scale sigma = 1.2533 * EW mean of |e| (|e| clipped at
  ``huber`` sigmas so one spike cannot blow the scale up);
* z = e / (sigma * gap inflation); anomaly score = 1 - exp(-(z / 3)^2 / 2):
  0 for on-forecast values, 0.39 at 3 sigma, 0.75 at 5, 0.99 at 9 (normal
  noise exceeds 0.5 with probability 4e-4);
* level, trend and season learn from the *clipped* residual (Huber), so
  spikes barely move them;
* level shifts, two detectors calibrated to ``change_arl`` steps between
  false alarms, their increments deflated for the residuals' lag-1
  autocorrelation:
  - a CUSUM (k = 0.5) on the clipped z of the adaptive model, for slow or
    small shifts (active once 64 residuals have set the autocorrelation;
    threshold for 4 x ``change_arl``, because its scale no longer widens
    during a run, see below: measured null false-alarm rate as before);
  - a short-run CUSUM (k = 0.75) against the model *frozen* where it started
    (restarted after 16 rows), for 1.5-3 sigma steps that the adaptive level
    would otherwise half-absorb before confirmation (Nile: ~8 rows instead of
    never).  Used only while the residuals look like noise about a level
    (autocorrelation < 0.3, and < 0.4 over the 24 values before the step),
    and confirmed only by a step of 1.75 sigmas between the medians before
    and since its start, every value since (at least 5) beyond half a sigma
    on the side of the step.
  A confirmed shift re-bases the level to the median of the values since the
  estimated start and is flagged as a change point.  Scale and
  autocorrelation learn from residuals 8 rows old (discarded on a change
  point), so a shift is measured with the yardstick from before it.
  Change points are possible from a few rows after the warm-up (two periods
  after a seasonal (re)fit); while a period may still be found, only when the
  warm-up values looked like noise about a level (lag-1 autocorrelation
  < 0.5), not like an unmodelled cycle;
* missing values (NaN) advance the seasonal phase without updating anything;
  after a gap the tolerated error is widened (level uncertainty grows with
  the gap) and shrinks back over the next values;
* seasonality: ``period`` if given; otherwise detected online from the first
  values (per-phase means that predict other cycles out of sample, periods
  up to a third of the history, at doubling checkpoints up to
  ``max_history`` steps; weekly data with a yearly cycle: 52 at row 192).  The model
  is (re)initialised from that history when the period is found.

The recursion is non-linear (clipping, re-basing), so it runs as one tight
Python loop over scalars: ~1 microsecond-scale work per value, ample for a
series per model, not meant for per-feature use on the hot path.
"""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np

from detectors.base import Detector, DriftResult
from detectors.sequential.cusum import h_for_arl

_CHECKPOINTS = (48, 96, 192, 384, 768, 1536, 3072)
_FK = 0.75  # reference value of the short-run (frozen-reference) CUSUM, in sigmas
_FRHO = 0.3  # ... used only while the residuals' lag-1 autocorrelation is below this
_FSTEP = 1.75  # ... and confirmed only by a step of this many sigmas (median vs median)
_DELAY = 8  # rows before a residual updates the scale / autocorrelation


def _moving_average(y: np.ndarray, w: int) -> np.ndarray:
    """Centred moving average of width ``w`` (NaN where incomplete)."""
    out = np.full(len(y), np.nan)
    if len(y) < w:
        return out
    c = np.cumsum(np.concatenate(([0.0], y)))
    ma = (c[w:] - c[:-w]) / w
    off = w // 2
    out[off : off + len(ma)] = ma
    return out


def detect_period(y: np.ndarray, max_period: int | None = None, min_strength: float = 0.3) -> tuple[int, float]:
    """Period with the strongest *repeatable* seasonal signal in ``y`` (NaN
    allowed), or 0.

    For each candidate ``p`` (2 .. len/3) the series minus its ``p``-wide
    moving average (which removes level, trend and shifts) is split into
    even and odd cycles; the per-phase means of one half predict the other
    and the out-of-sample R^2 (averaged both ways) is the strength.  Random
    walks and AR noise fit their own phase means but do not repeat, so they
    score near zero.  A multiple of the true period scores about as well:
    the smallest divisor of the winner within 90% of it wins.
    """
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(y)
    if ok.sum() < 16:
        return 0, 0.0
    idx = np.arange(len(y))
    y = np.interp(idx, idx[ok], y[ok])
    hi = len(y) // 3
    if max_period:
        hi = min(hi, max_period)
    best = np.full(hi + 1, -np.inf)
    for p in range(2, hi + 1):
        d = y - _moving_average(y, p)
        good = np.isfinite(d)
        dd, ph, cyc = d[good], idx[good] % p, (idx[good] // p) % 2
        r2 = []
        for a in (0, 1):
            fit, test = cyc == a, cyc != a
            cnt = np.bincount(ph[fit], minlength=p)
            if (cnt == 0).any() or test.sum() < p:
                break
            means = np.bincount(ph[fit], weights=dd[fit], minlength=p) / cnt
            t = dd[test]
            tot = float(((t - t.mean()) ** 2).sum())
            if tot <= 0:
                break
            r2.append(1.0 - float(((t - means[ph[test]]) ** 2).sum()) / tot)
        if len(r2) == 2:
            best[p] = 0.5 * (r2[0] + r2[1])
    if hi < 2:
        return 0, 0.0
    p = int(np.argmax(best))
    top = float(best[p])
    if top < min_strength:
        return 0, max(top, 0.0)
    for q in range(2, p):
        if p % q == 0 and best[q] >= 0.9 * top:
            return q, float(best[q])
    return p, top


class StreamingAnomalyScorer(Detector):
    """Online anomaly score in [0, 1] and level-shift flags for one series.

    Parameters
    ----------
    period
        Seasonal period in steps; ``None`` detects it online, ``0`` disables
        seasonality.
    level_alpha, trend_beta, damping, season_gamma, scale_alpha
        Smoothing rates of level, trend (damped by ``damping``), seasonal
        terms and the robust scale.
    huber
        Residuals are clipped at this many sigmas before they update anything.
    change_arl
        Expected steps between false level-shift alarms on a well-modelled
        series (sets the thresholds of both CUSUMs).
    warmup
        Observed values before scores are produced (scores are 0 until then).
    max_history
        Longest history buffered for period detection.
    score_threshold
        ``update`` reports ``detected`` when a score exceeds it.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> t = np.arange(24 * 30)
    >>> y = 100 + 10 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 1, len(t))
    >>> y[600] += 12                      # a spike
    >>> y[650:] += 8                      # a level shift
    >>> sc = StreamingAnomalyScorer()
    >>> scores, changes = sc.score(y)
    >>> sc.period, bool(scores[600] > 0.9), float(np.median(scores[200:600])) < 0.05
    (24, True, True)
    >>> int(np.flatnonzero(changes)[-1]) - 650 < 10
    True
    """

    name = "streaming_anomaly"

    def __init__(
        self,
        period: int | None = None,
        level_alpha: float = 0.05,
        trend_beta: float = 0.1,
        damping: float = 0.995,
        season_gamma: float = 0.1,
        scale_alpha: float = 0.02,
        huber: float = 3.0,
        change_arl: float = 20_000,
        warmup: int = 16,
        max_history: int = 3072,
        score_threshold: float = 0.9,
    ):
        self.params = {
            "period": period,
            "level_alpha": float(level_alpha),
            "trend_beta": float(trend_beta),
            "damping": float(damping),
            "season_gamma": float(season_gamma),
            "scale_alpha": float(scale_alpha),
            "huber": float(huber),
            "change_arl": float(change_arl),
            "warmup": int(warmup),
            "max_history": int(max_history),
            "score_threshold": float(score_threshold),
        }
        self._h = h_for_arl(4 * change_arl, 0.5)
        self._hf = h_for_arl(change_arl, _FK)
        self.t = 0  # rows seen (including missing ones): the seasonal clock
        self.n_obs = 0  # non-missing values seen
        self.period = 0 if period is None else int(period)
        self.auto_period = period is None
        self.level = 0.0
        self.trend = 0.0
        self.season = [0.0] * self.period
        self.mean_abs = 0.0
        self.ready = False
        self.gap = 0
        self.infl = 1.0
        self.sp = self.sn = 0.0
        self.cusum_up = self.cusum_dn = 0  # rows where each CUSUM side last left zero
        self.settled = 0  # first row where change points may be signalled
        self.zz, self.zl, self.zprev = 1.0, 0.0, 0.0  # EW E[z^2], E[z z_prev], last z
        self.pending: list[list[float]] = []  # residuals waiting to update scale and autocorrelation
        self.fp = self.fn = 0.0  # frozen-reference CUSUM sides
        self.fstart = [0, 0]  # rows where they started
        self.fref = [0.0, 0.0, 0.0, 0.0]  # their reference level, trend
        self.nz = 0  # residuals in the autocorrelation estimate since the last (re)fit
        self.r0 = 0.0  # lag-1 autocorrelation of the history at the last (re)initialisation
        self.history: list[float | None] = []  # raw values (None = missing) for initialisation
        self.recent: list[list[float]] = []  # [row, deseasonalised value], last 128

    # -- initialisation from history -----------------------------------------
    def _initialise(self) -> None:
        """(Re)start level, season and scale from the buffered history."""
        y = np.array([np.nan if v is None else v for v in self.history], dtype=np.float64)
        ok = np.isfinite(y)
        if ok.sum() < 4:
            return
        idx = np.arange(len(y))
        first_row = self.t - len(y)
        yi = np.interp(idx, idx[ok], y[ok])
        p = self.period
        if p >= 2 and len(y) >= 2 * p:
            d = yi - _moving_average(yi, p)
            good = np.isfinite(d)
            ph = (first_row + idx[good]) % p
            season = np.zeros(p)
            for k in range(p):
                v = d[good][ph == k]
                season[k] = float(np.median(v)) if len(v) else 0.0
            season -= season.mean()
            self.season = season.tolist()
            des = yi - season[(first_row + idx) % p]
            resid = d[good] - season[ph]
        else:
            self.season = [0.0] * p
            des = yi
            resid = np.diff(yi[ok]) / math.sqrt(2) if ok.sum() > 2 else yi[ok] - yi[ok].mean()
        tail = des[-max(p, 8):]
        self.level = float(np.median(tail))
        self.trend = 0.0
        mad = float(np.median(np.abs(resid - np.median(resid)))) * 1.4826
        # residuals about a centred fit understate one-step errors: start wider
        sigma = 1.5 * mad if mad > 0 else float(np.std(yi)) or 1.0
        self.mean_abs = sigma / 1.2533
        self.ready = True
        # residual autocorrelation prior for the CUSUM deflation: lag-1
        # autocorrelation of the history about its median (0 for white noise,
        # high for random walks / AR / a season not modelled yet)
        dv = des[ok] - np.median(des[ok])
        den = float(dv @ dv)
        r1 = float(dv[1:] @ dv[:-1]) / den if den > 0 else 0.0
        self.zz, self.zl, self.zprev = 1.0, min(0.95, max(0.0, r1)), 0.0
        self.r0 = r1
        self.nz = 0
        # the short-run shift test compares with the history (deseasonalised)
        self.recent = [[int(first_row + j), float(des[j])] for j in np.flatnonzero(ok)[-128:]]
        # change points once the fresh model has seen a few values (two more
        # periods after a seasonal (re)fit)
        self.settled = self.t + max(2 * p, 4)
        self.sp = self.sn = 0.0

    # -- the per-value recursion -----------------------------------------------
    def score(self, values) -> tuple[np.ndarray, np.ndarray]:
        """Scores (NaN where the value is missing) and change-point flags."""
        x = np.asarray(values, dtype=np.float64).ravel()
        out = np.full(len(x), np.nan)
        chg = np.zeros(len(x), dtype=bool)
        P = self.params
        a, b, phi, g = P["level_alpha"], P["trend_beta"], P["damping"], P["season_gamma"]
        sa, c, h = P["scale_alpha"], P["huber"], self._h
        for i, y in enumerate(x.tolist()):
            t = self.t
            self.t += 1
            keep = self.auto_period or not self.ready
            if keep and len(self.history) < P["max_history"]:
                self.history.append(None if y != y else y)
            if self.auto_period and self.t in _CHECKPOINTS and self.t <= P["max_history"]:
                p, _ = detect_period(np.array([np.nan if v is None else v for v in self.history]))
                if p:
                    self.period, self.auto_period = p, False
                    self._initialise()
                    self.history = []
                elif self.t >= P["max_history"]:
                    self.auto_period = False
                    self.history = []
            if y != y or math.isinf(y):  # missing
                self.gap += 1
                continue
            self.n_obs += 1
            p = self.period
            s = self.season[t % p] if p else 0.0
            if not self.ready:
                if self.n_obs >= P["warmup"] and (not p or len(self.history) >= 2 * p):
                    self._initialise()
                    self.history = [] if not self.auto_period else self.history
                out[i] = 0.0
                self.gap = 0
                continue
            if self.gap:
                # the level may have moved while unobserved: widen tolerance
                self.infl = max(self.infl, min(5.0, math.sqrt(1.0 + 0.1 * self.gap)))
                self.gap = 0
            lvl0, tr0 = self.level, self.trend
            pred = self.level + phi * self.trend + s
            e = y - pred
            sigma = max(1.2533 * self.mean_abs, 1e-9 * (abs(self.level) + 1.0)) * self.infl
            z = e / sigma
            out[i] = -math.expm1(-0.5 * (z / 3.0) ** 2)
            ec = max(-c * sigma, min(c * sigma, e))
            self.level += phi * self.trend + a * ec
            self.trend = phi * self.trend + a * b * ec
            if p:
                self.season[t % p] += g * (1.0 - a) * ec
            self.infl = 1.0 + (self.infl - 1.0) * 0.7
            self.recent.append([t, y - s])
            if len(self.recent) > 128:
                del self.recent[0]
            zc = max(-4.0, min(4.0, z))
            # Residuals of a smoothed model are autocorrelated (AR noise,
            # random-walk levels); a sum of n of them has variance about
            # n (1 + rho) / (1 - rho).  Deflating the CUSUM increments by that
            # factor keeps its false-alarm rate near target.
            # The scale and the autocorrelation learn from residuals _DELAY
            # rows old (dropped if a change point is confirmed meanwhile), so
            # a shift is judged by the yardstick from before it instead of
            # widening it.
            self.pending.append([min(abs(e), c * sigma) / self.infl, zc, self.zprev])
            self.zprev = zc
            if len(self.pending) > _DELAY:
                ae, z1, z0 = self.pending.pop(0)
                self.mean_abs += sa * (ae - self.mean_abs)
                # a running mean over the first values after a (re)fit (the
                # history prior counts as two), then EW
                self.nz += 1
                rz = max(0.02, 1.0 / (self.nz + 2))
                self.zz += rz * (z1 * z1 - self.zz)
                self.zl += rz * (z1 * z0 - self.zl)
            rho = min(0.95, max(0.0, self.zl / self.zz)) if self.zz > 0 else 0.0
            defl = math.sqrt((1.0 - rho) / (1.0 + rho))
            zc *= defl
            if self.sp <= 0.0:
                self.cusum_up = t
            if self.sn <= 0.0:
                self.cusum_dn = t
            self.sp = max(0.0, self.sp + zc - 0.5)
            self.sn = max(0.0, self.sn - zc - 0.5)
            # Short-run CUSUM against a frozen reference: the adaptive level
            # absorbs part of a shift before the CUSUM above confirms it
            # (a 2 sigma shift then takes 10-20 rows).  Each side compares
            # the values with the model as it stood when the side left zero
            # (level, plus the trend if it moves the level by more than the
            # noise within 16 rows) and restarts after 16 rows without an
            # alarm, so estimation error in the reference cannot accumulate.
            for j, sgn in ((0, 1.0), (1, -1.0)):
                f = self.fp if j == 0 else self.fn
                if f <= 0.0 or t - self.fstart[j] >= 16:
                    f = 0.0
                    self.fstart[j] = t
                    self.fref[2 * j] = lvl0
                    self.fref[2 * j + 1] = tr0 if abs(tr0) * 16 > sigma else 0.0
                ez = (y - s - self.fref[2 * j] - self.fref[2 * j + 1] * (t - self.fstart[j] + 1)) / sigma
                f = max(0.0, f + sgn * max(-4.0, min(4.0, ez)) * defl - _FK)
                if j == 0:
                    self.fp = f
                else:
                    self.fn = f
            start = -1
            if t >= self.settled and (self.period or not self.auto_period or self.r0 < 0.5):
                strict = False
                if (self.sp > h or self.sn > h) and self.nz >= 64:
                    start = self.cusum_up if self.sp > h else self.cusum_dn
                elif (self.fp > self._hf or self.fn > self._hf) and rho < _FRHO and self.nz >= 8:
                    start = self.fstart[0] if self.fp > self._hf else self.fstart[1]
                    strict = True
            if start >= 0:
                since = [v for r, v in self.recent if r >= start]
                before = [v for r, v in self.recent if start - 24 <= r < start]
                med = float(np.median(since))
                # the shift must persist: the median since the estimated start
                # clears the spread of the values just before it
                if strict and len(before) < 8:
                    continue
                if len(before) >= 8:
                    mb = float(np.median(before))
                    spread = 1.4826 * float(np.median(np.abs(np.array(before) - mb)))
                    if strict:
                        # the short-run CUSUM: a clear, persistent step (every
                        # value since beyond half a sigma on its side) from
                        # values that looked like noise about a flat level
                        # (not a wandering random walk / AR process)
                        bv = np.array(before) - mb
                        den = float(bv @ bv)
                        r1 = float(bv[1:] @ bv[:-1]) / den if den > 0 else 1.0
                        ref = max(spread, sigma)
                        off = sum(1 for v in since if (v - mb) * (med - mb) > 0 and abs(v - mb) > 0.5 * ref)
                        if len(since) < 5 or r1 > 0.4 or abs(med - mb) < _FSTEP * ref or off < len(since):
                            continue
                    elif len(since) < 3 or abs(med - mb) < max(spread, 0.5 * sigma):
                        continue
                self.level = med
                self.trend = 0.0
                self.sp = self.sn = self.fp = self.fn = 0.0
                self.pending = []
                chg[i] = True
        return out, chg

    # -- Detector interface ----------------------------------------------------
    def update(self, values: np.ndarray) -> DriftResult | None:
        scores, changes = self.score(values)
        if not np.isfinite(scores).any():
            return None
        top = int(np.nanargmax(scores))
        thr = self.params["score_threshold"]
        mx = float(scores[top])
        flagged = np.flatnonzero(np.nan_to_num(scores) > thr)
        return DriftResult(
            statistic=mx,
            threshold=thr,
            detected=mx > thr,
            n_seen=self.t,
            change_index=(self.t - len(scores) + int(np.flatnonzero(changes)[-1])) if changes.any() else None,
            examples=tuple(int(i) for i in flagged[np.argsort(-scores[flagged], kind="stable")][:5]),
            detail=f"streaming anomaly: max score {mx:.3f} ({len(flagged)} values above {thr})",
            extra={
                "anomaly_ratio": float(len(flagged) / max(1, np.isfinite(scores).sum())),
                "change_points": np.flatnonzero(changes).tolist(),  # positions in the batch
            },
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "params": dict(self.params),
            "t": self.t,
            "n_obs": self.n_obs,
            "period": self.period,
            "auto_period": self.auto_period,
            "level": self.level,
            "trend": self.trend,
            "season": list(self.season),
            "mean_abs": self.mean_abs,
            "ready": self.ready,
            "gap": self.gap,
            "infl": self.infl,
            "sp": self.sp,
            "sn": self.sn,
            "cusum_up": self.cusum_up,
            "cusum_dn": self.cusum_dn,
            "settled": self.settled,
            "zz": self.zz,
            "zl": self.zl,
            "zprev": self.zprev,
            "r0": self.r0,
            "nz": self.nz,
            "pending": [list(r) for r in self.pending],
            "fp": self.fp,
            "fn": self.fn,
            "fstart": list(self.fstart),
            "fref": list(self.fref),
            "history": list(self.history),
            "recent": [list(r) for r in self.recent],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        d = cls(**state["params"])
        for k in ("t", "n_obs", "period", "gap", "cusum_up", "cusum_dn", "settled"):
            setattr(d, k, int(state[k]))
        for k in ("level", "trend", "mean_abs", "infl", "sp", "sn", "zz", "zl", "zprev"):
            setattr(d, k, float(state[k]))
        d.auto_period = bool(state["auto_period"])
        d.ready = bool(state["ready"])
        d.season = [float(v) for v in state["season"]]
        d.history = list(state["history"])
        d.recent = [list(r) for r in state["recent"]]
        # short-run detector state (absent from states saved by older
        # versions: those resume with it idle and fully warmed up)
        d.nz = int(state.get("nz", 64))
        d.r0 = float(state.get("r0", 0.0))
        d.fp = float(state.get("fp", 0.0))
        d.fn = float(state.get("fn", 0.0))
        d.fstart = [int(v) for v in state.get("fstart", [d.t, d.t])]
        d.fref = [float(v) for v in state.get("fref", [d.level, 0.0, d.level, 0.0])]
        d.pending = [[float(x) for x in r] for r in state.get("pending", [])]
        return d
