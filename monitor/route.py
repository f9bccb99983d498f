"""Route: group a batch's valid records by model into columnar ModelBatches.

This is the only place that walks records one by one after decoding: each
record is visited once to scatter its values into per-model columns; from here
on everything is numpy.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from monitor.batch import ModelBatch
from monitor.schema import Record


def _object_array(values: list) -> np.ndarray:
    # np.array(list_of_str) would build a fixed-width unicode array and turn
    # None into "None"; detectors expect object arrays with real None.
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _float_array(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def build_model_batch(model_id: str, records: list[Record]) -> ModelBatch:
    """Columns for one model's records (arrival order kept).

    A feature is numeric when every non-null value in the batch is a number,
    otherwise categorical (numbers then compared as their string form).
    """
    n = len(records)
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record.features))
    numeric: dict[str, np.ndarray] = {}
    categorical: dict[str, np.ndarray] = {}
    for name in names:
        column = [record.features.get(name) for record in records]
        if all(v is None or isinstance(v, float) for v in column):
            numeric[name] = _float_array(column)
        else:
            categorical[name] = _object_array(
                [v if v is None or isinstance(v, str) else repr(v) for v in column]
            )

    classes: list[str] = []
    probabilities = None
    if any(r.probabilities for r in records):
        seen: dict[str, None] = {}
        for record in records:
            if record.probabilities:
                seen.update(dict.fromkeys(record.probabilities))
        classes = list(seen)
        position = {c: j for j, c in enumerate(classes)}
        probabilities = np.full((n, len(classes)), np.nan)
        for i, record in enumerate(records):
            if record.probabilities:
                probabilities[i, :] = 0.0
                for cls, p in record.probabilities.items():
                    probabilities[i, position[cls]] = p

    return ModelBatch(
        model_id=model_id,
        n=n,
        numeric=numeric,
        categorical=categorical,
        predicted_class=_object_array([r.predicted_class for r in records]),
        prediction_value=_float_array([r.prediction_value for r in records]),
        score=_float_array([r.score for r in records]),
        probabilities=probabilities,
        classes=classes,
        timestamps=np.array([r.timestamp for r in records], dtype=np.float64),
        request_ids=_object_array([r.request_id for r in records]),
        model_versions=_object_array([r.model_version for r in records]),
        artifact_digests=_object_array([r.artifact_digest for r in records]),
        latency_ms=_float_array([r.latency_ms for r in records]),
        canary=_object_array([(r.tags or {}).get("canary") for r in records]),
        tags=[r.tags for r in records],
    )


def group_by_model(records: list[Record]) -> dict[str, list[Record]]:
    groups: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        groups[record.model_id].append(record)
    return groups
