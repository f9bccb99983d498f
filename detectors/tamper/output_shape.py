"""Output-shape detectors: the model's answers change shape, not just location.

Three detectors a swapped, tampered or backdoored model tends to trip, each
calibrated on the reference window (the approved model's first records) and
evaluated on consecutive, non-overlapping windows of ``window`` records:

- ``class_concentration`` (:class:`ClassConcentration`): one class suddenly takes
  a much larger share of the answers (a backdoor firing broadly, a model
  collapsed onto one output).
- ``confidence_bimodality`` (:class:`ConfidenceBimodality`): the score
  distribution grows a second mode (part of the traffic answered with
  a different confidence regime, e.g. triggered inputs at ~1.0).
- ``entropy_collapse`` (:class:`EntropyCollapse`): the mean predictive entropy
  falls (an over-confident substitute model, a hard-coded answer).

Each follows :class:`detectors.base.Detector`: ``update(values)`` returns
``None`` until a window completes, then the window's :class:`DriftResult`.
``alpha`` is the false-alarm probability per window, so the expected number of
records between false alarms is about ``window / alpha`` (defaults: 500 /
1e-3 = 500,000 records) when traffic matches the reference; the effect-size
floors (``min_increase``, ``min_relative_drop``, the 5/9 bimodality line) only
make alarms rarer.

They live in one module because they share the reference/window mechanics.

>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> ref = rng.choice(np.array(list("abcd"), dtype=object), 2000)
>>> cc = ClassConcentration(window=500)
>>> cc.update(ref) is None                     # reference only
True
>>> cc.update(rng.choice(np.array(list("abcd"), dtype=object), 500)).detected
False
>>> r = cc.update(np.array(["a"] * 400 + ["b"] * 100, dtype=object))
>>> r.detected, r.extra["class"]
(True, 'a')
>>> ent = EntropyCollapse(window=500)
>>> soft = rng.dirichlet(np.ones(4), 2500)
>>> ent.update(soft).detected
False
>>> ent.update(np.eye(4)[rng.integers(0, 4, 500)] * 0.97 + 0.0075).detected
True
>>> bm = ConfidenceBimodality(window=500)
>>> bm.update(rng.beta(8, 2, 2500)).detected
False
>>> bm.update(np.concatenate([rng.beta(60, 1, 250), rng.beta(6, 6, 250)])).detected
True
"""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np
from scipy.stats import betabinom, norm

from detectors.base import Detector, DriftResult
from detectors.drift.output import entropy


class _Windowed(Detector):
    """Reference first, then non-overlapping windows; subclasses fit and score.

    A window is kept as sufficient statistics (``self._acc``, plain numbers),
    not as the values themselves: O(1) memory and state per detector.
    """

    def __init__(self, n_reference: int = 2000, window: int = 500, alpha: float = 1e-3):
        self.n_reference = int(n_reference)
        self.window = int(window)
        self.alpha = float(alpha)
        self.n_seen = 0
        self.calibrated = False
        self._ref: list = []     # reference buffer until calibration (one-off)
        self._win_n = 0          # values in the current window
        self._acc = self._empty()
        self.n_windows = 0

    def _prepare(self, values: np.ndarray) -> np.ndarray:
        return values

    def update(self, values: np.ndarray) -> DriftResult | None:
        values = self._prepare(np.asarray(values))
        n = len(values)
        start = 0
        if not self.calibrated:
            take = min(n, self.n_reference - len(self._ref))
            self._ref.extend(values[:take].tolist())
            self.n_seen += take
            start = take
            if len(self._ref) >= self.n_reference:
                self._fit(self._ref)
                self._ref = []
                self.calibrated = True
        best: DriftResult | None = None
        i = start
        while i < n:
            take = min(n - i, self.window - self._win_n)
            self._accumulate(values[i:i + take])
            self._win_n += take
            self.n_seen += take
            i += take
            if self._win_n >= self.window:
                r = self._score()
                self.n_windows += 1
                self._win_n, self._acc = 0, self._empty()
                # several windows in one batch: report the last detected one, else the last
                if best is None or r.detected or not best.detected:
                    best = r
        return best

    def _base_state(self) -> dict[str, Any]:
        return {"name": self.name, "n_reference": self.n_reference, "window": self.window,
                "alpha": self.alpha, "n_seen": self.n_seen, "calibrated": self.calibrated,
                "ref": list(self._ref), "win_n": self._win_n, "acc": self._acc,
                "n_windows": self.n_windows}

    def _load_base(self, s: dict[str, Any]) -> None:
        self.n_seen, self.calibrated = int(s["n_seen"]), bool(s["calibrated"])
        self._ref, self._win_n, self.n_windows = list(s["ref"]), int(s["win_n"]), int(s["n_windows"])
        self._acc = s["acc"]


