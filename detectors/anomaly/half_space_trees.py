"""Half-Space Trees anomaly scorer (Tan, Ting & Liu 2011), vectorised.

Same model, same random trees and same scores as
:class:`river.anomaly.HalfSpaceTrees`, but the trees are numpy arrays (split
feature and threshold per node of a complete binary tree, node ``i`` has
children ``2i+1`` / ``2i+2``) and a whole batch walks them in one compiled
loop (numba; per row the trees side by side, level by level, so the walks
overlap).  Masses are ``(n_trees, n_nodes)`` integer arrays:
learning a window chunk is one ``bincount`` / ``add.at`` of its root-to-leaf
paths, and scoring is a gather of reference masses along the same paths.

Why it can match River exactly: the paths do not depend on the masses (except
for missing values, handled record by record like River), the reference
masses ``r_mass`` only change at window pivots, and a score is a sum of
integers (exact in float64).  So a batch is cut at window boundaries; inside
a chunk every record is scored with the same ``r_mass`` and then all are
learned at once, which is what River's ``score_one``/``learn_one`` loop does.

The trees are drawn with Python's ``random.Random(seed)`` making the very
same calls in the same order as River (``choices`` of a feature weighted by
its current range, ``uniform`` split inside the padded range, depth-first),
so a given seed gives River's trees.  Building them is the only per-node
Python work and happens once (state stores the seed, not the trees).
"""

from __future__ import annotations

import random
from typing import Any, Self

import numpy as np
from numba import njit
from scipy import stats

from detectors.base import Detector, DriftResult

_PADDING = 0.15  # River's padding: splits avoid the outer 15% of a range


@njit(cache=True, nogil=True)
def _walk(X, feat, thr, height, out, full):  # pragma: no cover - compiled
    """Every row down every tree: ``right = x[feat] >= thr`` at each node (a
    NaN goes left; missing values are redone by the caller), child
    ``2 node + 1 + right``.  ``out`` is ``(height + 1, n, n_trees)`` node
    indices per level when ``full``, else ``(1, n, n_trees)`` leaf numbers."""
    n, T = X.shape[0], feat.shape[0]
    first_leaf = 2**height - 1
    node = np.zeros(T, dtype=np.intp)
    for i in range(n):
        x = X[i]
        node[:] = 0
        if full:
            out[0, i, :] = 0
        # level by level across the trees: T independent walks side by side
        for depth in range(height):
            for t in range(T):
                k = node[t]
                node[t] = 2 * k + 1 + (x[feat[t, k]] >= thr[t, k])
            if full:
                out[depth + 1, i, :] = node
        if not full:
            for t in range(T):
                out[0, i, t] = node[t] - first_leaf


def _build_trees(n_trees: int, height: int, limits: list[tuple[float, float]], seed: int | None):
    """Replay River's ``make_padded_tree`` RNG calls into flat arrays."""
    rng = random.Random(seed)
    n_internal = 2**height - 1
    feat = np.zeros((n_trees, max(n_internal, 1)), dtype=np.int64)
    thr = np.zeros((n_trees, max(n_internal, 1)), dtype=np.float64)
    keys = list(range(len(limits)))
    lim = [list(b) for b in limits]

    def grow(t: int, node: int, depth: int) -> None:
        if depth == height:
            return
        on = rng.choices(population=keys, weights=[lim[i][1] - lim[i][0] for i in keys])[0]
        a, b = lim[on]
        at = rng.uniform(a + _PADDING * (b - a), b - _PADDING * (b - a))
        feat[t, node], thr[t, node] = on, at
        lim[on][1] = at
        grow(t, 2 * node + 1, depth + 1)
        lim[on][1] = b
        lim[on][0] = at
        grow(t, 2 * node + 2, depth + 1)
        lim[on][0] = a

    for t in range(n_trees):
        grow(t, 0, 0)
    return feat, thr


