"""Canary probes: golden queries replayed through the live model must keep their answers.

A canary probe is a fixed input that a prober sends to the serving endpoint
every so often, tagged ``tags.canary = "<probe id>"``.  A deterministic model
answers it identically every time, so any change of label, or a score move
beyond rounding, means the function behind the endpoint changed: a swapped or
fine-tuned artifact, a different preprocessing, a tampered runtime.  Probes
can also carry inputs with suspected triggers or known-hard cases.

Expectations come either from a dict (``{"probe-3": {"label": "7", "score":
0.98}}``; the daemon reads them from a file written when the model was
approved) or are learned from the first ``learn_first`` replays of each probe,
which must happen while the approved model serves.

Decision per replay: **label** not among the expected labels (the labels seen
while learning; one for a deterministic model), or ``|score - expected| >
tolerance`` with ``tolerance = max(score_tolerance, 4 * spread)`` where
``spread`` is the score range seen while learning (so mildly non-deterministic
serving, e.g. GPU reductions, does not alert).  Default ``score_tolerance =
0.05``: far above float noise of a deterministic model (~1e-6), far below
what retraining or swapping a model moves a confident probe's score.  False
alarms are therefore only possible if the serving path is non-deterministic by
more than the spread seen while learning; nothing here is a statistical test.

``statistic`` is ``|score - expected|`` (0 when a score is absent) plus 1 when
the label differs; ``threshold`` is the probe's tolerance.

>>> import numpy as np
>>> obj = lambda *v: np.array(v, dtype=object)
>>> cp = CanaryProbes(learn_first=2)
>>> cp.update(obj("p1", None, "p1"), obj("7", "3", "7"), np.array([0.98, 0.5, 0.98]))
[]
>>> r = cp.update(obj("p1"), obj("1"), np.array([0.91]), request_ids=obj("req-9"))
>>> r[0].detected, r[0].extra["probe"], r[0].extra["expected_label"], r[0].extra["request_ids"]
(True, 'p1', '7', ['req-9'])
>>> CanaryProbes.from_state(cp.state_dict()).state_dict() == cp.state_dict()
True
"""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np

from detectors.base import DriftResult