class ClassConcentration(_Windowed):
    """One class's share of a window far above its reference share.

    For each class ``k`` the window count is compared with the upper
    ``alpha / (K + 1)`` quantile of its beta-binomial predictive given the
    reference counts (Bonferroni over the reference classes plus one slot for
    classes never seen), and with ``p_ref_k + min_increase``: both must be
    exceeded.  ``statistic`` is that class's window share, ``threshold`` its
    limit; ``extra`` names the class and both shares.
    """

    name = "class_concentration"

    def __init__(self, n_reference: int = 2000, window: int = 500, alpha: float = 1e-3,
                 min_increase: float = 0.2):
        super().__init__(n_reference, window, alpha)
        self.min_increase = float(min_increase)
        self._cache: dict[tuple[int, float], float] = {}   # derived, not state
        self.ref_counts: dict[str, int] = {}
        self.n_ref = 0

    def _prepare(self, values):
        return np.asarray(values, dtype=object)

    @staticmethod
    def _labels(values) -> np.ndarray:
        arr = np.asarray(values, dtype=object)
        return arr[arr != None].astype(str)  # noqa: E711 - elementwise

    def _empty(self):
        return {}

    def _accumulate(self, chunk) -> None:
        vals, cnt = np.unique(self._labels(chunk), return_counts=True)
        for v, c in zip(vals.tolist(), cnt.tolist()):     # distinct labels only
            self._acc[v] = self._acc.get(v, 0) + c

    def _fit(self, ref: list) -> None:
        vals, cnt = np.unique(self._labels(ref), return_counts=True)
        self.ref_counts = {str(v): int(c) for v, c in zip(vals, cnt)}
        self.n_ref = int(cnt.sum())

    def _limits(self, w: int, ref: np.ndarray) -> np.ndarray:
        """Share limits for classes with these reference counts in a window of ``w``.

        ``betabinom.isf`` is a search (milliseconds); windows nearly always have
        the same size, so limits are cached per (w, reference count).
        """
        K = len(self.ref_counts) + 1
        out = np.empty(len(ref))
        for i, r in enumerate(ref.tolist()):        # distinct classes, not records
            key = (w, r)
            if key not in self._cache:
                a, b = r + 0.5, (self.n_ref - r) + 0.5
                q = float(betabinom.isf(self.alpha / K, w, a, b))
                self._cache[key] = max(q / w, a / (a + b) + self.min_increase)
            out[i] = self._cache[key]
        return out

    def _score(self) -> DriftResult:
        if not self._acc:
            return DriftResult(0.0, 1.0, False, self.n_seen)
        vals = list(self._acc)
        cnt = np.array([self._acc[v] for v in vals], dtype=np.float64)
        w = int(cnt.sum())
        ref = np.array([self.ref_counts.get(v, 0) for v in vals], dtype=np.float64)
        limit = self._limits(w, ref)
        share = cnt / w
        j = int(np.argmax(share - limit))
        det = bool(share[j] > limit[j])
        cls = vals[j]
        ref_share = float(ref[j] / max(self.n_ref, 1))
        return DriftResult(
            statistic=float(share[j]), threshold=float(limit[j]), detected=det, n_seen=self.n_seen,
            change_index=self.n_seen - self._win_n,
            detail=(f"Class {cls!r} took {share[j]:.0%} of the last {w} answers vs {ref_share:.0%} "
                    f"in the reference (limit {limit[j]:.0%})."),
            extra={"class": cls, "share": float(share[j]), "reference_share": ref_share, "window": w},
        )

    def state_dict(self) -> dict[str, Any]:
        return dict(self._base_state(), min_increase=self.min_increase,
                    ref_counts=dict(self.ref_counts), n_ref=self.n_ref)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        d = cls(state["n_reference"], state["window"], state["alpha"], state["min_increase"])
        d._load_base(state)
        d.ref_counts, d.n_ref = dict(state["ref_counts"]), int(state["n_ref"])
        return d


