"""Route: group a batch's valid records by model into columnar ModelBatches.

This is the only place that walks records one by one after decoding: each
record is visited once to scatter its values into per-model columns; from here
on everything is numpy.
"""

from __future__ import annotations

import operator
from collections import defaultdict

import numpy as np

from monitor.wire.batch import ModelBatch
from monitor.wire.schema import Record


def _object_array(values: list) -> np.ndarray:
    # np.array(list_of_str) would build a fixed-width unicode array and turn
    # None into "None"; detectors expect object arrays with real None.
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _category(value) -> str | None:
    if value is None or type(value) is str:
        return value
    if type(value) is bool:
        return "true" if value else "false"
    return repr(float(value))


def _float_array(values: list) -> np.ndarray:
    return np.array(values, dtype=np.float64)  # None becomes NaN


def build_model_batch(model_id: str, records: list[Record]) -> ModelBatch:
    """Columns for one model's records (arrival order kept).

    A feature is numeric when every non-null value in the batch is a number,
    otherwise categorical: bools become ``"true"``/``"false"`` and numbers are
    compared as their string form.
    """
    n = len(records)
    numeric: dict[str, np.ndarray] = {}
    categorical: dict[str, np.ndarray] = {}
    for name, column in _feature_columns([record.features for record in records]).items():
        types = set(map(type, column))
        if str not in types and bool not in types:
            numeric[name] = _float_array(column)
        else:
            categorical[name] = _object_array([_category(v) for v in column])

    classes: list[str] = []
    probabilities = None
    has_probabilities = np.array([r.probabilities is not None for r in records])
    if has_probabilities.any():
        columns = _feature_columns([r.probabilities or {} for r in records])
        classes = list(columns)
        # a class missing from a record's probabilities has probability 0
        probabilities = np.nan_to_num(np.array(list(columns.values()), dtype=np.float64).T, nan=0.0)
        probabilities[~has_probabilities] = np.nan

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


def _feature_columns(rows: list[dict]) -> dict[str, list]:
    """Transpose feature dicts into columns (None where a record lacks one)."""
    names = list(rows[0]) if rows else []
    if names and set(map(len, rows)) == {len(names)}:
        # The usual case, every record with the same features: one C-level
        # itemgetter call per record and a zip transpose. Same length and no
        # KeyError means the same keys.
        get = operator.itemgetter(*names)
        try:
            values = list(map(get, rows))
        except KeyError:
            pass
        else:
            if len(names) == 1:
                return {names[0]: values}
            return dict(zip(names, map(list, zip(*values))))
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return {name: [row.get(name) for row in rows] for name in seen}


def group_by_model(records: list[Record]) -> dict[str, list[Record]]:
    groups: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        groups[record.model_id].append(record)
    return groups
