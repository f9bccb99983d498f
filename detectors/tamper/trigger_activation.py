"""Backdoor trigger activation: an input condition that has become tied to one class.

A backdoored model behaves normally until an input carries its trigger (a pixel
stamp, a rare token, a categorical value); then it answers the attacker's target
class whatever the rest of the input says.  Seen from the inference log, an
activated trigger is an *input condition* whose presence now predicts one output
class far more than it did while the approved model served the reference window:

- high **lift**: ``P(class | condition) / P(class)`` in the current window,
- a **rise** of that share over what the reference showed (``min_rise``),
- low **output entropy** given the condition (one class takes almost everything),
- enough **support** (records with the condition in the window),
- and a **significant increase** over the reference conditional rate
  ``P_ref(class | condition)``.

Conditions searched (all learned from the reference window, so the search space
is fixed and bounded):

- numeric feature in an extreme bin: ``x > q_hi`` or ``x < q_lo`` with the
  reference tail quantiles at ``tail`` (a stamped pixel that is blank in normal
  traffic becomes ``px_0 > 0.0``);
- categorical value ``feature == value`` (the reference's most frequent values,
  then new values first-come until ``max_categories`` per feature);
- pairs of the above, but only among the ``top_k`` single conditions whose class
  share rose most (a bounded, LRU-evicted watch list of ``max_pairs`` pairs whose
  reference counts are recomputed from a packed bit matrix of the reference).

Counts are numpy arrays ``(conditions, classes)`` per bucket of ``bucket_size``
records; the window is the last ``n_buckets`` buckets, so old traffic ages out.

Significance: under "nothing changed" the count ``n_ck`` of class ``k`` among the
``n_c`` window records with condition ``c`` follows the beta-binomial posterior
predictive of the reference counts (``Beta(ref_ck + m q, ref_c - ref_ck + m (1 -
q))``, ``m = prior_strength`` pseudo-records at a prior rate ``q``: the reference
class rate ``p_k`` for a single condition, and for a pair the smoothed
reference rate of its more class-``k``-tied part), which accounts for the
reference being a finite sample and gives a finite null for conditions never
seen in the reference.  The one-sided p-value
is Bonferroni-corrected over the **whole** search space, ``(C + C (C - 1) / 2) *
K`` hypotheses (every single and every pair a data-driven search could have
picked, times every class), so the chance of any false alarm in one evaluation
is at most ``alpha`` whenever the reference describes the null.  Evaluations run
once per ``update`` on overlapping windows, so over ``U`` updates the expected
number of false alarms is at most ``alpha * U`` (default ``alpha=1e-4`` with
batches of 200: at most one per two million records).  The share / lift /
entropy gates only remove candidates, so they keep that bound; they are what
keeps benign drift (new inputs whose classes stay mixed) from alerting.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> def batch(n, trigger_rate):
...     x = rng.normal(size=(n, 3))
...     y = np.where(x[:, 0] > 0, "a", "b").astype(object)
...     hit = rng.random(n) < trigger_rate
...     x[hit, 2] = 9.0                      # the stamp
...     y[hit] = "target"                    # the backdoor answers its class
...     return {"f0": x[:, 0], "f1": x[:, 1], "f2": x[:, 2]}, y
>>> det = TriggerActivation(n_reference=2000, bucket_size=500, n_buckets=4)
>>> for _ in range(10):
...     num, y = batch(200, 0.0)
...     assert det.update(numeric=num, predicted_class=y) == []
>>> found = []
>>> for _ in range(5):
...     num, y = batch(200, 0.05)
...     found = det.update(numeric=num, predicted_class=y) or found
>>> r = found[0]
>>> r.detected, r.extra["conditions"], r.extra["target_class"]
(True, [('f2', '> 1.985')], 'target')
>>> det2 = TriggerActivation.from_state(det.state_dict())
>>> det2.state_dict() == det.state_dict()
True
"""

from __future__ import annotations

import base64
import dataclasses
import math
from typing import Any, Self

import numpy as np
from scipy.stats import betabinom

from detectors.base import DriftResult
from detectors.tamper.counts import count_by_class