def _power_sums(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``[n, sum x, sum x^2, sum x^3, sum x^4]`` along ``axis`` (last axis of the result)."""
    x = np.asarray(x, dtype=np.float64)
    return np.stack([np.full(x.shape[:axis] if axis != -1 else x.shape[:-1], float(x.shape[axis])),
                     x.sum(axis), (x ** 2).sum(axis), (x ** 3).sum(axis), (x ** 4).sum(axis)], axis=-1)


def _bc_from_sums(sums: np.ndarray) -> np.ndarray:
    """Sarle's sample bimodality coefficient from power sums; 5/9 for a uniform.

    Constant or tiny samples give 0 (one mode by definition).  Scores live in
    [0, 1], so the raw-moment formulas lose nothing that matters in float64.
    """
    sums = np.asarray(sums, dtype=np.float64)
    n, s1, s2, s3, s4 = (sums[..., i] for i in range(5))
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = s1 / n
        m2 = s2 / n - mu ** 2
        m3 = s3 / n - 3 * mu * s2 / n + 2 * mu ** 3
        m4 = s4 / n - 4 * mu * s3 / n + 6 * mu ** 2 * s2 / n - 3 * mu ** 4
        g = m3 / m2 ** 1.5
        k = m4 / m2 ** 2 - 3.0
        # small-sample corrected skewness and excess kurtosis (SAS; Pfister et al. 2013)
        G = g * np.sqrt(n * (n - 1)) / (n - 2)
        K = ((n + 1) * k + 6) * (n - 1) / ((n - 2) * (n - 3))
        bc = (G * G + 1) / (K + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))
    return np.where((n >= 4) & (m2 > 1e-12), bc, 0.0)


class ConfidenceBimodality(_Windowed):
    """Score distribution becoming bimodal (Sarle's bimodality coefficient).

    Calibration: ``n_boot`` windows resampled from the reference scores give
    the coefficient's sampling distribution under "nothing changed"; the
    threshold is its mean plus ``z_{1-alpha}`` standard deviations (normal
    approximation of the window statistic), and never below 5/9, the
    textbook line above which a distribution is called bimodal.  NaN scores
    are skipped.
    """

    name = "confidence_bimodality"

    def __init__(self, n_reference: int = 2000, window: int = 500, alpha: float = 1e-3,
                 n_boot: int = 200, seed: int = 0):
        super().__init__(n_reference, window, alpha)
        self.n_boot, self.seed = int(n_boot), int(seed)
        self.threshold = math.inf
        self.ref_bc = 0.0

    def _prepare(self, values):
        v = np.asarray(values, dtype=np.float64)
        return v[~np.isnan(v)]

    def _empty(self):
        return [0.0] * 5

    def _accumulate(self, chunk) -> None:
        self._acc = (np.asarray(self._acc) + _power_sums(chunk)).tolist()

    def _fit(self, ref: list) -> None:
        x = np.asarray(ref, dtype=np.float64)
        rng = np.random.default_rng(self.seed)
        boot = _bc_from_sums(_power_sums(x[rng.integers(0, len(x), (self.n_boot, self.window))]))
        self.ref_bc = float(_bc_from_sums(_power_sums(x)))
        self.threshold = float(max(boot.mean() + norm.isf(self.alpha) * boot.std(ddof=1), 5 / 9))

    def _score(self) -> DriftResult:
        bc = float(_bc_from_sums(np.asarray(self._acc)))
        w = int(self._acc[0])
        return DriftResult(
            statistic=bc, threshold=self.threshold, detected=bool(bc > self.threshold),
            n_seen=self.n_seen, change_index=self.n_seen - self._win_n,
            detail=(f"Score bimodality coefficient {bc:.3f} over the last {w} answers vs "
                    f"{self.ref_bc:.3f} in the reference (limit {self.threshold:.3f})."),
            extra={"reference_bc": self.ref_bc, "window": w},
        )

    def state_dict(self) -> dict[str, Any]:
        return dict(self._base_state(), n_boot=self.n_boot, seed=self.seed,
                    threshold=self.threshold if math.isfinite(self.threshold) else None,
                    ref_bc=self.ref_bc)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        d = cls(state["n_reference"], state["window"], state["alpha"], state["n_boot"], state["seed"])
        d._load_base(state)
        d.threshold = math.inf if state["threshold"] is None else float(state["threshold"])
        d.ref_bc = float(state["ref_bc"])
        return d


class EntropyCollapse(_Windowed):
    """Mean predictive entropy (bits) of a window far below the reference's.

    ``values`` is the ``(n, classes)`` probability matrix (rows with NaN are
    skipped).  ``statistic`` is the drop ``H_ref - H_window``; ``threshold``
    is ``z_{1-alpha} * sd_ref * sqrt(1/window + 1/n_ref)`` (CLT for the
    difference of means, one-sided; entropy is right-skewed, which makes the
    lower tail of a window mean lighter than normal, i.e. this is
    conservative) and at least ``min_relative_drop * H_ref``.
    """

    name = "entropy_collapse"

    def __init__(self, n_reference: int = 2000, window: int = 500, alpha: float = 1e-3,
                 min_relative_drop: float = 0.5):
        super().__init__(n_reference, window, alpha)
        self.min_relative_drop = float(min_relative_drop)
        self.ref_mean = 0.0
        self.ref_sd = 0.0
        self.n_ref = 0

    def _prepare(self, values):
        P = np.asarray(values, dtype=np.float64)
        if P.ndim == 1:
            P = P[:, None]
        h = entropy(P)  # one entropy (bits) per record; NaN for records without probabilities
        return h[~np.isnan(h)]

    def _empty(self):
        return [0.0, 0.0]

    def _accumulate(self, chunk) -> None:
        self._acc = [self._acc[0] + len(chunk), self._acc[1] + float(np.sum(chunk))]

    def _fit(self, ref: list) -> None:
        h = np.asarray(ref, dtype=np.float64)
        self.ref_mean, self.ref_sd, self.n_ref = float(h.mean()), float(h.std(ddof=1)), len(h)

    def _score(self) -> DriftResult:
        w = int(self._acc[0])
        m = self._acc[1] / max(w, 1)
        drop = self.ref_mean - m
        thr = max(norm.isf(self.alpha) * self.ref_sd * math.sqrt(1 / max(w, 1) + 1 / max(self.n_ref, 1)),
                  self.min_relative_drop * self.ref_mean)
        return DriftResult(
            statistic=float(drop), threshold=float(thr), detected=bool(drop > thr),
            n_seen=self.n_seen, change_index=self.n_seen - self._win_n,
            detail=(f"Mean predictive entropy fell to {m:.3f} bits over the last {w} answers "
                    f"from {self.ref_mean:.3f} in the reference (allowed drop {thr:.3f})."),
            extra={"reference_entropy_bits": self.ref_mean, "window_entropy_bits": m, "window": w},
        )

    def state_dict(self) -> dict[str, Any]:
        return dict(self._base_state(), min_relative_drop=self.min_relative_drop,
                    ref_mean=self.ref_mean, ref_sd=self.ref_sd, n_ref=self.n_ref)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        d = cls(state["n_reference"], state["window"], state["alpha"], state["min_relative_drop"])
        d._load_base(state)
        d.ref_mean, d.ref_sd, d.n_ref = float(state["ref_mean"]), float(state["ref_sd"]), int(state["n_ref"])
        return d
