"""Shared machinery for two-sample drift tests: a fixed reference sample against
a window of recent values.

Every two-sample detector (KS, chi-square, PSI, Jensen-Shannon, Wasserstein,
PCA reconstruction) has the same life: summarise the reference once, collect
values into a window, run a test each time the window is full, explain the
result. This module does the collecting and the bookkeeping so that each
detector module only says how to summarise the reference, how to compute its
statistic for a stack of windows at once, and how to explain one window.

Windows
-------
*Tumbling* (default): the window fills with ``window_size`` non-missing values,
is tested, and empties. Windows never overlap, so under no drift their
decisions are independent given the reference.

*Sliding* (``sliding=True``): the window is the last ``window_size`` non-missing
values and a test runs every ``window_size // 4`` new values (the first once the
window is full). Consecutive tests share 3/4 of their data, so alarms come in
clusters; when calibrating, count ``window_size // 4`` values per test.

Positions
---------
Every value passed to ``update`` (missing or not) advances the stream position
by one. A result's ``change_index`` is the stream position of the first value of
the tested window and its ``n_seen`` the position just after the last one, so
results do not depend on how the stream was cut into batches. ``examples`` are
indices into the array passed to the *last* ``update`` call.

A batch may complete several windows; they are tested together (one vectorised
call) and ``update`` returns the last result, with ``extra['tests_in_batch']``
and ``extra['detections_in_batch']`` so a detection in an earlier window of the
same batch is not silently lost. ``update_all`` returns every result.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, ClassVar, Self

import numpy as np

from detectors.base import DriftResult, Detector, Frozen

STATE_VERSION = 1

#: p-values of the windows at the given indices
PValues = Callable[[np.ndarray], np.ndarray]


class WindowedTwoSampleDetector(Detector):
    """Base class: reference summary + window bookkeeping.

    Subclasses implement ``_fit`` / ``_reference_state`` / ``_load_reference``
    (the reference summary), ``_calibrate`` (thresholds from that summary),
    ``_clean`` (drop or repair missing values),
    ``_test`` (statistics for a stack of windows) and ``_explain`` (one window).
    """

    name: ClassVar[str]
    #: how a statistic is named in a detail sentence, e.g. "KS D"
    stat_label: ClassVar[str]

    def __init__(
        self,
        reference: np.ndarray,
        window_size: int = 1000,
        alpha: float = 1e-6,
        *,
        sliding: bool = False,
        seed: int = 0,
        **options: Any,
    ) -> None:
        self._setup(window_size=window_size, alpha=alpha, sliding=sliding, seed=seed, **options)
        self._frozen_reference: Frozen | None = None
        self._fit(reference)
        self._calibrate()
        self._reset_window()

    # ------------------------------------------------------------------ setup

    def _setup(self, *, window_size: int, alpha: float, sliding: bool, seed: int) -> None:
        if int(window_size) < 2:
            raise ValueError("window_size must be at least 2")
        if not 0.0 < float(alpha) < 1.0:
            raise ValueError("alpha must be in (0, 1)")
        self.window_size = int(window_size)
        self.alpha = float(alpha)
        self.sliding = bool(sliding)
        self.seed = int(seed)
        # Sliding: a quarter window between tests is a compromise between
        # detection delay and the number of (correlated) tests to pay alpha for.
        self.step = max(1, self.window_size // 4) if self.sliding else self.window_size

    def _params(self) -> dict[str, Any]:
        """Constructor keywords (minus the reference); subclasses add options."""
        return {
            "window_size": self.window_size,
            "alpha": self.alpha,
            "sliding": self.sliding,
            "seed": self.seed,
        }

    def _reset_window(self) -> None:
        self._buf: np.ndarray = self._empty_values()
        self._buf_pos = np.empty(0, dtype=np.int64)
        self._n_seen = 0  # every value consumed, missing included
        self._n_valid = 0  # non-missing values consumed
        self._n_missing = 0

    # ------------------------------------------------- subclass responsibilities

    @abc.abstractmethod
    def _fit(self, reference: np.ndarray) -> None:
        """Summarise the reference sample (called once, at construction)."""

    @abc.abstractmethod
    def _reference_state(self) -> dict[str, Any]:
        """The reference summary as plain data."""

    def _calibrate(self) -> None:
        """Hook: derive thresholds from the reference summary. Runs after
        ``_fit`` and after ``_load_reference``, so a restored detector
        calibrates exactly as a fresh one."""

    @abc.abstractmethod
    def _load_reference(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`_reference_state`."""

    @abc.abstractmethod
    def _empty_values(self) -> np.ndarray:
        """An empty buffer of the right dtype/shape."""

    @abc.abstractmethod
    def _clean(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(keep, cleaned)``: a boolean mask over the batch of values
        that enter the window, and those values ready for ``_test``."""

    @abc.abstractmethod
    def _test(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, PValues | None]:
        """Statistics for ``k`` windows stacked on axis 0: ``(statistic,
        threshold, p_values)``; the first two of shape ``(k,)``, the last a
        function from window indices to p-values (None if the test has none).
        P-values are computed only for the windows that get a result: some
        (``scipy.stats.kstwo.sf``) cost far more than the statistic."""

    @abc.abstractmethod
    def _explain(
        self,
        window: np.ndarray,
        positions: np.ndarray,
        batch_start: int,
        statistic: float,
        threshold: float,
        detected: bool,
        p_value: float | None,
    ) -> tuple[str, dict[str, Any], tuple[int, ...]]:
        """``(detail, extra, examples)`` for one tested window."""

    @abc.abstractmethod
    def _values_to_state(self, values: np.ndarray) -> list:
        """Buffer values as plain data."""

    @abc.abstractmethod
    def _values_from_state(self, values: list) -> np.ndarray:
        """Inverse of :meth:`_values_to_state`."""

    # --------------------------------------------------------------- updating

    @property
    def n_seen(self) -> int:
        return self._n_seen

    @property
    def n_missing(self) -> int:
        return self._n_missing

    def update(self, values: np.ndarray) -> DriftResult | None:
        results = self._update(values, explain_all=False)
        return results[-1] if results else None

    def update_all(self, values: np.ndarray) -> list[DriftResult]:
        """Like :meth:`update` but return a result for every completed window."""
        return self._update(values, explain_all=True)

    def _update(self, values: np.ndarray, explain_all: bool) -> list[DriftResult]:
        values = np.asarray(values)
        batch_start = self._n_seen
        n = len(values)
        keep, cleaned = self._clean(values)
        positions = batch_start + np.flatnonzero(keep)
        self._n_seen += n
        self._n_missing += int(n - len(positions))

        allv = np.concatenate([self._buf, cleaned]) if len(self._buf) else cleaned
        allp = np.concatenate([self._buf_pos, positions])
        # Non-missing count before the buffer's first value.
        first = self._n_valid - len(self._buf)
        self._n_valid += len(positions)
        W = self.window_size

        if self.sliding:
            # Tests happen when the non-missing count c satisfies c >= W and
            # (c - W) % step == 0; the window is values [c - W, c).
            lo = self._n_valid - len(positions) + 1  # first new count
            hi = self._n_valid
            c0 = max(lo, W)
            c0 += (-(c0 - W)) % self.step
            ends = np.arange(c0, hi + 1, self.step, dtype=np.int64)
            starts = ends - W - first
            idx = starts[:, None] + np.arange(W)
            windows, wpos = allv[idx], allp[idx]
            keep_from = max(0, len(allv) - W)  # the next window needs <= W - 1 old values
        else:
            k = len(allv) // W
            windows = allv[: k * W].reshape((k, W) + allv.shape[1:])
            wpos = allp[: k * W].reshape(k, W)
            keep_from = k * W
        self._buf = allv[keep_from:].copy()
        self._buf_pos = allp[keep_from:].copy()

        k = len(windows)
        if k == 0:
            return []
        stat, thr, pval = self._test(windows)
        detected = stat > thr
        n_det = int(detected.sum())
        todo = np.arange(k) if explain_all else np.array([k - 1])
        p_todo = None if pval is None else pval(todo)
        results = []
        for j, i in enumerate(todo):
            p_i = None if p_todo is None else float(p_todo[j])
            detail, extra, examples = self._explain(
                windows[i], wpos[i], batch_start, float(stat[i]), float(thr[i]), bool(detected[i]), p_i
            )
            span = int(wpos[i, -1] - wpos[i, 0] + 1)
            extra.update(
                window_size=W,
                alpha=self.alpha,
                missing=span - W,
                missing_total=self._n_missing,
                tests_in_batch=k,
                detections_in_batch=n_det,
            )
            results.append(
                DriftResult(
                    statistic=float(stat[i]),
                    threshold=float(thr[i]),
                    detected=bool(detected[i]),
                    n_seen=int(wpos[i, -1]) + 1,
                    p_value=p_i,
                    change_index=int(wpos[i, 0]),
                    examples=tuple(int(e) for e in examples),
                    detail=detail,
                    extra=extra,
                )
            )
        return results

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        if self._frozen_reference is None:
            # fitted once, never changed: the same object every time, so a
            # checkpoint writer can store it once (monitor/engine/state.py)
            self._frozen_reference = Frozen(self._reference_state())
        return {
            "name": self.name,
            "version": STATE_VERSION,
            "params": self._params(),
            "reference": self._frozen_reference,
            "buffer": self._values_to_state(self._buf),
            "buffer_positions": self._buf_pos.tolist(),
            "n_seen": self._n_seen,
            "n_valid": self._n_valid,
            "n_missing": self._n_missing,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        if state.get("name") != cls.name:
            raise ValueError(f"state is for detector {state.get('name')!r}, not {cls.name!r}")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported state version {state.get('version')!r}")
        obj = cls.__new__(cls)
        obj._setup(**state["params"])
        obj._load_reference(state["reference"])
        obj._frozen_reference = state["reference"] if isinstance(state["reference"], Frozen) else None
        obj._calibrate()
        obj._buf = obj._values_from_state(state["buffer"])
        obj._buf_pos = np.asarray(state["buffer_positions"], dtype=np.int64)
        obj._n_seen = int(state["n_seen"])
        obj._n_valid = int(state["n_valid"])
        obj._n_missing = int(state["n_missing"])
        return obj

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({params})"


# --------------------------------------------------------------------------
# Numeric features


def quantile_bins(reference: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Bin edges from reference quantiles that survive ties.

    Bins are right-closed intervals ``(e[i-1], e[i]]`` with open ends, so the
    bin of ``x`` is ``np.searchsorted(edges, x, side="left")`` and there are
    ``len(edges) + 1`` bins. A value holding at least ``1/n_bins`` of the
    reference (an *atom*: zero-inflated or constant features) gets a bin of
    its own, ``(nextafter(a, -inf), a]``, with bins for "below" and "above"
    it, so a constant feature still detects values moving either way; the
    remaining mass is cut at its own quantiles into about as many bins as it
    deserves. Bins with no reference mass are kept: they are where values
    outside the reference's support land.

    >>> quantile_bins(np.arange(10.0), 5).round(2).tolist()
    [1.8, 3.6, 5.4, 7.2]
    >>> quantile_bins(np.full(20, 3.0), 10).tolist()  # bins: < 3, == 3, > 3
    [2.9999999999999996, 3.0]
    >>> describe_bin(quantile_bins(np.full(20, 3.0)), 1)
    'values equal to 3'
    """
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    n = len(ref)
    uniq, counts = np.unique(ref, return_counts=True)
    atoms = uniq[counts * n_bins >= n]
    rest = ref[~np.isin(ref, atoms)]
    edges = [atoms, np.nextafter(atoms, -np.inf)]
    if len(rest):
        n_rest = max(1, min(n_bins - len(atoms), round(len(rest) / n * n_bins)))
        edges.append(np.quantile(rest, np.arange(1, n_rest) / n_rest))
    return np.unique(np.concatenate(edges))


def describe_bin(edges: np.ndarray, i: int) -> str:
    """Human wording of bin ``i`` of :func:`quantile_bins` edges."""

    def fmt(x: float) -> str:
        return f"{x:.4g}"

    m = len(edges)
    is_atom = 0 < i < m and edges[i - 1] == np.nextafter(edges[i], -np.inf)
    if is_atom:
        return f"values equal to {fmt(edges[i])}"
    below_atom = i < m - 1 and edges[i] == np.nextafter(edges[i + 1], -np.inf)
    upper = f"< {fmt(edges[i + 1])}" if below_atom else (f"<= {fmt(edges[i])}" if i < m else "")
    if i == 0:
        return f"values {upper}" if m else "all values"
    if i == m:
        return f"values > {fmt(edges[i - 1])}"
    if below_atom:
        return f"values in ({fmt(edges[i - 1])}, {fmt(edges[i + 1])})"
    return f"values in ({fmt(edges[i - 1])}, {fmt(edges[i])}]"


def row_sum(x: np.ndarray) -> np.ndarray:
    """Sum along axis 1, in order. numpy's pairwise ``sum`` blocks depend on
    the array's shape, so a window's statistic could change in the last bit
    with the number of windows in its batch; results must not."""
    return np.cumsum(x, axis=1)[:, -1] if x.shape[1] else np.zeros(x.shape[0])


def bin_counts(windows: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin for each row of a ``(k, W)`` stack: ``(k, len(edges)+1)``."""
    k = windows.shape[0]
    nb = len(edges) + 1
    b = np.searchsorted(edges, windows, side="left")
    flat = (b + nb * np.arange(k)[:, None]).ravel()
    return np.bincount(flat, minlength=k * nb).reshape(k, nb)


class NumericWindowDetector(WindowedTwoSampleDetector):
    """Two-sample detector on a float column (NaN and +-inf are missing).

    Keeps a small reference summary (mean, std, median, quantile bins) used to
    explain results; subclasses add what their statistic needs.
    """

    def _setup(self, *, n_bins: int = 10, **base: Any) -> None:
        super()._setup(**base)
        if int(n_bins) < 1:
            raise ValueError("n_bins must be >= 1")
        self.n_bins = int(n_bins)

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "n_bins": self.n_bins}

    def _empty_values(self) -> np.ndarray:
        return np.empty(0, dtype=np.float64)

    def _clean(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"{type(self).__name__} takes a 1-d batch, got shape {values.shape}")
        # +-inf cannot be checkpointed as strict JSON and breaks means and
        # distances; it is a data-quality problem, counted with the missing.
        keep = np.isfinite(values)
        return keep, values[keep]

    def _values_to_state(self, values: np.ndarray) -> list:
        return values.tolist()

    def _values_from_state(self, values: list) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    def _fit(self, reference: np.ndarray) -> None:
        ref = np.asarray(reference, dtype=np.float64).ravel()
        ref = np.sort(ref[np.isfinite(ref)])
        if len(ref) < 2:
            raise ValueError("the reference needs at least 2 finite values")
        self._ref_n = len(ref)
        self._ref_mean = float(ref.mean())
        self._ref_std = float(ref.std())
        self._ref_median = float(np.median(ref))
        self._edges = quantile_bins(ref, self.n_bins)
        self._ref_counts = bin_counts(ref[None, :], self._edges)[0]
        self._fit_sorted(ref)

    def _fit_sorted(self, ref: np.ndarray) -> None:
        """Subclass hook: the finite reference values, sorted."""

    def _occupied_bins_dof(self) -> int:
        """Degrees of freedom of a binned comparison with the reference.

        Bins without reference mass get no window mass either under no drift,
        so they add no degrees of freedom. A constant reference leaves 0 dof;
        1 keeps a single stray value from alarming."""
        return max(1, int((self._ref_counts > 0).sum()) - 1)

    def _reference_state(self) -> dict[str, Any]:
        return {
            "n": self._ref_n,
            "mean": self._ref_mean,
            "std": self._ref_std,
            "median": self._ref_median,
            "edges": self._edges.tolist(),
            "counts": self._ref_counts.tolist(),
        }

    def _load_reference(self, state: dict[str, Any]) -> None:
        self._ref_n = int(state["n"])
        self._ref_mean = float(state["mean"])
        self._ref_std = float(state["std"])
        self._ref_median = float(state["median"])
        self._edges = np.asarray(state["edges"], dtype=np.float64)
        self._ref_counts = np.asarray(state["counts"], dtype=np.int64)

    #: how the p-value is introduced in a detail ("p<=" for bounds)
    p_prefix: ClassVar[str] = "p="

    def _explain(self, window, positions, batch_start, statistic, threshold, detected, p_value):
        counts = bin_counts(window[None, :], self._edges)[0]
        w_share = counts / len(window)
        r_share = self._ref_counts / self._ref_n
        b = int(np.argmax(w_share - r_share))
        where = describe_bin(self._edges, b)
        wm = float(window.mean())
        extra = {
            "reference_mean": self._ref_mean,
            "window_mean": wm,
            "reference_std": self._ref_std,
            "window_std": float(window.std()),
            "excess_bin": where,
            "reference_share": float(r_share[b]),
            "window_share": float(w_share[b]),
        }
        # Examples: values of this batch in the most over-represented bin,
        # farthest from the reference median first.
        in_batch = positions >= batch_start
        in_bin = np.searchsorted(self._edges, window, side="left") == b
        cand = np.flatnonzero(in_batch & in_bin)
        order = np.argsort(-np.abs(window[cand] - self._ref_median), kind="stable")[:5]
        examples = tuple((positions[cand[order]] - batch_start).tolist())
        cmp = ">" if detected else "<="
        test = f"{self.stat_label}={statistic:.3g} {cmp} {threshold:.3g}"
        test += fmt_p(p_value).replace("p=", self.p_prefix)
        if detected:
            detail = (
                f"mean moved from {self._ref_mean:.3g} to {wm:.3g}; {where} went from "
                f"{r_share[b]:.0%} of the reference to {w_share[b]:.0%} of the window ({test})"
            )
        else:
            detail = f"no drift: {test} (mean {wm:.3g} vs reference {self._ref_mean:.3g})"
        return detail, extra, examples


# --------------------------------------------------------------------------
# Categorical features

OTHER = "__other__"
UNSEEN = "__unseen__"


def categorical_missing(values: np.ndarray) -> np.ndarray:
    """Mask of missing entries in an object array: ``None`` or float NaN."""
    values = np.asarray(values, dtype=object)
    # ``v != v`` is True only for NaN; both comparisons run in numpy's C loop.
    return np.asarray((values == None) | (values != values), dtype=bool)  # noqa: E711


def as_str(values: np.ndarray) -> np.ndarray:
    """Non-missing categorical values as a numpy unicode array."""
    out = np.asarray(values).astype(str)
    return out if len(out) else np.empty(0, dtype="<U1")


def fmt_p(p: float | None) -> str:
    if p is None:
        return ""
    return f", p={p:.2g}" if p > 0 else ", p<1e-300"


def fmt_share(x: float) -> str:
    return f"{x:.0%}" if x >= 0.01 or x == 0 else f"{x:.2%}"

__all__ = [
    "WindowedTwoSampleDetector",
    "NumericWindowDetector",
    "quantile_bins",
    "describe_bin",
    "bin_counts",
    "row_sum",
    "categorical_missing",
    "as_str",
    "OTHER",
    "UNSEEN",
    "fmt_p",
    "fmt_share",
]
