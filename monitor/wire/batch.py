"""ModelBatch: one model's share of a poll batch, as numpy columns.

This is the hand-off between ``route`` and ``monitor`` in the data flow
(DESIGN.md). Everything a detector needs is a column here; nothing downstream
walks records one by one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class ModelBatch:
    """Columns for ``n`` records of one model, in arrival order.

    - ``numeric``: feature name -> float64 array, NaN where the value is missing.
    - ``categorical``: feature name -> object array of ``str`` (bools arrive as
      ``"true"``/``"false"``), ``None`` where missing.
    - ``predicted_class``: object array of class labels as ``str`` (``None`` where
      the prediction is a bare number); ``prediction_value`` float64 for numeric
      (regression) predictions, NaN otherwise.
    - ``score``: float64, the prediction's score/confidence, NaN where absent.
    - ``probabilities``: ``(n, len(classes))`` float64 with NaN rows where the
      record had no probabilities; ``classes`` names the columns.
    - ``timestamps``: event time, epoch seconds (float64).
    - ``request_ids``, ``model_versions``, ``artifact_digests``, ``canary``
      (``tags["canary"]``): object arrays, ``None`` where absent.
    - ``tags``: the raw tag dicts (or ``None``), for segment-aware detectors.
    """

    model_id: str
    n: int
    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    categorical: dict[str, np.ndarray] = field(default_factory=dict)
    predicted_class: np.ndarray | None = None
    prediction_value: np.ndarray | None = None
    score: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    classes: list[str] = field(default_factory=list)
    timestamps: np.ndarray | None = None
    request_ids: np.ndarray | None = None
    model_versions: np.ndarray | None = None
    artifact_digests: np.ndarray | None = None
    latency_ms: np.ndarray | None = None
    canary: np.ndarray | None = None
    tags: list[dict[str, str] | None] = field(default_factory=list)

    def slice(self, start: int, stop: int) -> ModelBatch:
        """Rows ``start:stop`` as a new batch (views where numpy allows)."""
        return self.subset(slice(start, stop))

    def subset(self, rows: slice | np.ndarray) -> ModelBatch:
        """The rows selected by a slice or a boolean mask, as a new batch."""

        def cut(column):
            return None if column is None else column[rows]

        if isinstance(rows, slice):
            n = len(range(*rows.indices(self.n)))
            tags = self.tags[rows]
        else:
            n = int(np.count_nonzero(rows))
            tags = [tag for tag, keep in zip(self.tags, rows) if keep]
        return ModelBatch(
            model_id=self.model_id,
            n=n,
            numeric={name: cut(col) for name, col in self.numeric.items()},
            categorical={name: cut(col) for name, col in self.categorical.items()},
            predicted_class=cut(self.predicted_class),
            prediction_value=cut(self.prediction_value),
            score=cut(self.score),
            probabilities=cut(self.probabilities),
            classes=list(self.classes),
            timestamps=cut(self.timestamps),
            request_ids=cut(self.request_ids),
            model_versions=cut(self.model_versions),
            artifact_digests=cut(self.artifact_digests),
            latency_ms=cut(self.latency_ms),
            canary=cut(self.canary),
            tags=tags,
        )
