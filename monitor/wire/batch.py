"""ModelBatch: one model's share of a poll batch, as numpy columns.

This is the hand-off between ``route`` and ``monitor`` in the data flow
(docs/architecture.md). Everything a detector needs is a column here; nothing downstream
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


def concat_batches(parts: list[ModelBatch]) -> ModelBatch:
    """One batch of the rows of ``parts``, in order. A feature or class absent
    from a part is missing (NaN / None) in its rows; a feature that is numeric
    in one part and categorical in another becomes categorical, numbers
    written as in ``repr(float)``."""
    if len(parts) == 1:
        return parts[0]
    n = sum(p.n for p in parts)
    categorical_names = dict.fromkeys(name for p in parts for name in p.categorical)
    numeric_names = [name for name in dict.fromkeys(name for p in parts for name in p.numeric)
                     if name not in categorical_names]

    def numeric(name):
        return np.concatenate([p.numeric.get(name, np.full(p.n, np.nan)) for p in parts])

    def categorical(name):
        out = []
        for p in parts:
            column = p.categorical.get(name)
            if column is None and name in p.numeric:
                column = np.empty(p.n, dtype=object)
                column[:] = [None if np.isnan(v) else repr(float(v)) for v in p.numeric[name]]
            out.append(np.full(p.n, None, dtype=object) if column is None else column)
        return np.concatenate(out)

    def objects(attr):
        return np.concatenate([getattr(p, attr) if getattr(p, attr) is not None else np.full(p.n, None, dtype=object)
                               for p in parts])

    def floats(attr):
        return np.concatenate([getattr(p, attr) if getattr(p, attr) is not None else np.full(p.n, np.nan)
                               for p in parts])

    classes = list(dict.fromkeys(c for p in parts for c in p.classes))
    probabilities = None
    if classes:
        probabilities = np.full((n, len(classes)), np.nan)
        row = 0
        for p in parts:
            if p.probabilities is not None and p.classes:
                cols = [classes.index(c) for c in p.classes]
                block = np.zeros((p.n, len(classes)))
                block[:, cols] = p.probabilities
                # rows without probabilities stay NaN; a class absent from a part has probability 0
                block[np.isnan(p.probabilities).any(axis=1)] = np.nan
                probabilities[row: row + p.n] = block
            row += p.n
    return ModelBatch(
        model_id=parts[0].model_id,
        n=n,
        numeric={name: numeric(name) for name in numeric_names},
        categorical={name: categorical(name) for name in categorical_names},
        predicted_class=objects("predicted_class"),
        prediction_value=floats("prediction_value"),
        score=floats("score"),
        probabilities=probabilities,
        classes=classes,
        timestamps=floats("timestamps"),
        request_ids=objects("request_ids"),
        model_versions=objects("model_versions"),
        artifact_digests=objects("artifact_digests"),
        latency_ms=floats("latency_ms"),
        canary=objects("canary"),
        tags=[tag for p in parts for tag in p.tags],
    )


def batch_state(batch: ModelBatch) -> dict:
    """A batch as plain data (for the rows a model holds between chunks)."""

    def plain(column):
        return None if column is None else column.tolist()

    return {
        "model_id": batch.model_id,
        "n": batch.n,
        "numeric": {k: v.tolist() for k, v in batch.numeric.items()},
        "categorical": {k: v.tolist() for k, v in batch.categorical.items()},
        "classes": list(batch.classes),
        "tags": batch.tags,
        **{attr: plain(getattr(batch, attr)) for attr in _FLOAT_COLUMNS + _OBJECT_COLUMNS + ("probabilities",)},
    }


def batch_from_state(state: dict) -> ModelBatch:
    def objects(values):
        if values is None:
            return None
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out

    def floats(values):
        return None if values is None else np.asarray(values, dtype=np.float64)

    probabilities = state["probabilities"]
    return ModelBatch(
        model_id=state["model_id"],
        n=state["n"],
        numeric={k: floats(v) for k, v in state["numeric"].items()},
        categorical={k: objects(v) for k, v in state["categorical"].items()},
        classes=list(state["classes"]),
        tags=list(state["tags"]),
        probabilities=None if probabilities is None
        else np.asarray(probabilities, dtype=np.float64).reshape(state["n"], len(state["classes"])),
        **{attr: floats(state[attr]) for attr in _FLOAT_COLUMNS},
        **{attr: objects(state[attr]) for attr in _OBJECT_COLUMNS},
    )


_FLOAT_COLUMNS = ("prediction_value", "score", "timestamps", "latency_ms")
_OBJECT_COLUMNS = ("predicted_class", "request_ids", "model_versions", "artifact_digests", "canary")
