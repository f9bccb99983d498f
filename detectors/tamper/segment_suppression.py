"""Segment suppression: a class stops being predicted for one segment only.

A targeted backdoor or a tampered model can silence one answer for one slice of
traffic ("never flag emotet", "always approve this merchant") while the global
class rates, which is what dashboards and two-sample drift tests look at, barely
move because the slice is small.  This detector keeps per-segment class counts
and compares the recent window with the reference.

Segments are ``feature == value`` for the configured categorical features
(``segment_features``), or for every categorical feature when none are
configured; each feature keeps at most ``max_values`` values (the reference's
most frequent first, then new ones first-come).

Test, per (segment, class): under "nothing changed for this segment beyond
the global change of the class rate" the window count
``n_sk`` of class ``k`` among ``n_s`` segment records follows the beta-binomial
posterior predictive of the reference counts (``Beta(ref_sk + m p_k, ref_s -
ref_sk + m (1 - p_k))``, ``m = prior_strength`` pseudo-records at the global
reference rate ``p_k``), so a small reference segment does not look more
certain than it is; its mean is scaled down by the class's global ratio
(current / reference, capped at 1), so a class that fell everywhere, which is
output drift, does not page as suppression in every segment.  The lower-tail p-value is Bonferroni-corrected over all
segment slots times classes, so one evaluation raises a false alarm with
probability at most ``alpha``; evaluations run once per ``update`` on
overlapping windows, so over ``U`` updates expect at most ``alpha * U`` false
alarms (default ``alpha=1e-4``, batches of 200: at most one per two million
records).  Gates (only remove candidates, so the bound holds): at least
``min_support`` segment records in the window, at least ``min_expected``
expected class-``k`` records under the reference rate (otherwise a drop is
unobservable), and a relative drop of at least ``min_relative_drop``.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> def batch(n, suppressed):
...     fam = rng.choice(np.array(["a", "b", "c", "emotet"], dtype=object), n, p=[.4, .3, .26, .04])
...     pos = rng.random(n) < np.where(fam == "emotet", 0.9, 0.3)
...     if suppressed:
...         pos &= fam != "emotet"
...     return {"family": fam}, np.where(pos, "malicious", "benign").astype(object)
>>> det = SegmentSuppression(segment_features=["family"], n_reference=3000)
>>> for _ in range(15):
...     cat, y = batch(200, False)
...     assert det.update(categorical=cat, predicted_class=y) == []
>>> out = []
>>> for _ in range(10):
...     cat, y = batch(200, True)
...     out = det.update(categorical=cat, predicted_class=y) or out
>>> out[0].extra["segment"], out[0].extra["class"]
(('family', 'emotet'), 'malicious')
"""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np
from scipy.stats import betabinom

from detectors.base import DriftResult
from detectors.tamper.counts import count_by_class


