"""Chi-square (or G) test of a categorical column against a reference sample.

Categories come from the reference: the ``max_categories`` most frequent ones
that are common enough for the chi-square approximation (expected count in a
window of at least ``min_expected``) get a bucket each, rarer reference values
share ``"__other__"``, and values never seen in the reference land in
``"__unseen__"``. Each window's bucket counts are compared with the
reference's in a 2 x k contingency table (``scipy.stats.chi2_contingency``
without continuity correction; ``g_test=True`` uses the log-likelihood ratio
``G``), with ``k - 1`` degrees of freedom over the buckets that are non-empty
in the reference or the window.

Why a contingency table and not a goodness-of-fit test against the reference
proportions: the reference is a sample too. Treating its proportions as exact
makes the statistic about ``1 + W / n_ref`` times too large under no drift (2x
when reference and window have the same size), which at ``alpha = 1e-7`` turns
a rare false alarm into a daily one. The contingency statistic accounts for
both samples and tends to the goodness-of-fit one as ``n_ref`` grows.

Why no pseudo-count for ``"__unseen__"``: in the contingency table a bucket
that is empty in the reference still counts; one unseen value adds about
``n_ref / W`` to the statistic, so a handful in a window is detected. The
flip side: a feature whose long tail was not covered by the reference will
alarm on tail values. Give it a larger reference, or ``unseen=False`` to
pool unseen values with ``"__other__"``.

Values are compared as strings (``np.asarray(v).astype(str)``): feed the
reference and the stream with the same types (``1`` and ``1.0`` differ).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from detectors.drift.window import (
    OTHER,
    UNSEEN,
    WindowedTwoSampleDetector,
    as_str,
    categorical_missing,
    fmt_p,
    fmt_share,
    row_sum,
)


class ChiSquareDrift(WindowedTwoSampleDetector):
    """Pearson chi-square drift detector for a categorical column.

    Parameters
    ----------
    reference
        Object/str array of reference values (``None``/NaN ignored).
    window_size, alpha, sliding, seed
        As for every two-sample detector (see :mod:`detectors.drift.window`);
        ``seed`` is unused.
    max_categories
        At most this many reference categories get their own bucket.
    min_expected
        A category needs ``window_size * reference_share >= min_expected``
        for its own bucket (small expected counts make the chi-square tail
        far heavier than the asymptotic one at tiny ``alpha``).
    g_test
        Use the G statistic (log-likelihood ratio) instead of Pearson's.
    unseen
        Keep a separate bucket for values never seen in the reference.
    max_lookup
        At most this many distinct reference values are remembered (to tell
        "rare" from "never seen"); beyond that, unseen values count as
        ``"__other__"``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> langs = np.array(["en", "de", "fr", "es"], dtype=object)
    >>> ref = rng.choice(langs, p=[0.7, 0.2, 0.07, 0.03], size=5000)
    >>> det = ChiSquareDrift(ref, window_size=1000, alpha=1e-6)
    >>> det.update(rng.choice(langs, p=[0.7, 0.2, 0.07, 0.03], size=1000)).detected
    False
    >>> r = det.update(rng.choice(langs, p=[0.4, 0.15, 0.42, 0.03], size=1000))
    >>> r.detected, r.extra["top_category"]
    (True, 'fr')
    >>> print(r.detail)
    category 'fr' rose from 7% to 45% of values (chi2=1.05e+03 > 30.7, p=1.1e-226)
    >>> batch = rng.choice(langs, p=[0.7, 0.2, 0.07, 0.03], size=1000)
    >>> batch[::100] = "xx"                       # 10 values never seen before
    >>> r = det.update(batch)
    >>> r.detected, r.extra["top_category"], r.examples
    (True, 'xx', (0, 100, 200, 300, 400))
    """

    name = "chi2"

    def __init__(
        self,
        reference: np.ndarray,
        window_size: int = 1000,
        alpha: float = 1e-6,
        *,
        sliding: bool = False,
        seed: int = 0,
        max_categories: int = 50,
        min_expected: float = 5.0,
        g_test: bool | None = None,
        unseen: bool = True,
        max_lookup: int = 10_000,
    ) -> None:
        super().__init__(
            reference,
            window_size,
            alpha,
            sliding=sliding,
            seed=seed,
            max_categories=max_categories,
            min_expected=min_expected,
            g_test=g_test,
            unseen=unseen,
            max_lookup=max_lookup,
        )

    #: default for ``g_test`` when not given (GTestDrift flips it)
    default_g_test = False

    def _setup(
        self,
        *,
        max_categories: int = 50,
        min_expected: float = 5.0,
        g_test: bool | None = None,
        unseen: bool = True,
        max_lookup: int = 10_000,
        **base: Any,
    ) -> None:
        super()._setup(**base)
        if int(max_categories) < 1:
            raise ValueError("max_categories must be >= 1")
        self.max_categories = int(max_categories)
        self.min_expected = float(min_expected)
        self.g_test = self.default_g_test if g_test is None else bool(g_test)
        self.unseen = bool(unseen)
        self.max_lookup = int(max_lookup)

    @property
    def stat_label(self) -> str:  # type: ignore[override]
        return "G" if self.g_test else "chi2"

    def _params(self) -> dict[str, Any]:
        return {
            **super()._params(),
            "max_categories": self.max_categories,
            "min_expected": self.min_expected,
            "g_test": self.g_test,
            "unseen": self.unseen,
            "max_lookup": self.max_lookup,
        }

    # ------------------------------------------------------------- reference

    def _fit(self, reference: np.ndarray) -> None:
        reference = np.asarray(reference, dtype=object).ravel()
        ref = as_str(reference[~categorical_missing(reference)])
        if len(ref) == 0:
            raise ValueError("the reference has no non-missing values")
        uniq, counts = np.unique(ref, return_counts=True)
        order = np.lexsort((uniq, -counts))  # most frequent first, ties by name
        uniq, counts = uniq[order], counts[order]
        n = len(ref)
        common = counts * self.window_size / n >= self.min_expected
        n_kept = int(min(self.max_categories, common.sum()))
        names = uniq[:n_kept].tolist()
        lookup_complete = len(uniq) <= self.max_lookup
        # Values outside the lookup table can be rare reference values or new
        # ones; only a complete table can tell them apart.
        need_other = n_kept < len(uniq) or not lookup_complete or not self.unseen
        if need_other:
            names.append(OTHER)
        if self.unseen and lookup_complete:
            names.append(UNSEEN)
        bucket = {name: i for i, name in enumerate(names)}
        fallback = bucket.get(UNSEEN, bucket.get(OTHER))
        lk = min(len(uniq), self.max_lookup)
        # Kept categories are buckets 0..n_kept-1 in frequency order; the
        # remaining remembered values are rare ones, pooled.
        lk_ids = np.concatenate(
            [np.arange(n_kept), np.full(lk - n_kept, bucket.get(OTHER, -1))]
        ).astype(np.int64)
        self._load_reference(
            {
                "n": int(n),
                "buckets": names,
                "fallback": fallback,
                "lookup_values": uniq[:lk].tolist(),
                "lookup_buckets": lk_ids.tolist(),
                "lookup_counts": counts[:lk].tolist(),
                "bucket_counts": np.bincount(
                    self._map(ref, uniq[:lk], lk_ids, fallback), minlength=len(names)
                ).tolist(),
            }
        )

    def _reference_state(self) -> dict[str, Any]:
        return {
            "n": self._ref_n,
            "buckets": self._buckets,
            "fallback": self._fallback,
            "lookup_values": self._lk_sorted.tolist(),
            "lookup_buckets": self._lk_ids.tolist(),
            "lookup_counts": self._lk_counts.tolist(),
            "bucket_counts": self._ref_counts.tolist(),
        }

    def _load_reference(self, state: dict[str, Any]) -> None:
        self._ref_n = int(state["n"])
        self._buckets = list(state["buckets"])
        self._fallback = state["fallback"]
        vals = np.asarray(state["lookup_values"], dtype=str)
        # Sorted by value for searchsorted (the state may list them by count).
        order = np.argsort(vals, kind="stable")
        self._lk_sorted = vals[order]
        self._lk_ids = np.asarray(state["lookup_buckets"], dtype=np.int64)[order]
        self._lk_counts = np.asarray(state["lookup_counts"], dtype=np.int64)[order]
        self._ref_counts = np.asarray(state["bucket_counts"], dtype=np.int64)

    @staticmethod
    def _map(values, lk_values, lk_ids, fallback) -> np.ndarray:
        """Bucket id of each value (any shape), vectorised via searchsorted."""
        order = np.argsort(lk_values, kind="stable")
        srt, ids = np.asarray(lk_values)[order], np.asarray(lk_ids)[order]
        return ChiSquareDrift._lookup(values, srt, ids, fallback)

    @staticmethod
    def _lookup(values, srt, ids, fallback) -> np.ndarray:
        if len(srt) == 0:
            return np.full(np.shape(values), fallback, dtype=np.int64)
        i = np.minimum(np.searchsorted(srt, values), len(srt) - 1)
        return np.where(srt[i] == values, ids[i], fallback)

    def _buckets_of(self, values: np.ndarray) -> np.ndarray:
        return self._lookup(values, self._lk_sorted, self._lk_ids, self._fallback)

    # ---------------------------------------------------------------- window

    def _empty_values(self) -> np.ndarray:
        return np.empty(0, dtype="<U1")

    def _clean(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = np.asarray(values, dtype=object)
        if values.ndim != 1:
            raise ValueError(f"{type(self).__name__} takes a 1-d batch, got shape {values.shape}")
        keep = ~categorical_missing(values)
        return keep, as_str(values[keep])

    def _values_to_state(self, values: np.ndarray) -> list:
        return values.tolist()

    def _values_from_state(self, values: list) -> np.ndarray:
        return np.asarray(values, dtype=str) if values else self._empty_values()

    # ------------------------------------------------------------------ test

    def _counts(self, windows: np.ndarray) -> np.ndarray:
        k = windows.shape[0]
        K = len(self._buckets)
        b = self._buckets_of(windows) + K * np.arange(k)[:, None]
        return np.bincount(b.ravel(), minlength=k * K).reshape(k, K)

    def _test(self, windows: np.ndarray):
        obs = self._counts(windows).astype(np.float64)
        ref = self._ref_counts.astype(np.float64)[None, :]
        n, w = ref.sum(), float(windows.shape[1])
        col = obs + ref
        used = col > 0
        safe = np.where(used, col, 1.0)
        e_ref, e_win = safe * n / (n + w), safe * w / (n + w)
        if self.g_test:
            with np.errstate(divide="ignore", invalid="ignore"):
                terms = np.where(ref > 0, ref * np.log(ref / e_ref), 0.0) + np.where(
                    obs > 0, obs * np.log(obs / e_win), 0.0
                )
            stat = 2.0 * row_sum(np.where(used, terms, 0.0))
        else:
            terms = (ref - e_ref) ** 2 / e_ref + (obs - e_win) ** 2 / e_win
            stat = row_sum(np.where(used, terms, 0.0))
        stat = np.maximum(stat, 0.0)  # G can be -1e-13 from rounding
        dof = used.sum(axis=1) - 1
        ok = dof >= 1
        d = np.maximum(dof, 1)
        # isf once per distinct dof (there are at most two: with and
        # without an "__unseen__" column).
        ds, inv = np.unique(d, return_inverse=True)
        thr = np.where(ok, stats.chi2.isf(self.alpha, ds)[inv.ravel()], np.inf)
        return stat, thr, lambda i: np.where(ok[i], stats.chi2.sf(stat[i], d[i]), 1.0)

    # --------------------------------------------------------------- explain

    def _explain(self, window, positions, batch_start, statistic, threshold, detected, p_value):
        W = len(window)
        buckets = self._buckets_of(window)
        counts = np.bincount(buckets, minlength=len(self._buckets))
        w_share = counts / W
        r_share = self._ref_counts / self._ref_n
        # The bucket that over-contributes most to the Pearson statistic: a
        # new category at 1% says more than a common one going 70% -> 75%.
        pooled = (counts + self._ref_counts) / (W + self._ref_n)
        with np.errstate(divide="ignore", invalid="ignore"):
            contrib = np.where(pooled > 0, (w_share - r_share) ** 2 / pooled, 0.0)
        b = int(np.argmax(np.where(w_share > r_share, contrib, -1.0)))
        bucket = self._buckets[b]
        if bucket in (OTHER, UNSEEN) and counts[b] > 0:
            # Name the actual value behind a pooled bucket.
            vals, c = np.unique(window[buckets == b], return_counts=True)
            cat = str(vals[np.argmax(c)])
            ws = float(c.max() / W)
            i = np.searchsorted(self._lk_sorted, cat)
            found = i < len(self._lk_sorted) and self._lk_sorted[i] == cat
            rs = float(self._lk_counts[i] / self._ref_n) if found else 0.0
        else:
            cat, ws, rs = bucket, float(w_share[b]), float(r_share[b])
        cmp = ">" if detected else "<="
        test = f"{self.stat_label}={statistic:.3g} {cmp} {threshold:.3g}{fmt_p(p_value)}"
        if detected:
            if rs == 0.0:
                detail = f"category {cat!r}, never seen in the reference, rose to {fmt_share(ws)} of values ({test})"
            else:
                detail = f"category {cat!r} rose from {fmt_share(rs)} to {fmt_share(ws)} of values ({test})"
        else:
            detail = f"no drift: {test} (largest rise: {cat!r} {fmt_share(rs)} -> {fmt_share(ws)})"
        in_batch = positions >= batch_start
        ex = np.flatnonzero(in_batch & (window == cat))[:5]
        extra = {
            "top_category": cat,
            "reference_share": rs,
            "window_share": ws,
            "bucket": bucket,
            "n_buckets": len(self._buckets),
        }
        return detail, extra, tuple((positions[ex] - batch_start).tolist())


class GTestDrift(ChiSquareDrift):
    """:class:`ChiSquareDrift` with the G (log-likelihood ratio) statistic.

    >>> import numpy as np
    >>> ref = np.array(["a"] * 600 + ["b"] * 400, dtype=object)
    >>> det = GTestDrift(ref, window_size=500, alpha=1e-6)
    >>> r = det.update(np.array(["a"] * 100 + ["b"] * 400, dtype=object))
    >>> r.detected, r.extra["top_category"], det.g_test
    (True, 'b', True)
    """

    name = "gtest"
    default_g_test = True
