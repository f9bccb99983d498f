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


class _Windowed(Detector):
    """Reference first, then non-overlapping windows; subclasses fit and score."""

    def __init__(self, n_reference: int = 2000, window: int = 500, alpha: float = 1e-3):
        self.n_reference = int(n_reference)
        self.window = int(window)
        self.alpha = float(alpha)
        self.n_seen = 0
        self.calibrated = False
        self._ref: list = []     # reference buffer until calibration
        self._win: list = []     # current window buffer
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
            take = min(n - i, self.window - len(self._win))
            self._win.extend(values[i:i + take].tolist())
            self.n_seen += take
            i += take
            if len(self._win) >= self.window:
                r = self._score(self._win)
                self.n_windows += 1
                self._win = []
                # several windows in one batch: report the detected (or last) one
                if best is None or r.detected or not best.detected:
                    best = r
        return best

    def _base_state(self) -> dict[str, Any]:
        return {"name": self.name, "n_reference": self.n_reference, "window": self.window, "alpha": self.alpha,
                "n_seen": self.n_seen, "calibrated": self.calibrated, "ref": list(self._ref),
                "win": list(self._win), "n_windows": self.n_windows}

    def _load_base(self, s: dict[str, Any]) -> None:
        self.n_seen, self.calibrated = int(s["n_seen"]), bool(s["calibrated"])
        self._ref, self._win, self.n_windows = list(s["ref"]), list(s["win"]), int(s["n_windows"])


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
        self.ref_counts: dict[str, int] = {}
        self.n_ref = 0

    def _prepare(self, values):
        return np.asarray(values, dtype=object)

    @staticmethod
    def _labels(values: list) -> np.ndarray:
        arr = np.array(values, dtype=object)
        return arr[arr != None].astype(str)  # noqa: E711 - elementwise

    def _fit(self, ref: list) -> None:
        vals, cnt = np.unique(self._labels(ref), return_counts=True)
        self.ref_counts = {str(v): int(c) for v, c in zip(vals, cnt)}
        self.n_ref = int(cnt.sum())

    def _score(self, win: list) -> DriftResult:
        w_vals = self._labels(win)
        w = max(len(w_vals), 1)
        vals, cnt = np.unique(w_vals, return_counts=True)
        K = len(self.ref_counts) + 1
        ref = np.array([self.ref_counts.get(str(v), 0) for v in vals], dtype=np.float64)
        a, b = ref + 0.5, (self.n_ref - ref) + 0.5
        limit_count = betabinom.isf(self.alpha / K, w, a, b)
        limit = np.maximum(limit_count / w, a / (a + b) + self.min_increase)
        share = cnt / w
        if len(vals) == 0:
            return DriftResult(0.0, 1.0, False, self.n_seen)
        j = int(np.argmax(share - limit))
        det = bool(share[j] > limit[j])
        cls = str(vals[j])
        ref_share = float(ref[j] / max(self.n_ref, 1))
        return DriftResult(
            statistic=float(share[j]), threshold=float(limit[j]), detected=det, n_seen=self.n_seen,
            change_index=self.n_seen - len(win),
            detail=(f"Class {cls!r} took {share[j]:.0%} of the last {w} answers vs {ref_share:.0%} "
                    f"in the reference (limit {limit[j]:.0%})."),
            extra={"class": cls, "share": float(share[j]), "reference_share": ref_share,
                   "window": int(w)},
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


def _bimodality_coefficient(x: np.ndarray) -> float:
    """Sarle's sample bimodality coefficient; 5/9 is its value for a uniform."""
    n = len(x)
    if n < 4:
        return 0.0
    d = x - x.mean()
    m2 = float(np.mean(d ** 2))
    if m2 <= 1e-24:
        return 0.0          # constant scores: one mode by definition
    g = float(np.mean(d ** 3)) / m2 ** 1.5
    k = float(np.mean(d ** 4)) / m2 ** 2 - 3.0
    # small-sample corrected skewness and excess kurtosis (as in SAS / Pfister et al. 2013)
    G = g * math.sqrt(n * (n - 1)) / (n - 2)
    K = ((n + 1) * k + 6) * (n - 1) / ((n - 2) * (n - 3))
    return (G * G + 1) / (K + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))


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

    def _fit(self, ref: list) -> None:
        x = np.asarray(ref, dtype=np.float64)
        rng = np.random.default_rng(self.seed)
        idx = rng.integers(0, len(x), (self.n_boot, self.window))
        boot = np.array([_bimodality_coefficient(x[i]) for i in idx])
        self.ref_bc = _bimodality_coefficient(x)
        self.threshold = float(max(boot.mean() + norm.isf(self.alpha) * boot.std(ddof=1), 5 / 9))

    def _score(self, win: list) -> DriftResult:
        bc = _bimodality_coefficient(np.asarray(win, dtype=np.float64))
        return DriftResult(
            statistic=float(bc), threshold=self.threshold, detected=bool(bc > self.threshold),
            n_seen=self.n_seen, change_index=self.n_seen - len(win),
            detail=(f"Score bimodality coefficient {bc:.3f} over the last {len(win)} answers vs "
                    f"{self.ref_bc:.3f} in the reference (limit {self.threshold:.3f})."),
            extra={"reference_bc": self.ref_bc, "window": len(win)},
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
        P = P[~np.isnan(P).any(axis=1)]
        P = P / np.maximum(P.sum(axis=1, keepdims=True), 1e-12)
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.where(P > 0, P * np.log2(P), 0.0).sum(axis=1)   # one entropy per record

    def _fit(self, ref: list) -> None:
        h = np.asarray(ref, dtype=np.float64)
        self.ref_mean, self.ref_sd, self.n_ref = float(h.mean()), float(h.std(ddof=1)), len(h)

    def _score(self, win: list) -> DriftResult:
        m = float(np.mean(win))
        drop = self.ref_mean - m
        thr = max(norm.isf(self.alpha) * self.ref_sd * math.sqrt(1 / len(win) + 1 / max(self.n_ref, 1)),
                  self.min_relative_drop * self.ref_mean)
        return DriftResult(
            statistic=float(drop), threshold=float(thr), detected=bool(drop > thr),
            n_seen=self.n_seen, change_index=self.n_seen - len(win),
            detail=(f"Mean predictive entropy fell to {m:.3f} bits over the last {len(win)} answers "
                    f"from {self.ref_mean:.3f} in the reference (allowed drop {thr:.3f})."),
            extra={"reference_entropy_bits": self.ref_mean, "window_entropy_bits": m, "window": len(win)},
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