class HalfSpaceTrees:
    """Vectorised Half-Space Trees with River's semantics.

    Parameters are River's: ``n_trees``, ``height`` (a tree has ``height+1``
    levels), ``window_size``, ``limits`` (``[(lo, hi)]`` per feature, default
    ``(0, 1)`` each, or a dict ``{index: (lo, hi)}``) and ``seed``.  Features
    are the columns of the arrays passed in; NaN means "missing" (River's
    missing key: the walk follows the child with the larger learning mass).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.5], [0.45], [0.43], [0.44], [0.445], [0.45], [0.0]])
    >>> hst = HalfSpaceTrees(n_trees=5, height=3, window_size=3, seed=42)
    >>> hst.learn_batch(X[:3])
    >>> [round(float(s), 3) for s in hst.score_then_learn(X)]
    [0.107, 0.071, 0.107, 0.107, 0.107, 0.071, 0.853]
    """

    def __init__(
        self,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        limits: list | dict | None = None,
        seed: int | None = None,
    ):
        self.n_trees = int(n_trees)
        self.height = int(height)
        self.window_size = int(window_size)
        self.limits = limits
        # a fixed seed makes trees reproducible from the state alone
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        self.n_features: int | None = None
        self.counter = 0
        self.first_window = True
        self._n_nodes = 2 ** (self.height + 1) - 1
        self._r = None

    # -- trees ---------------------------------------------------------------
    def _limits_for(self, d: int) -> list[tuple[float, float]]:
        lim = self.limits
        if lim is None:
            return [(0.0, 1.0)] * d
        if isinstance(lim, dict):
            return [tuple(lim.get(i, lim.get(str(i), (0.0, 1.0)))) for i in range(d)]
        if len(lim) != d:
            raise ValueError(f"limits has {len(lim)} entries for {d} features")
        return [tuple(b) for b in lim]

    def _init(self, d: int) -> None:
        self.n_features = d
        self._feat, self._thr = _build_trees(self.n_trees, self.height, self._limits_for(d), self.seed)
        T, h = self.n_trees, self.height
        # Two exact bookkeeping strategies, chosen by which is cheaper:
        # "table" (small trees): learn by counting leaves only (a node's mass
        # is the sum of the leaves below it) and score with a per-leaf table
        # of River's early-stopping sums, rebuilt at each pivot;
        # "path" (tall trees): increment and gather masses along each path,
        # touching only visited nodes.
        self._table = self.window_size * (h + 1) >= 2 ** (h + 1)
        self._r = np.zeros((T, self._n_nodes), dtype=np.int64)
        if self._table:
            self._leaf_l = np.zeros((T, 2**h), dtype=np.int64)
            self._F = np.zeros((T, 2**h), dtype=np.int64)
        else:
            self._l = np.zeros((T, self._n_nodes), dtype=np.int64)
            self._touched_l: list[np.ndarray] = []
            self._touched_r: list[np.ndarray] = []

    def _full_from_leaves(self, leaves: np.ndarray) -> np.ndarray:
        """Masses of every node from leaf counts (children sum to parents);
        ``leaves`` is ``(..., n_trees, 2**height)``."""
        h = self.height
        out = np.zeros(leaves.shape[:-1] + (self._n_nodes,), dtype=np.int64)
        out[..., 2**h - 1 :] = leaves
        for d in range(h - 1, -1, -1):
            child = out[..., 2 ** (d + 1) - 1 : 2 ** (d + 2) - 1]
            out[..., 2**d - 1 : 2 ** (d + 1) - 1] = child[..., 0::2] + child[..., 1::2]
        return out

    def _leaf_table(self, r: np.ndarray | None = None) -> np.ndarray:
        """River's walk score for every leaf: sum of r_mass * 2**depth down the
        path, stopping after the first node with r_mass < size_limit.
        ``r`` is ``(..., n_trees, n_nodes)`` (default: the reference masses)."""
        r_all = self._r if r is None else r
        h, lim = self.height, self.size_limit
        r0 = r_all[..., 0:1]
        S, A = r0.copy(), r0 >= lim
        for d in range(1, h + 1):
            r = r_all[..., 2**d - 1 : 2 ** (d + 1) - 1]
            S, A = np.repeat(S, 2, axis=-1), np.repeat(A, 2, axis=-1)
            S = S + np.where(A, r * (2**d), 0)
            A = A & (r >= lim)
        return S

    def _run_table(self, leaves: np.ndarray, score: bool) -> np.ndarray | None:
        """Table mode, no missing values: every window of the batch at once.
        Rows of window ``w`` are scored with the table of window ``w - 1``."""
        n, T = leaves.shape
        L, ws = 2**self.height, self.window_size
        win = (self.counter + np.arange(n)) // ws  # 0 = the window in progress
        nW = int(win[-1]) + 1
        keys = ((win[:, None] * T + np.arange(T)[None, :]) * L + leaves).ravel()
        counts = np.bincount(keys, minlength=nW * T * L).reshape(nW, T, L)
        counts[0] += self._leaf_l
        done = (self.counter + n) // ws  # windows completed in this batch
        full = self._full_from_leaves(counts[:done]) if done else None
        out = None
        if score:
            tables = np.concatenate((self._F[None], self._leaf_table(full)), axis=0) if done else self._F[None]
            per_tree = tables[win[:, None], np.arange(T)[None, :], leaves]
            out = 1.0 - per_tree.sum(axis=1).astype(np.float64) / self.max_score
            if self.first_window:
                out[win == 0] = 0.0
        if done:
            self._r = full[-1]
            self._F = self._leaf_table()
            self.first_window = False
        self._leaf_l = counts[done].copy() if done < nW else np.zeros_like(self._leaf_l)
        self.counter = (self.counter + n) % ws
        return out

    @property
    def l_mass(self) -> np.ndarray:
        """Masses learned in the current window, every node."""
        return self._full_from_leaves(self._leaf_l) if self._table else self._l

    def _check(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[:, None]
        if self.n_features is None:
            self._init(X.shape[1])
        elif X.shape[1] != self.n_features:
            raise ValueError(f"expected {self.n_features} features, got {X.shape[1]}")
        return X

    @property
    def size_limit(self) -> float:
        return 0.1 * self.window_size

    @property
    def max_score(self) -> int:
        return self.n_trees * self.window_size * (2 ** (self.height + 1) - 1)

    def _paths(self, X: np.ndarray) -> np.ndarray:
        """Node index at every level, ``(height+1, n, n_trees)`` (level-major so
        every level is one contiguous block); in table mode only the leaf
        number, ``(1, n, n_trees)``."""
        full = not self._table
        out = np.empty((self.height + 1 if full else 1, len(X), self.n_trees), dtype=np.intp)
        _walk(np.ascontiguousarray(X), self._feat, self._thr, self.height, out, full)
        return out

    def _path_missing(self, x: np.ndarray) -> np.ndarray:
        """One record with missing values: River's rule uses current l_mass."""
        lm = self.l_mass
        out = np.zeros((self.n_trees, self.height + 1), dtype=np.intp)
        for t in range(self.n_trees):
            node = 0
            for depth in range(self.height):
                v = x[self._feat[t, node]]
                if np.isnan(v):
                    lft, rgt = 2 * node + 1, 2 * node + 2
                    node = rgt if lm[t, lft] < lm[t, rgt] else lft
                else:
                    node = 2 * node + 1 + int(v >= self._thr[t, node])
                out[t, depth + 1] = node
        if self._table:
            return (out[:, -1:] - (2**self.height - 1)).T
        return out.T

    def _score_paths(self, paths: np.ndarray) -> np.ndarray:
        n = paths.shape[1]
        if self.first_window:
            return np.zeros(n)
        T = self.n_trees
        if self._table:
            off = (np.arange(T, dtype=np.intp) * self._F.shape[1])[None, :]
            per_tree = np.take(self._F.reshape(-1), paths[0] + off)
            return 1.0 - per_tree.sum(axis=1).astype(np.float64) / self.max_score
        off = (np.arange(T, dtype=np.intp) * self._n_nodes)[None, None, :]
        r = np.take(self._r.reshape(-1), paths + off)  # (h+1, n, T)
        # a node counts only if every node above it had r_mass >= size_limit
        total = np.zeros(n, dtype=np.int64)
        alive = np.ones((n, T), dtype=bool)
        for d in range(self.height + 1):
            total += (np.where(alive, r[d], 0) * (2**d)).sum(axis=1)
            alive &= r[d] >= self.size_limit
        return 1.0 - total.astype(np.float64) / self.max_score  # integer sums: exact

    def _learn_paths(self, paths: np.ndarray) -> None:
        T = self.n_trees
        if self._table:
            nl = self._leaf_l.shape[1]
            flat = (paths[0] + (np.arange(T, dtype=np.intp) * nl)[None, :]).ravel()
            self._leaf_l += np.bincount(flat, minlength=self._leaf_l.size).reshape(self._leaf_l.shape)
            return
        flat = (paths + (np.arange(T, dtype=np.intp) * self._n_nodes)[None, None, :]).ravel()
        np.add.at(self._l.reshape(-1), flat, 1)
        self._touched_l.append(flat)

    def _pivot(self) -> None:
        if self._table:
            self._r = self._full_from_leaves(self._leaf_l)
            self._leaf_l[:] = 0
            self._F = self._leaf_table()
        else:
            # swap the arrays; clear only what the old reference window touched
            old = self._r
            for idx in self._touched_r:
                old.reshape(-1)[idx] = 0
            self._r, self._l = self._l, old
            self._touched_r, self._touched_l = self._touched_l, []
        self.first_window = False
        self.counter = 0

    # -- public API ----------------------------------------------------------
    def score_then_learn(self, X) -> np.ndarray:
        """Score every row with the model as it was just before that row, then
        learn it: River's ``score_one`` followed by ``learn_one``, row by row."""
        return self._run(X, score=True, learn=True)

    def learn_batch(self, X) -> None:
        """Learn every row (River's ``learn_one`` in order)."""
        self._run(X, score=False, learn=True)

    def score_batch(self, X) -> np.ndarray:
        """Scores in [0, 1] (high = anomalous) against the current reference
        masses, without learning."""
        return self._run(X, score=True, learn=False)

    def _run(self, X, score: bool, learn: bool):
        X = self._check(X)
        n = len(X)
        out = np.zeros(n)
        missing = np.isnan(X).any(axis=1)
        paths = self._paths(X)
        if learn and self._table and n and not missing.any():
            return self._run_table(paths[0], score)
        if not learn:
            if missing.any():
                for i in np.flatnonzero(missing):
                    paths[:, i] = self._path_missing(X[i])
            out[:] = self._score_paths(paths)
            return out
        pos = 0
        while pos < n:
            take = min(n - pos, self.window_size - self.counter)
            sl = slice(pos, pos + take)
            if missing[sl].any():
                # the walk of a missing value depends on masses learned by the
                # records just before it: go record by record in this chunk
                for i in range(pos, pos + take):
                    if missing[i]:
                        paths[:, i] = self._path_missing(X[i])
                    if score:
                        out[i] = self._score_paths(paths[:, i : i + 1])[0]
                    self._learn_paths(paths[:, i : i + 1])
            else:
                if score:
                    out[sl] = self._score_paths(paths[:, sl])
                self._learn_paths(paths[:, sl])
            self.counter += take
            pos += take
            if self.counter == self.window_size:
                self._pivot()
        return out if score else None

    def state_dict(self) -> dict[str, Any]:
        lim = self.limits
        if isinstance(lim, dict):
            lim = {str(k): list(v) for k, v in lim.items()}
        elif lim is not None:
            lim = [list(v) for v in lim]
        return {
            "params": {
                "n_trees": self.n_trees,
                "height": self.height,
                "window_size": self.window_size,
                "limits": lim,
                "seed": self.seed,
            },
            "n_features": self.n_features,
            "counter": self.counter,
            "first_window": self.first_window,
            # trees are rebuilt from the seed; masses are the learned state
            "l_mass": None if self._r is None else self.l_mass.tolist(),
            "r_mass": None if self._r is None else self._r.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        p = dict(state["params"])
        if isinstance(p["limits"], dict):
            p["limits"] = {int(k): tuple(v) for k, v in p["limits"].items()}
        m = cls(**p)
        if state["n_features"] is not None:
            m._init(int(state["n_features"]))
            shape = (m.n_trees, m._n_nodes)
            lm = np.asarray(state["l_mass"], dtype=np.int64).reshape(shape)
            m._r = np.asarray(state["r_mass"], dtype=np.int64).reshape(shape)
            if m._table:
                m._leaf_l = lm[:, 2**m.height - 1 :].copy()
                m._F = m._leaf_table()
            else:
                m._l = lm
                m._touched_l = [np.flatnonzero(lm)]
                m._touched_r = [np.flatnonzero(m._r)]
        m.counter = int(state["counter"])
        m.first_window = bool(state["first_window"])
        return m


class HSTDetector(Detector):
    """Anomaly-ratio detector on top of :class:`HalfSpaceTrees`.

    The model is trained on a reference sample (scored progressively, as live
    data will be), and the anomaly-score threshold is the reference quantile
    that flags ``target_rate`` of normal records.  ``update`` scores (then
    learns) a batch; ``statistic`` is the fraction of records above the score
    threshold (the anomaly ratio) and ``threshold`` the largest ratio a batch
    of that size reaches with probability ``1 - alpha`` when records are
    normal (binomial upper quantile): same scale, and ``alpha`` is the false
    alarm probability per batch.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ref = rng.uniform(0.3, 0.7, size=(2000, 3))
    >>> det = HSTDetector(ref, target_rate=0.01, seed=1)
    >>> det.update(rng.uniform(0.3, 0.7, size=(1000, 3))).detected
    False
    >>> bad = rng.uniform(0.3, 0.7, size=(1000, 3)); bad[:100] = 0.98
    >>> det.update(bad).detected
    True
    """

    name = "hst"

    def __init__(
        self,
        reference,
        target_rate: float = 0.01,
        alpha: float = 1e-4,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        limits: list | dict | None = None,
        seed: int | None = 0,
        _model: HalfSpaceTrees | None = None,
        _score_threshold: float | None = None,
    ):
        self.target_rate = float(target_rate)
        self.alpha = float(alpha)
        self.n_seen = 0
        if _model is not None:
            self.model, self.score_threshold = _model, float(_score_threshold)
            return
        ref = np.asarray(reference, dtype=np.float64)
        if ref.ndim == 1:
            ref = ref[:, None]
        if limits is None:
            # River assumes [0, 1]; outside it take the reference range
            lo, hi = np.nanmin(ref, axis=0), np.nanmax(ref, axis=0)
            if (lo < 0).any() or (hi > 1).any():
                span = np.where(hi > lo, hi - lo, 1.0)
                limits = [(float(a - 0.1 * s), float(b + 0.1 * s)) for a, b, s in zip(lo, hi, span)]
        self.model = HalfSpaceTrees(n_trees, height, window_size, limits, seed)
        if len(ref) < 2 * window_size:
            raise ValueError(f"reference needs at least 2 windows ({2 * window_size} rows)")
        s = self.model.score_then_learn(ref)[window_size:]
        self.score_threshold = float(np.quantile(s, 1.0 - self.target_rate))

    def update(self, values: np.ndarray) -> DriftResult | None:
        X = np.asarray(values, dtype=np.float64)
        if X.ndim == 1:
            X = X[:, None]
        if len(X) == 0:
            return None
        scores = self.model.score_then_learn(X)
        self.n_seen += len(X)
        flagged = scores > self.score_threshold
        ratio = float(flagged.mean())
        n = len(X)
        limit = float(stats.binom.ppf(1.0 - self.alpha, n, self.target_rate)) / n
        top = np.argsort(-scores, kind="stable")[:5]
        return DriftResult(
            statistic=ratio,
            threshold=limit,
            detected=ratio > limit,
            n_seen=self.n_seen,
            change_index=self.n_seen - n,
            examples=tuple(int(i) for i in top if flagged[i]),
            detail=(
                f"HST: {flagged.sum()} of {n} records ({ratio:.2%}) score above "
                f"{self.score_threshold:.3f}; expected {self.target_rate:.2%}, alarm above {limit:.2%}"
            ),
            extra={"anomaly_ratio": ratio, "max_score": float(scores.max())},
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "target_rate": self.target_rate,
            "alpha": self.alpha,
            "n_seen": self.n_seen,
            "score_threshold": self.score_threshold,
            "model": self.model.state_dict(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        d = cls(
            None,
            target_rate=state["target_rate"],
            alpha=state["alpha"],
            _model=HalfSpaceTrees.from_state(state["model"]),
            _score_threshold=state["score_threshold"],
        )
        d.n_seen = int(state["n_seen"])
        return d