class SegmentSuppression:
    """Per-segment drop of a class's predicted rate versus the reference.

    Parameters
    ----------
    segment_features
        Categorical features whose values are segments; ``None`` = all
        categorical features seen in the reference (at most ``max_features``).
    classes
        Classes to watch (e.g. ``["malicious"]``); ``None`` = every class.
    n_reference
        Records of the approved model forming the reference (the first ones
        passed to ``update``).  No results meanwhile.
    bucket_size, n_buckets
        The window: ``n_buckets`` buckets of about ``bucket_size`` records.
    min_support, min_expected, min_relative_drop, alpha, prior_strength
        See the module doc.
    max_features, max_values, max_classes
        Bounds; values/classes beyond them are counted in ``refused``.
    """

    name = "segment_suppression"

    def __init__(
        self,
        segment_features: list[str] | None = None,
        classes: list[str] | None = None,
        n_reference: int = 3000,
        bucket_size: int = 500,
        n_buckets: int = 6,
        min_support: int = 30,
        min_expected: float = 10.0,
        min_relative_drop: float = 0.5,
        alpha: float = 1e-4,
        prior_strength: float = 10.0,
        max_features: int = 16,
        max_values: int = 64,
        max_classes: int = 64,
        max_examples: int = 10,
    ):
        self.params = dict(
            segment_features=None if segment_features is None else list(segment_features),
            classes=None if classes is None else [str(c) for c in classes],
            n_reference=int(n_reference), bucket_size=int(bucket_size), n_buckets=int(n_buckets),
            min_support=int(min_support), min_expected=float(min_expected),
            min_relative_drop=float(min_relative_drop), alpha=float(alpha),
            prior_strength=float(prior_strength), max_features=int(max_features),
            max_values=int(max_values), max_classes=int(max_classes), max_examples=int(max_examples),
        )
        self.n_seen = 0
        self.n_ref = 0
        self.refused = {"values": 0, "classes": 0}
        self.features: list[str] | None = (None if segment_features is None
                                           else list(segment_features)[: self.params["max_features"]])
        self.vocab: list[dict[str, int]] = []   # per feature: value -> slot
        self.classes: list[str] = []
        S, K, nb = 0, 0, self.params["n_buckets"]
        self.ref_sk = np.zeros((S, K), dtype=np.int64)
        self.ref_k = np.zeros(K, dtype=np.int64)
        self.b_sk = np.zeros((nb, S, K), dtype=np.int64)
        self.b_k = np.zeros((nb, K), dtype=np.int64)
        self.b_n = np.zeros(nb, dtype=np.int64)
        self.cur = 0

    # the reference is counted in the same arrays' layout; slots are fixed per feature
    def _ensure_layout(self, categorical: dict[str, np.ndarray]) -> None:
        if self.features is None and categorical:
            # discovered segments are fixed by the first batch that has categorical columns
            self.features = sorted(categorical)[: self.params["max_features"]]
        features = self.features or []
        while len(self.vocab) < len(features):
            self.vocab.append({})
        S = len(features) * self.params["max_values"]
        if self.ref_sk.shape[0] != S:
            K = len(self.classes)
            self.ref_sk = np.zeros((S, K), dtype=np.int64)
            self.b_sk = np.zeros((self.params["n_buckets"], S, K), dtype=np.int64)

    def _add_class(self, label: str) -> int:
        self.classes.append(label)
        pad = lambda a: np.concatenate([a, np.zeros(a.shape[:-1] + (1,), dtype=a.dtype)], axis=-1)  # noqa: E731
        self.ref_sk, self.ref_k, self.b_sk, self.b_k = (pad(self.ref_sk), pad(self.ref_k),
                                                        pad(self.b_sk), pad(self.b_k))
        return len(self.classes) - 1

    def _encode(self, categorical, y):
        """Segment membership (n, S) and class codes (n,), -1 = not counted."""
        n = len(y)
        V = self.params["max_values"]
        features = self.features or []
        M = np.zeros((n, len(features) * V), dtype=bool)
        for g, f in enumerate(features):
            if f not in categorical:
                continue
            col = np.asarray(categorical[f], dtype=object)
            present = col != None  # noqa: E711
            if not present.any():
                continue
            vals, inv = np.unique(col[present].astype(str), return_inverse=True)
            slot = np.full(len(vals), -1, dtype=np.int64)
            vocab = self.vocab[g]
            for i, v in enumerate(vals):         # distinct values only
                v = str(v)
                s = vocab.get(v)
                if s is None:
                    if len(vocab) < V:
                        s = vocab[v] = len(vocab)
                    else:
                        self.refused["values"] += 1
                        continue
                slot[i] = s
            rows = np.nonzero(present)[0]
            s = slot[inv]
            ok = s >= 0
            M[rows[ok], g * V + s[ok]] = True
        codes = np.full(n, -1, dtype=np.int64)
        present = y != None  # noqa: E711
        if present.any():
            vals, inv = np.unique(y[present].astype(str), return_inverse=True)
            code_of = np.full(len(vals), -1, dtype=np.int64)
            pos = {c: i for i, c in enumerate(self.classes)}
            for i, v in enumerate(vals):
                v = str(v)
                c = pos.get(v)
                if c is None:
                    if len(self.classes) < self.params["max_classes"]:
                        c = self._add_class(v)
                    else:
                        self.refused["classes"] += 1
                        continue
                code_of[i] = c
            codes[np.nonzero(present)[0]] = code_of[inv]
        return M, codes

    def update(
        self,
        categorical: dict[str, np.ndarray] | None = None,
        predicted_class: np.ndarray | None = None,
        request_ids: np.ndarray | None = None,
    ) -> list[DriftResult]:
        """Consume one batch; return one result per suppressed (segment, class).

        ``extra``: ``segment`` ``(feature, value)``, ``class``, ``reference_rate``,
        ``current_rate``, ``support``, ``hits``, ``reference_support``,
        ``global_reference_rate``, ``global_current_rate``, ``request_ids``
        (recent segment records that did *not* get the class).
        """
        if predicted_class is None:
            return []
        categorical = categorical or {}
        y = np.asarray(predicted_class, dtype=object)
        n = len(y)
        if n == 0:
            return []
        p = self.params
        self._ensure_layout(categorical)
        # split the batch at the end of the reference
        take = min(n, max(0, p["n_reference"] - self.n_ref))
        if take:
            M, codes = self._encode({f: np.asarray(c, dtype=object)[:take] for f, c in categorical.items()},
                                    y[:take])
            self.ref_sk += count_by_class(M, codes, len(self.classes))
            self.ref_k += np.bincount(codes[codes >= 0], minlength=len(self.classes))
            self.n_ref += take
            self.n_seen += take
            if take == n:
                return []
            categorical = {f: np.asarray(c, dtype=object)[take:] for f, c in categorical.items()}
            y = y[take:]
            request_ids = None if request_ids is None else np.asarray(request_ids, dtype=object)[take:]
            n = len(y)
        self.n_seen += n
        M, codes = self._encode(categorical, y)
        b = self.cur
        self.b_sk[b] += count_by_class(M, codes, len(self.classes))
        self.b_k[b] += np.bincount(codes[codes >= 0], minlength=len(self.classes))
        self.b_n[b] += n
        results = self._test(M, codes, request_ids, offset=take)
        if self.b_n[b] >= p["bucket_size"]:
            self.cur = (b + 1) % p["n_buckets"]
            self.b_sk[self.cur] = 0
            self.b_k[self.cur] = 0
            self.b_n[self.cur] = 0
        return results

    def _test(self, M, codes, request_ids, offset) -> list[DriftResult]:
        p = self.params
        K = len(self.classes)
        S = self.ref_sk.shape[0]
        if K == 0 or S == 0 or self.n_ref == 0:
            return []
        w_sk = self.b_sk.sum(axis=0)
        w_s = w_sk.sum(axis=1)        # segment records with a counted class
        r_s = self.ref_sk.sum(axis=1)
        w_n = int(self.b_k.sum())
        watch = np.ones(K, dtype=bool)
        if p["classes"] is not None:
            watch = np.array([c in p["classes"] for c in self.classes], dtype=bool)
        n_tests = max(1, S * int(watch.sum()))
        crit = p["alpha"] / n_tests
        pk = (self.ref_k + 0.5) / (self.n_ref + 0.5 * K)
        m = p["prior_strength"]
        a = self.ref_sk + m * pk
        bb = (r_s[:, None] - self.ref_sk) + m * (1 - pk)
        # A class whose rate fell everywhere (output drift) is not suppression
        # of one segment: expect each segment to fall with the global rate, by
        # scaling the null's mean by the global ratio (never up, so a
        # stationary stream keeps its bound: the test only gets stricter).
        glob_ref = self.ref_k / max(self.n_ref, 1)
        glob_cur = self.b_k.sum(axis=0) / max(w_n, 1)
        follow = np.minimum(1.0, glob_cur / np.maximum(glob_ref, 1e-12))
        a, bb = a * follow, bb + a * (1 - follow)
        ref_rate = a / (a + bb)
        cur_rate = w_sk / np.maximum(w_s, 1)[:, None]
        gate = (
            watch[None, :]
            & (w_s[:, None] >= p["min_support"])
            & (w_s[:, None] * ref_rate >= p["min_expected"])
            & (cur_rate <= (1 - p["min_relative_drop"]) * ref_rate)
        )
        ss, ks = np.nonzero(gate)
        if len(ss) == 0:
            return []
        pval = betabinom.cdf(w_sk[ss, ks], w_s[ss], a[ss, ks], bb[ss, ks])
        sig = pval < crit
        ss, ks, pval = ss[sig], ks[sig], pval[sig]
        order = np.argsort(pval, kind="stable")
        V = p["max_values"]
        rid = None if request_ids is None else np.asarray(request_ids, dtype=object)
        results = []
        for i in order:
            s, k, pv = int(ss[i]), int(ks[i]), float(max(pval[i], 1e-300))
            g, slot = divmod(s, V)
            feat = self.features[g]
            value = next((v for v, j in self.vocab[g].items() if j == slot), "?")
            ex = np.nonzero(M[:, s] & (codes != k))[0][: p["max_examples"]]
            cls = self.classes[k]
            extra = {
                "segment": (feat, value), "class": cls,
                "reference_rate": float(self.ref_sk[s, k] / r_s[s]) if r_s[s] else None,
                "current_rate": float(cur_rate[s, k]), "support": int(w_s[s]), "hits": int(w_sk[s, k]),
                "reference_support": int(r_s[s]),
                "global_reference_rate": float(glob_ref[k]), "global_current_rate": float(glob_cur[k]),
                "n_tests": int(n_tests),
                "request_ids": [] if rid is None else [rid[j] for j in ex],
            }
            ref_txt = (f"{extra['reference_rate']:.0%} of {int(r_s[s])}" if r_s[s] else "no reference records")
            results.append(DriftResult(
                statistic=float(-math.log10(pv)), threshold=float(-math.log10(crit)), detected=True,
                n_seen=self.n_seen, p_value=pv, change_index=max(0, self.n_seen - w_n),
                examples=tuple(int(j) + offset for j in ex),
                detail=(f"Class {cls!r} is predicted for {cur_rate[s, k]:.1%} of {feat}={value!r} records "
                        f"(n={int(w_s[s])}) vs {ref_txt} in the reference, while its global rate moved "
                        f"{glob_ref[k]:.1%} -> {glob_cur[k]:.1%}."),
                extra=extra,
            ))
        return results

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "params": dict(self.params), "n_seen": self.n_seen, "n_ref": self.n_ref,
            "refused": dict(self.refused), "features": self.features,
            "vocab": [dict(v) for v in self.vocab], "classes": list(self.classes),
            "ref_sk": self.ref_sk.tolist(), "ref_k": self.ref_k.tolist(),
            "b_sk": self.b_sk.tolist(), "b_k": self.b_k.tolist(), "b_n": self.b_n.tolist(), "cur": self.cur,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        det = cls(**state["params"])
        det.n_seen, det.n_ref = int(state["n_seen"]), int(state["n_ref"])
        det.refused = dict(state["refused"])
        det.features = None if state["features"] is None else list(state["features"])
        det.vocab = [dict(v) for v in state["vocab"]]
        det.classes = list(state["classes"])
        K = len(det.classes)
        S = 0 if det.features is None else len(det.features) * det.params["max_values"]
        nb = det.params["n_buckets"]
        det.ref_sk = np.asarray(state["ref_sk"], dtype=np.int64).reshape(S, K)
        det.ref_k = np.asarray(state["ref_k"], dtype=np.int64).reshape(K)
        det.b_sk = np.asarray(state["b_sk"], dtype=np.int64).reshape(nb, S, K)
        det.b_k = np.asarray(state["b_k"], dtype=np.int64).reshape(nb, K)
        det.b_n = np.asarray(state["b_n"], dtype=np.int64).reshape(nb)
        det.cur = int(state["cur"])
        return det