class CanaryProbes:
    """Watch canary probe replays for changed answers.

    Parameters
    ----------
    learn_first
        Replays per probe used to learn its expectation (ignored for probes
        given in ``expectations``).
    score_tolerance
        Minimum absolute score tolerance.
    expectations
        ``{probe_id: {"label": str | None, "score": float | None,
        "tolerance": float | None}}``; such probes are checked from their
        first replay.
    max_probes
        Probes tracked; replays of further probe ids are counted in ``refused``.
    max_examples
        Request ids per result.
    """

    name = "canary"

    def __init__(
        self,
        learn_first: int = 3,
        score_tolerance: float = 0.05,
        expectations: dict[str, dict[str, Any]] | None = None,
        max_probes: int = 256,
        max_examples: int = 10,
    ):
        self.learn_first = int(learn_first)
        self.score_tolerance = float(score_tolerance)
        self.max_probes = int(max_probes)
        self.max_examples = int(max_examples)
        self.n_seen = 0
        self.refused = 0
        # probe id -> plain dict: labels (expected), score, tolerance, learning lists, counters
        self.probes: dict[str, dict[str, Any]] = {}
        for pid, exp in (expectations or {}).items():
            self.set_expectation(pid, exp.get("label"), exp.get("score"), exp.get("tolerance"))

    def set_expectation(self, probe: str, label: str | None, score: float | None = None,
                        tolerance: float | None = None) -> None:
        """Pin a probe's expected answer (e.g. from the file written at approval)."""
        self.probes[str(probe)] = {
            "labels": None if label is None else [str(label)],
            "score": None if score is None else float(score),
            "tolerance": float(tolerance if tolerance is not None else self.score_tolerance),
            "learn_labels": [], "learn_scores": [], "learned": True,
            "replays": 0, "failures": 0, "last_label": None, "last_score": None,
        }

    def expectations(self) -> dict[str, dict[str, Any]]:
        """Learned/pinned expectations, in the form the constructor accepts (to save at approval)."""
        return {pid: {"label": p["labels"][0] if p["labels"] else None, "score": p["score"],
                      "tolerance": p["tolerance"]}
                for pid, p in self.probes.items() if p["learned"]}

    def update(
        self,
        canary: np.ndarray,
        predicted_class: np.ndarray | None = None,
        score: np.ndarray | None = None,
        request_ids: np.ndarray | None = None,
    ) -> list[DriftResult]:
        """Check the batch's canary replays; one result per probe that failed in it."""
        canary = np.asarray(canary, dtype=object)
        n = len(canary)
        self.n_seen += n
        is_probe = canary != None  # noqa: E711 - elementwise on an object array
        rows = np.nonzero(is_probe)[0]
        if len(rows) == 0:
            return []
        labels = (np.full(n, None, dtype=object) if predicted_class is None
                  else np.asarray(predicted_class, dtype=object))
        scores = np.full(n, np.nan) if score is None else np.asarray(score, dtype=np.float64)
        rid = None if request_ids is None else np.asarray(request_ids, dtype=object)
        results = []
        # canary replays are a small fraction of traffic: the loop is over them only
        ids, inv = np.unique(canary[rows].astype(str), return_inverse=True)
        for g, pid in enumerate(ids):
            pid = str(pid)
            mine = rows[inv == g]
            probe = self.probes.get(pid)
            if probe is None:
                if len(self.probes) >= self.max_probes:
                    self.refused += len(mine)
                    continue
                probe = self.probes[pid] = {
                    "labels": None, "score": None, "tolerance": self.score_tolerance,
                    "learn_labels": [], "learn_scores": [], "learned": False,
                    "replays": 0, "failures": 0, "last_label": None, "last_score": None,
                }
            bad: list[int] = []
            worst = 0.0
            for i in mine:
                lab = None if labels[i] is None else str(labels[i])
                sc = float(scores[i])
                probe["replays"] += 1
                probe["last_label"], probe["last_score"] = lab, (None if math.isnan(sc) else sc)
                if not probe["learned"]:
                    probe["learn_labels"].append(lab)
                    probe["learn_scores"].append(None if math.isnan(sc) else sc)
                    if len(probe["learn_labels"]) >= self.learn_first:
                        self._finish_learning(probe)
                    continue
                dev = 0.0
                if probe["score"] is not None and not math.isnan(sc):
                    dev = abs(sc - probe["score"])
                stat = dev + (1.0 if probe["labels"] is not None and lab not in probe["labels"] else 0.0)
                if stat > probe["tolerance"]:
                    bad.append(int(i))
                    worst = max(worst, stat)
            if bad:
                probe["failures"] += len(bad)
                i0 = bad[-1]
                lab = None if labels[i0] is None else str(labels[i0])
                exp_label = probe["labels"][0] if probe["labels"] else None
                label_changed = probe["labels"] is not None and lab not in probe["labels"]
                what = (f"now answers {lab!r} instead of {exp_label!r}" if label_changed
                        else f"score moved from {probe['score']:.3f} to {float(scores[i0]):.3f}")
                results.append(DriftResult(
                    statistic=float(worst), threshold=float(probe["tolerance"]), detected=True,
                    n_seen=self.n_seen, examples=tuple(bad[: self.max_examples]),
                    detail=(f"Canary probe {pid} {what} ({len(bad)} of {len(mine)} replays in this batch): "
                            f"the model behind the endpoint changed."),
                    extra={
                        "probe": pid, "expected_label": exp_label, "observed_label": lab,
                        "expected_score": probe["score"],
                        "observed_score": None if math.isnan(float(scores[i0])) else float(scores[i0]),
                        "label_changed": bool(label_changed), "failures": len(bad),
                        "request_ids": [] if rid is None else [rid[i] for i in bad[: self.max_examples]],
                    },
                ))
        return results

    def _finish_learning(self, probe: dict[str, Any]) -> None:
        labs = [x for x in probe["learn_labels"] if x is not None]
        scs = [x for x in probe["learn_scores"] if x is not None]
        # every label seen while learning is acceptable: a probe near a decision
        # boundary of a slightly non-deterministic model must not page anyone
        probe["labels"] = sorted(set(labs)) or None
        probe["score"] = float(np.mean(scs)) if scs else None
        spread = (max(scs) - min(scs)) if scs else 0.0
        probe["tolerance"] = max(self.score_tolerance, 4.0 * spread)
        probe["learned"] = True
        probe["learn_labels"], probe["learn_scores"] = [], []

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "learn_first": self.learn_first, "score_tolerance": self.score_tolerance,
            "max_probes": self.max_probes, "max_examples": self.max_examples,
            "n_seen": self.n_seen, "refused": self.refused,
            "probes": {k: dict(v, labels=None if v["labels"] is None else list(v["labels"]),
                              learn_labels=list(v["learn_labels"]), learn_scores=list(v["learn_scores"]))
                       for k, v in self.probes.items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        cp = cls(state["learn_first"], state["score_tolerance"], None, state["max_probes"], state["max_examples"])
        cp.n_seen = int(state["n_seen"])
        cp.refused = int(state["refused"])
        cp.probes = {k: dict(v) for k, v in state["probes"].items()}
        return cp