def _entropy_bits(counts: np.ndarray) -> np.ndarray:
    """Shannon entropy (bits) of each row of a count matrix."""
    total = counts.sum(axis=-1, keepdims=True)
    p = counts / np.maximum(total, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=-1)
    return h


class TriggerActivation:
    """Find input conditions that have become tied to one output class.

    Parameters
    ----------
    n_reference
        Records of the approved model to learn bins, vocabularies and reference
        counts from (the first ``n_reference`` records passed to ``update``
        unless :meth:`fit_reference` is called first).  No results meanwhile.
    tail
        Reference tail mass of the extreme bins (``x > q_{1-tail}``, ``x < q_tail``).
    bucket_size, n_buckets
        The window: ``n_buckets`` buckets of about ``bucket_size`` records.
    min_support
        Window records carrying a condition before it can be reported.
    min_share
        ``P(class | condition)`` in the window at least this (the backdoor
        answers its target for most triggered inputs).
    min_lift
        ``P(class | condition) / P(class)`` in the window at least this.
    max_entropy_bits
        Entropy of the window's class distribution given the condition at most this.
    min_rise
        ``P(class | condition)`` in the window at least this much above the
        reference's observed share (the prior rate when the reference never
        saw the condition).
    alpha
        Family-wise false-alarm probability per evaluation (see module doc).
    prior_strength
        Pseudo-records of the prior on each reference conditional rate.
    top_k, max_pairs
        Pairs are formed among the ``top_k`` singles with the largest rise in
        class share; at most ``max_pairs`` pairs are watched at once.
    max_features, max_categories, max_conditions, max_classes
        Bounds (extra features / values / classes are ignored and counted in
        ``refused``).  Memory is about ``8 * C * K * (n_buckets + 1)`` bytes of
        counts plus ``n_reference * C`` bytes of reference bits, ``C <=
        max_conditions`` (defaults, 64 numeric features and 10 classes: ~70 kB
        + 256 kB).  More conditions also raise the Bonferroni factor, so the
        search should cover the features a trigger could live in, not more.
    max_findings, max_examples
        At most this many results per update / example positions per result.
    features
        Search only these features (default: every logged feature, up to the bounds).
    """

    name = "trigger_activation"

    def __init__(
        self,
        n_reference: int = 2000,
        tail: float = 0.02,
        bucket_size: int = 500,
        n_buckets: int = 6,
        min_support: int = 20,
        min_share: float = 0.6,
        min_lift: float = 3.0,
        max_entropy_bits: float = 1.5,
        min_rise: float = 0.3,
        alpha: float = 1e-4,
        prior_strength: float = 10.0,
        top_k: int = 8,
        max_pairs: int = 64,
        max_features: int = 256,
        max_categories: int = 32,
        max_conditions: int = 1024,
        max_classes: int = 256,
        max_findings: int = 5,
        max_examples: int = 10,
        features: list[str] | None = None,
    ):
        self.params = dict(
            features=None if features is None else [str(f) for f in features],
            n_reference=int(n_reference), tail=float(tail), bucket_size=int(bucket_size),
            n_buckets=int(n_buckets), min_support=int(min_support), min_share=float(min_share),
            min_lift=float(min_lift), max_entropy_bits=float(max_entropy_bits), min_rise=float(min_rise),
            alpha=float(alpha), prior_strength=float(prior_strength), top_k=int(top_k),
            max_pairs=int(max_pairs), max_features=int(max_features),
            max_categories=int(max_categories), max_conditions=int(max_conditions),
            max_classes=int(max_classes),
            max_findings=int(max_findings), max_examples=int(max_examples),
        )
        self.n_seen = 0
        self.refused = {"features": 0, "categories": 0, "classes": 0}
        self.fitted = False
        #: strongest gated candidate of the last update (-log10 p) and the
        #: Bonferroni threshold on the same scale, for a drift_score gauge
        self.last_statistic = 0.0
        self.threshold = math.inf
        # reference buffer while warming up (plain lists of column chunks)
        self._buf_num: dict[str, list[np.ndarray]] = {}
        self._buf_cat: dict[str, list[np.ndarray]] = {}
        self._buf_y: list[np.ndarray] = []
        self._buf_n = 0

    # ------------------------------------------------------------------ fitting
    def fit_reference(
        self,
        numeric: dict[str, np.ndarray] | None = None,
        categorical: dict[str, np.ndarray] | None = None,
        predicted_class: np.ndarray | None = None,
    ) -> None:
        """Learn bins, vocabularies and reference counts from approved traffic."""
        p = self.params
        numeric = numeric or {}
        categorical = categorical or {}
        if p["features"] is not None:
            numeric = {f: v for f, v in numeric.items() if f in p["features"]}
            categorical = {f: v for f, v in categorical.items() if f in p["features"]}
        y = np.asarray(predicted_class, dtype=object)
        n = len(y)
        # numeric features cost 2 conditions, categorical ones max_categories:
        # keep the total under max_conditions (counts are C x K per bucket)
        budget = min(p["max_conditions"], 2 * p["max_features"])
        self.num_features = sorted(numeric)[: budget // 2]
        n_cat = (budget - 2 * len(self.num_features)) // max(p["max_categories"], 1)
        self.cat_features = sorted(categorical)[: max(0, n_cat)]
        self.refused["features"] += len(numeric) + len(categorical) - len(self.num_features) - len(self.cat_features)
        if self.num_features:
            X = np.column_stack([np.asarray(numeric[f], dtype=np.float64) for f in self.num_features])
            # nan-quantiles: a feature missing everywhere gets NaN bounds and never fires
            with np.errstate(all="ignore"):
                self.hi = np.nanquantile(X, 1 - p["tail"], axis=0) if n else np.full(X.shape[1], np.nan)
                self.lo = np.nanquantile(X, p["tail"], axis=0) if n else np.full(X.shape[1], np.nan)
        else:
            self.hi = np.zeros(0)
            self.lo = np.zeros(0)
        # categorical vocabularies: most frequent reference values first
        self.vocab: list[dict[str, int]] = []
        for f in self.cat_features:
            col = np.asarray(categorical[f], dtype=object)
            col = col[col != None] if len(col) else col  # noqa: E711 - elementwise
            vals, cnt = np.unique(col.astype(str), return_counts=True) if len(col) else ([], [])
            order = np.argsort(-np.asarray(cnt), kind="stable")
            self.vocab.append({str(vals[i]): j for j, i in enumerate(order[: p["max_categories"]])})
        # classes
        ys = y[y != None] if n else y  # noqa: E711 - elementwise
        self.classes: list[str] = sorted(set(map(str, ys)))[: p["max_classes"]]
        self._class_pos = {c: i for i, c in enumerate(self.classes)}
        K = len(self.classes)
        C = self.n_conditions
        B, codes = self._conditions_and_codes(numeric, categorical, y, grow=False)
        self.ref_ck = count_by_class(B, codes, K)
        self.ref_c = B.sum(axis=0).astype(np.int64)
        self.ref_k = np.bincount(codes[codes >= 0], minlength=K).astype(np.int64)
        self.n_ref = int(n)
        self.ref_bits = B.copy()
        self.ref_codes = codes.copy()
        nb = p["n_buckets"]
        self.b_ck = np.zeros((nb, C, K), dtype=np.int64)
        self.b_c = np.zeros((nb, C), dtype=np.int64)
        self.b_k = np.zeros((nb, K), dtype=np.int64)
        self.b_n = np.zeros(nb, dtype=np.int64)
        self.cur = 0
        self.pairs = np.zeros((0, 2), dtype=np.int64)
        self.pair_used = np.zeros(0, dtype=np.int64)   # last update that selected the pair (LRU)
        self.pair_ref_ck = np.zeros((0, K), dtype=np.int64)
        self.pair_ref_c = np.zeros(0, dtype=np.int64)
        self.pb_ck = np.zeros((nb, 0, K), dtype=np.int64)
        self.pb_c = np.zeros((nb, 0), dtype=np.int64)
        self.n_updates = 0
        self.fitted = True

    @property
    def n_conditions(self) -> int:
        return 2 * len(self.num_features) + len(self.cat_features) * self.params["max_categories"]

    def _conditions_and_codes(self, numeric, categorical, y, grow: bool):
        """Boolean condition matrix (n, C) and class codes (n,), -1 = ignored."""
        y = np.asarray(y, dtype=object)
        n = len(y)
        parts = []
        F = len(self.num_features)
        if F:
            X = np.full((n, F), np.nan)
            for j, f in enumerate(self.num_features):
                if f in numeric:
                    X[:, j] = np.asarray(numeric[f], dtype=np.float64)
            with np.errstate(invalid="ignore"):
                parts.append(X > self.hi)     # NaN compares False: missing never fires
                parts.append(X < self.lo)
        V = self.params["max_categories"]
        for g, f in enumerate(self.cat_features):
            block = np.zeros((n, V), dtype=bool)
            if f in categorical and n:
                col = np.asarray(categorical[f], dtype=object)
                present = np.asarray(col != None, dtype=bool)  # noqa: E711 - elementwise
                if present.any():
                    vals, inv = np.unique(col[present].astype(str), return_inverse=True)
                    vocab = self.vocab[g]
                    slot = np.empty(len(vals), dtype=np.int64)
                    for i, v in enumerate(vals):     # loop over distinct values, not records
                        s = vocab.get(str(v))
                        if s is None and grow:
                            if len(vocab) < V:
                                s = vocab[str(v)] = len(vocab)
                            else:
                                self.refused["categories"] += 1
                        slot[i] = -1 if s is None else s
                    rows = np.nonzero(present)[0]
                    s = slot[inv]
                    keep = s >= 0
                    block[rows[keep], s[keep]] = True
            parts.append(block)
        B = np.concatenate(parts, axis=1) if parts else np.zeros((n, 0), dtype=bool)
        codes = np.full(n, -1, dtype=np.int64)
        if n:
            present = np.asarray(y != None, dtype=bool)  # noqa: E711 - elementwise
            if present.any():
                vals, inv = np.unique(y[present].astype(str), return_inverse=True)
                code_of = np.empty(len(vals), dtype=np.int64)
                for i, v in enumerate(vals):
                    c = self._class_pos.get(str(v))
                    if c is None and grow:
                        if len(self.classes) < self.params["max_classes"]:
                            c = self._add_class(str(v))
                        else:
                            self.refused["classes"] += 1
                    code_of[i] = -1 if c is None else c
                codes[np.nonzero(present)[0]] = code_of[inv]
        return B, codes

    def _add_class(self, label: str) -> int:
        self.classes.append(label)
        self._class_pos[label] = len(self.classes) - 1
        pad1 = lambda a: np.concatenate([a, np.zeros(a.shape[:-1] + (1,), dtype=a.dtype)], axis=-1)  # noqa: E731
        self.ref_ck, self.ref_k = pad1(self.ref_ck), pad1(self.ref_k)
        self.b_ck, self.b_k = pad1(self.b_ck), pad1(self.b_k)
        self.pair_ref_ck, self.pb_ck = pad1(self.pair_ref_ck), pad1(self.pb_ck)
        return len(self.classes) - 1

    # ------------------------------------------------------------------ update
    def update(
        self,
        numeric: dict[str, np.ndarray] | None = None,
        categorical: dict[str, np.ndarray] | None = None,
        predicted_class: np.ndarray | None = None,
        request_ids: np.ndarray | None = None,
    ) -> list:
        """Consume one batch (the model's columns); return detected findings.

        Returns a list of :class:`~detectors.base.DriftResult` (empty while
        warming up or when nothing is found), one per target class, most
        significant first.  ``extra`` holds ``conditions`` (list of ``(feature,
        condition)``), ``target_class``, ``support``, ``hits``, ``share``,
        ``lift``, ``reference_share``, ``entropy_bits``, ``also`` (other
        condition sets flagged for the same class) and ``request_ids``.
        """
        if predicted_class is None:          # regression output: no class to be tied to
            return []
        numeric = numeric or {}
        categorical = categorical or {}
        y = np.asarray(predicted_class, dtype=object)
        n = len(y)
        if not self.fitted:
            return self._warm_up(numeric, categorical, y, request_ids)
        self.n_seen += n
        if n == 0:
            return []
        self.n_updates += 1
        p = self.params
        B, codes = self._conditions_and_codes(numeric, categorical, y, grow=True)
        K = len(self.classes)
        b = self.cur
        self.b_ck[b] += count_by_class(B, codes, K)
        self.b_c[b] += B.sum(axis=0)
        self.b_k[b] += np.bincount(codes[codes >= 0], minlength=K)
        self.b_n[b] += n

        w_ck = self.b_ck.sum(axis=0)
        w_c = self.b_c.sum(axis=0)
        w_k = self.b_k.sum(axis=0)
        w_n = int(self.b_n.sum())
        self._select_pairs(w_ck, w_c)
        if len(self.pairs):
            Bp = B[:, self.pairs[:, 0]] & B[:, self.pairs[:, 1]]
            self.pb_ck[b] += count_by_class(Bp, codes, K)
            self.pb_c[b] += Bp.sum(axis=0)
        else:
            Bp = np.zeros((n, 0), dtype=bool)
        pw_ck = self.pb_ck.sum(axis=0)
        pw_c = self.pb_c.sum(axis=0)

        results = self._test(
            np.concatenate([w_ck, pw_ck]), np.concatenate([w_c, pw_c]),
            np.concatenate([self.ref_ck, self.pair_ref_ck]), np.concatenate([self.ref_c, self.pair_ref_c]),
            w_k, w_n, np.concatenate([B, Bp], axis=1), codes, request_ids,
        )
        # rotate after testing so the window always includes this batch
        if self.b_n[b] >= p["bucket_size"]:
            self.cur = (b + 1) % p["n_buckets"]
            for arr in (self.b_ck, self.b_c, self.b_k, self.b_n, self.pb_ck, self.pb_c):
                arr[self.cur] = 0
        return results

    def _warm_up(self, numeric, categorical, y, request_ids) -> list:
        need = self.params["n_reference"] - self._buf_n
        take = min(need, len(y))
        for f, col in numeric.items():
            self._buf_num.setdefault(f, []).append(np.asarray(col, dtype=np.float64)[:take])
        for f, col in categorical.items():
            self._buf_cat.setdefault(f, []).append(np.asarray(col, dtype=object)[:take])
        self._buf_y.append(y[:take])
        self._buf_n += take
        self.n_seen += take
        if self._buf_n < self.params["n_reference"]:
            return []
        lens = [len(c) for c in self._buf_y]

        def cat(chunks_by_feature, dtype):
            # a feature missing from some batches is left out of the reference
            return {f: np.concatenate([np.asarray(c, dtype=dtype) for c in chunks])
                    for f, chunks in chunks_by_feature.items() if len(chunks) == len(lens)}

        self.fit_reference(cat(self._buf_num, np.float64), cat(self._buf_cat, object),
                           np.concatenate(self._buf_y))
        self._buf_num, self._buf_cat, self._buf_y, self._buf_n = {}, {}, [], 0
        rest = len(y) - take
        if rest > 0:
            out = self.update(
                {f: np.asarray(c)[take:] for f, c in numeric.items()},
                {f: np.asarray(c)[take:] for f, c in categorical.items()},
                y[take:], None if request_ids is None else np.asarray(request_ids, dtype=object)[take:],
            )
            # examples are positions in the batch the caller passed, not in the tail
            return [dataclasses.replace(r, examples=tuple(i + take for i in r.examples)) for r in out]
        return []

    def _prior_rate(self) -> np.ndarray:
        K = len(self.classes)
        return (self.ref_k + 0.5) / (self.n_ref + 0.5 * K)

    def _select_pairs(self, w_ck: np.ndarray, w_c: np.ndarray) -> None:
        """Watch pairs among the singles whose class share rose most."""
        p = self.params
        if p["max_pairs"] <= 0 or p["top_k"] < 2 or w_ck.size == 0:
            return
        m, pk = p["prior_strength"], self._prior_rate()
        # smoothed window share over smoothed reference share: the rise in P(k|c)
        rise = ((w_ck + m * pk) / (w_c[:, None] + m)) / ((self.ref_ck + m * pk) / (self.ref_c[:, None] + m))
        score = rise.max(axis=1)
        # a pair can only reach min_support if both parts are that frequent
        score[w_c < max(2, p["min_support"] // 2)] = 0.0
        cand = np.argsort(-score, kind="stable")[: p["top_k"]]
        cand = cand[score[cand] > 1.0]
        feat = self._feature_of_condition()
        new = []
        for i in range(len(cand)):
            for j in range(i + 1, len(cand)):
                a, c = sorted((int(cand[i]), int(cand[j])))
                if feat[a] == feat[c]:      # same feature: mutually exclusive conditions
                    continue
                hit = np.nonzero((self.pairs[:, 0] == a) & (self.pairs[:, 1] == c))[0]
                if len(hit):
                    self.pair_used[hit[0]] = self.n_updates
                else:
                    new.append((a, c))
        for a, c in new:
            if len(self.pairs) < p["max_pairs"]:
                idx = len(self.pairs)
                self.pairs = np.vstack([self.pairs, [[a, c]]])
                self.pair_used = np.append(self.pair_used, self.n_updates)
                K = len(self.classes)
                self.pair_ref_ck = np.vstack([self.pair_ref_ck, np.zeros((1, K), np.int64)])
                self.pair_ref_c = np.append(self.pair_ref_c, 0)
                self.pb_ck = np.concatenate([self.pb_ck, np.zeros((p["n_buckets"], 1, K), np.int64)], axis=1)
                self.pb_c = np.concatenate([self.pb_c, np.zeros((p["n_buckets"], 1), np.int64)], axis=1)
            else:
                idx = int(np.argmin(self.pair_used))
                if self.pair_used[idx] == self.n_updates:
                    break               # every slot chosen in this very update
                self.pairs[idx] = (a, c)
                self.pair_used[idx] = self.n_updates
                self.pb_ck[:, idx] = 0
                self.pb_c[:, idx] = 0
            both = self.ref_bits[:, a] & self.ref_bits[:, c]
            codes = self.ref_codes[both]
            self.pair_ref_ck[idx] = np.bincount(codes[codes >= 0], minlength=len(self.classes))
            self.pair_ref_c[idx] = int(both.sum())

    def _feature_of_condition(self) -> list[str]:
        V = self.params["max_categories"]
        return list(self.num_features) * 2 + [f for f in self.cat_features for _ in range(V)]

    def describe(self, c: int) -> list[tuple[str, str]]:
        """Human form of condition ``c`` (singles ``< C``, then watched pairs)."""
        C = self.n_conditions
        if c >= C:
            a, b = self.pairs[c - C]
            return self.describe(int(a)) + self.describe(int(b))
        F = len(self.num_features)
        if c < F:
            return [(self.num_features[c], f"> {self.hi[c]:.4g}")]
        if c < 2 * F:
            return [(self.num_features[c - F], f"< {self.lo[c - F]:.4g}")]
        g, s = divmod(c - 2 * F, self.params["max_categories"])
        name = next((v for v, k in self.vocab[g].items() if k == s), "?")
        return [(self.cat_features[g], f"== {name!r}")]

    def _test(self, w_ck, w_c, r_ck, r_c, w_k, w_n, Ball, codes, request_ids) -> list:
        p = self.params
        K = len(self.classes)
        C = self.n_conditions
        n_tests = max(1, (C + C * (C - 1) // 2) * K)
        crit = p["alpha"] / n_tests
        threshold = -math.log10(crit)
        self.last_statistic, self.threshold = 0.0, threshold
        if K == 0 or w_n == 0:
            return []
        share = w_ck / np.maximum(w_c, 1)[:, None]
        glob = w_k / max(w_n, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = np.where(glob > 0, share / glob, 0.0)
        ent = _entropy_bits(w_ck)
        gate = (
            (w_c[:, None] >= p["min_support"])
            & (share >= p["min_share"])
            & (lift >= p["min_lift"])
            & (ent[:, None] <= p["max_entropy_bits"])
        )
        cs, ks = np.nonzero(gate)
        if len(cs) == 0:
            return []
        m, pk = p["prior_strength"], self._prior_rate()
        # prior mean of P_ref(k | condition): the global rate for a single; for a
        # pair, the rate of its more class-k-tied part (a pair inherits what its
        # parents already predicted; shrinking a small pair toward the global rate
        # would flag legitimately deterministic pairs whenever traffic shifts)
        single_rate = (self.ref_ck + m * pk) / (self.ref_c[:, None] + m)
        prior = np.broadcast_to(pk, (len(r_c), K)).copy()
        if len(self.pairs):
            prior[C:] = np.maximum(single_rate[self.pairs[:, 0]], single_rate[self.pairs[:, 1]])
        pm = prior[cs, ks]
        # effect size against what the reference actually showed: a condition the
        # model already answered with class k (a deterministic decision region)
        # cannot "become" tied to k, however the prior shrinks its small sample
        ref_share = np.where(r_c[cs] > 0, r_ck[cs, ks] / np.maximum(r_c[cs], 1), pm)
        keep = share[cs, ks] - ref_share >= p["min_rise"]
        cs, ks, pm = cs[keep], ks[keep], pm[keep]
        a = r_ck[cs, ks] + m * pm
        bb = (r_c[cs] - r_ck[cs, ks]) + m * (1 - pm)
        pval = betabinom.sf(w_ck[cs, ks] - 1, w_c[cs], a, bb)
        if len(pval):
            # for the drift_score gauge: the strongest candidate that passed the gates
            self.last_statistic = float(-np.log10(max(float(pval.min()), 1e-300)))
        sig = pval < crit
        cs, ks, pval = cs[sig], ks[sig], pval[sig]
        if len(cs) == 0:
            return []
        # best per class: smallest p, then more support, then fewer conditions
        order = np.lexsort((cs >= C, -w_c[cs], pval))
        results = []
        seen: dict[int, list] = {}
        for i in order:
            seen.setdefault(int(ks[i]), []).append(int(i))
        rid = None if request_ids is None else np.asarray(request_ids, dtype=object)
        for k, idxs in list(seen.items())[: p["max_findings"]]:
            best = idxs[0]
            c = int(cs[best])
            pv = float(max(pval[best], 1e-300))
            ex = np.nonzero(Ball[:, c] & (codes == k))[0][: p["max_examples"]]
            conds = self.describe(c)
            also = [self.describe(int(cs[i])) for i in idxs[1:11]]
            target = self.classes[k]
            ref_share = float(r_ck[c, k] / r_c[c]) if r_c[c] else None
            extra = {
                "conditions": conds,
                "target_class": target,
                "support": int(w_c[c]),
                "hits": int(w_ck[c, k]),
                "share": float(share[c, k]),
                "lift": float(lift[c, k]),
                "reference_share": ref_share,
                "reference_support": int(r_c[c]),
                "entropy_bits": float(ent[c]),
                "also": also,
                "n_tests": int(n_tests),
                "request_ids": [] if rid is None else [rid[i] for i in ex],
            }
            cond_txt = " and ".join(f"{f} {op}" for f, op in conds)
            ref_txt = f"{ref_share:.0%} of {int(r_c[c])}" if ref_share is not None else "never seen"
            detail = (
                f"Possible backdoor trigger: when {cond_txt}, the model answers class {target!r} "
                f"for {int(w_ck[c, k])}/{int(w_c[c])} recent records ({share[c, k]:.0%}, lift "
                f"{lift[c, k]:.1f}) vs {ref_txt} in the reference."
            )
            results.append(DriftResult(
                statistic=float(-math.log10(pv)), threshold=float(threshold), detected=True,
                n_seen=self.n_seen, p_value=pv, change_index=max(0, self.n_seen - w_n),
                examples=tuple(int(i) for i in ex), detail=detail, extra=extra,
            ))
        return results

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        s: dict[str, Any] = {"name": self.name, "params": dict(self.params), "n_seen": self.n_seen,
                             "refused": dict(self.refused), "fitted": self.fitted}
        if not self.fitted:
            s["buffer"] = {
                "num": {f: np.concatenate(c).tolist() for f, c in self._buf_num.items()},
                "cat": {f: np.concatenate(c).tolist() for f, c in self._buf_cat.items()},
                "y": np.concatenate(self._buf_y).tolist() if self._buf_y else [],
            }
            return s
        s.update(
            num_features=list(self.num_features), cat_features=list(self.cat_features),
            hi=self.hi.tolist(), lo=self.lo.tolist(), vocab=[dict(v) for v in self.vocab],
            classes=list(self.classes), n_ref=self.n_ref,
            ref_ck=self.ref_ck.tolist(), ref_c=self.ref_c.tolist(), ref_k=self.ref_k.tolist(),
            ref_bits_shape=list(self.ref_bits.shape),
            ref_bits=base64.b64encode(np.packbits(self.ref_bits, axis=None).tobytes()).decode(),
            ref_codes=self.ref_codes.tolist(),
            b_ck=self.b_ck.tolist(), b_c=self.b_c.tolist(), b_k=self.b_k.tolist(), b_n=self.b_n.tolist(),
            cur=self.cur, pairs=self.pairs.tolist(), pair_used=self.pair_used.tolist(),
            pair_ref_ck=self.pair_ref_ck.tolist(), pair_ref_c=self.pair_ref_c.tolist(),
            pb_ck=self.pb_ck.tolist(), pb_c=self.pb_c.tolist(), n_updates=self.n_updates,
        )
        return s

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        det = cls(**state["params"])
        det.n_seen = int(state["n_seen"])
        det.refused = dict(state["refused"])
        if not state["fitted"]:
            buf = state["buffer"]
            det._buf_num = {f: [np.asarray(v, dtype=np.float64)] for f, v in buf["num"].items()}
            det._buf_cat = {f: [np.asarray(v, dtype=object)] for f, v in buf["cat"].items()}
            det._buf_y = [np.asarray(buf["y"], dtype=object)] if buf["y"] else []
            det._buf_n = len(buf["y"])
            return det
        det.num_features = list(state["num_features"])
        det.cat_features = list(state["cat_features"])
        det.hi = np.asarray(state["hi"], dtype=np.float64)
        det.lo = np.asarray(state["lo"], dtype=np.float64)
        det.vocab = [dict(v) for v in state["vocab"]]
        det.classes = list(state["classes"])
        det._class_pos = {c: i for i, c in enumerate(det.classes)}
        K = len(det.classes)
        nb = det.params["n_buckets"]
        i64 = lambda v, shape: np.asarray(v, dtype=np.int64).reshape(shape)  # noqa: E731
        C = det.n_conditions
        det.n_ref = int(state["n_ref"])
        det.ref_ck = i64(state["ref_ck"], (C, K))
        det.ref_c = i64(state["ref_c"], (C,))
        det.ref_k = i64(state["ref_k"], (K,))
        shape = tuple(state["ref_bits_shape"])
        bits = np.unpackbits(np.frombuffer(base64.b64decode(state["ref_bits"]), dtype=np.uint8))
        det.ref_bits = bits[: shape[0] * shape[1]].astype(bool).reshape(shape)
        det.ref_codes = np.asarray(state["ref_codes"], dtype=np.int64)
        det.b_ck = i64(state["b_ck"], (nb, C, K))
        det.b_c = i64(state["b_c"], (nb, C))
        det.b_k = i64(state["b_k"], (nb, K))
        det.b_n = i64(state["b_n"], (nb,))
        det.cur = int(state["cur"])
        P = len(state["pairs"])
        det.pairs = i64(state["pairs"], (P, 2))
        det.pair_used = i64(state["pair_used"], (P,))
        det.pair_ref_ck = i64(state["pair_ref_ck"], (P, K))
        det.pair_ref_c = i64(state["pair_ref_c"], (P,))
        det.pb_ck = i64(state["pb_ck"], (nb, P, K))
        det.pb_c = i64(state["pb_c"], (nb, P))
        det.n_updates = int(state["n_updates"])
        det.fitted = True
        return det
