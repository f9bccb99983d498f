"""Wire schema v1: decode a whole poll batch into valid records and rejects.

One call per batch (``decode_batch``). JSON parsing is orjson; validation is a
handful of plain type checks per record, which measured faster than pydantic
per record and far faster than ``TypeAdapter(list[...])`` (DESIGN.md, measured
facts). Every record that fails comes back as a :class:`Reject` carrying its
original bytes and one reason from :data:`REJECT_REASONS`, so the caller can
dead-letter and count it; nothing is dropped silently.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

#: The bounded set of reasons (the ``reason`` label of
#: ``infersight_records_rejected_total``). Keep it closed: labels are public.
REJECT_REASONS = (
    "record_too_large",   # raw message longer than limits.max_record_bytes
    "invalid_json",       # not UTF-8 JSON
    "not_an_object",      # JSON, but not an object at the top level
    "missing_field",      # model_id, features or prediction absent
    "invalid_model_id",   # not 1-128 chars of [A-Za-z0-9._:-]
    "invalid_type",       # a field has the wrong JSON type
    "invalid_value",      # NaN/inf, bad timestamp, bad digest, probability outside [0, 1]
    "too_many_features",  # more than limits.max_features_per_record
    "model_limit",        # a new model beyond limits.max_models (refused by the router)
)

MODEL_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
MAX_NAME_LENGTH = 128  # feature names, class labels, tag keys


@dataclass(slots=True)
class Record:
    """A validated inference record (wire schema v1), values already typed."""

    model_id: str
    timestamp: float  # epoch seconds
    features: dict[str, float | str | None]  # bools become "true"/"false"
    predicted_class: str | None
    prediction_value: float | None
    score: float | None
    probabilities: dict[str, float] | None
    request_id: str | None = None
    model_version: str | None = None
    artifact_digest: str | None = None
    latency_ms: float | None = None
    tags: dict[str, str] | None = None


@dataclass(slots=True)
class Reject:
    """A message that failed decoding or validation, kept whole for the DLQ."""

    raw: bytes
    reason: str
    detail: str
    index: int  # position in the batch, so the caller can find its offset


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def decode_batch(
    raws: list[bytes],
    *,
    max_record_bytes: int = 65536,
    max_features: int = 256,
    default_timestamps: list[float] | None = None,
) -> tuple[list[Record], list[int], list[Reject]]:
    """Decode and validate a batch of raw messages.

    Returns ``(records, indices, rejects)`` where ``indices[i]`` is the batch
    position of ``records[i]``. ``default_timestamps`` (e.g. Kafka message
    timestamps) fill in records that carry no ``timestamp``.

    >>> recs, idx, bad = decode_batch([
    ...     b'{"model_id": "m", "features": {"x": 1.5, "c": "fr"}, "prediction": 0.7}',
    ...     b'{"model_id": "m", "features": {"x": NaN}, "prediction": 1}',
    ...     b'not json'])
    >>> recs[0].features, recs[0].prediction_value
    ({'x': 1.5, 'c': 'fr'}, 0.7)
    >>> [(r.index, r.reason) for r in bad]
    [(1, 'invalid_value'), (2, 'invalid_json')]
    """
    records: list[Record] = []
    indices: list[int] = []
    rejects: list[Reject] = []
    for i, raw in enumerate(raws):
        try:
            if len(raw) > max_record_bytes:
                raise _Invalid("record_too_large", f"{len(raw)} bytes > limit {max_record_bytes}")
            obj = _parse_json(raw)
            fallback_ts = default_timestamps[i] if default_timestamps is not None else None
            records.append(_validate(obj, max_features, fallback_ts))
            indices.append(i)
        except _Invalid as exc:
            rejects.append(Reject(raw=raw, reason=exc.reason, detail=exc.detail, index=i))
    return records, indices, rejects


def _parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson refuses NaN/Infinity literals and overflowing numbers outright.
        # The stdlib accepts them, which lets us tell "non-finite number" (a
        # value problem the sender can fix in their serializer) from garbage.
        try:
            json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise _Invalid("invalid_json", str(exc)) from None
        raise _Invalid("invalid_value", "non-finite number (NaN or Infinity)") from None


def _finite(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid("invalid_type", f"{field} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise _Invalid("invalid_value", f"{field} is not finite")
    return value


def _optional_str(obj: dict, field: str) -> str | None:
    value = obj.get(field)
    if value is None or isinstance(value, str):
        return value
    raise _Invalid("invalid_type", f"{field} must be a string or null, got {type(value).__name__}")


def _label(value: Any, field: str) -> str:
    # Class labels may be sent as strings, ints or bools; they are compared as strings.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if len(value) > MAX_NAME_LENGTH:
            raise _Invalid("invalid_value", f"{field} longer than {MAX_NAME_LENGTH} characters")
        return value
    if isinstance(value, int):
        return str(value)
    raise _Invalid("invalid_type", f"{field} must be a string, integer or bool")


def parse_timestamp(value: Any) -> float:
    """RFC 3339 string or epoch seconds -> epoch seconds (float)."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise _Invalid("invalid_value", f"timestamp {value[:40]!r} is not RFC 3339") from None
        if parsed.tzinfo is None:
            raise _Invalid("invalid_value", "timestamp has no UTC offset")
        return parsed.timestamp()
    seconds = _finite(value, "timestamp")
    if seconds < 0:
        raise _Invalid("invalid_value", "timestamp is negative")
    return seconds


def _validate(obj: Any, max_features: int, fallback_ts: float | None) -> Record:
    if not isinstance(obj, dict):
        raise _Invalid("not_an_object", f"top level is a JSON {type(obj).__name__}")
    for required in ("model_id", "features", "prediction"):
        if required not in obj or obj[required] is None:
            raise _Invalid("missing_field", f"{required} is required")

    model_id = obj["model_id"]
    if not isinstance(model_id, str) or not MODEL_ID_RE.fullmatch(model_id):
        raise _Invalid("invalid_model_id", "model_id must be 1-128 characters of [A-Za-z0-9._:-]")

    raw_features = obj["features"]
    if not isinstance(raw_features, dict):
        raise _Invalid("invalid_type", "features must be an object")
    if len(raw_features) > max_features:
        raise _Invalid("too_many_features", f"{len(raw_features)} features > limit {max_features}")
    features: dict[str, float | str | None] = {}
    for name, value in raw_features.items():
        if len(name) > MAX_NAME_LENGTH:
            raise _Invalid("invalid_value", f"feature name longer than {MAX_NAME_LENGTH} characters")
        if value is None or isinstance(value, str):
            features[name] = value
        elif isinstance(value, bool):
            features[name] = "true" if value else "false"
        elif isinstance(value, (int, float)):
            features[name] = _finite(value, f"features.{name}")
        else:
            raise _Invalid("invalid_type", f"features.{name} must be a number, string, bool or null")

    predicted_class = prediction_value = score = None
    probabilities = None
    prediction = obj["prediction"]
    if isinstance(prediction, dict):
        if prediction.get("label") is not None:
            predicted_class = _label(prediction["label"], "prediction.label")
        if prediction.get("score") is not None:
            score = _finite(prediction["score"], "prediction.score")
        if prediction.get("probabilities") is not None:
            raw_probs = prediction["probabilities"]
            if not isinstance(raw_probs, dict):
                raise _Invalid("invalid_type", "prediction.probabilities must be an object")
            probabilities = {}
            for cls, p in raw_probs.items():
                p = _finite(p, "prediction.probabilities")
                if not 0.0 <= p <= 1.0:
                    raise _Invalid("invalid_value", f"probability of {cls!r} is outside [0, 1]")
                probabilities[_label(cls, "prediction.probabilities key")] = p
        if predicted_class is None and score is None and probabilities is None:
            raise _Invalid("missing_field", "prediction object needs label, score or probabilities")
    elif isinstance(prediction, (str, bool)):
        predicted_class = _label(prediction, "prediction")
    elif isinstance(prediction, (int, float)):
        prediction_value = _finite(prediction, "prediction")
    else:
        raise _Invalid("invalid_type", "prediction must be a number, string or object")

    if obj.get("timestamp") is not None:
        timestamp = parse_timestamp(obj["timestamp"])
    elif fallback_ts is not None:
        timestamp = fallback_ts
    else:
        raise _Invalid("missing_field", "timestamp is required when the message has none")

    digest = _optional_str(obj, "artifact_digest")
    if digest is not None and not DIGEST_RE.fullmatch(digest):
        raise _Invalid("invalid_value", "artifact_digest must be sha256:<64 lowercase hex>")

    latency = obj.get("latency_ms")
    if latency is not None:
        latency = _finite(latency, "latency_ms")

    tags = obj.get("tags")
    if tags is not None:
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            raise _Invalid("invalid_type", "tags must be an object of string values")

    return Record(
        model_id=model_id,
        timestamp=timestamp,
        features=features,
        predicted_class=predicted_class,
        prediction_value=prediction_value,
        score=score,
        probabilities=probabilities,
        request_id=_optional_str(obj, "request_id"),
        model_version=_optional_str(obj, "model_version"),
        artifact_digest=digest,
        latency_ms=latency,
        tags=tags,
    )


@dataclass(slots=True)
class LabelRecord:
    """Delayed ground truth for one request (labels topic)."""

    model_id: str
    request_id: str
    label: str
    timestamp: float | None


def decode_label_batch(raws: list[bytes], *, max_record_bytes: int = 65536) -> tuple[list[LabelRecord], list[Reject]]:
    """Decode label messages ``{"model_id", "request_id", "label", "timestamp"}``.

    >>> labels, bad = decode_label_batch([b'{"model_id": "m", "request_id": "r1", "label": 1}', b'{}'])
    >>> labels[0].label, [r.reason for r in bad]
    ('1', ['missing_field'])
    """
    labels: list[LabelRecord] = []
    rejects: list[Reject] = []
    for i, raw in enumerate(raws):
        try:
            if len(raw) > max_record_bytes:
                raise _Invalid("record_too_large", f"{len(raw)} bytes > limit {max_record_bytes}")
            obj = _parse_json(raw)
            if not isinstance(obj, dict):
                raise _Invalid("not_an_object", f"top level is a JSON {type(obj).__name__}")
            for required in ("model_id", "request_id", "label"):
                if obj.get(required) is None:
                    raise _Invalid("missing_field", f"{required} is required in a label message")
            model_id = obj["model_id"]
            if not isinstance(model_id, str) or not MODEL_ID_RE.fullmatch(model_id):
                raise _Invalid("invalid_model_id", "model_id must be 1-128 characters of [A-Za-z0-9._:-]")
            request_id = _optional_str(obj, "request_id")
            timestamp = parse_timestamp(obj["timestamp"]) if obj.get("timestamp") is not None else None
            labels.append(LabelRecord(model_id, request_id, _label(obj["label"], "label"), timestamp))
        except _Invalid as exc:
            rejects.append(Reject(raw=raw, reason=exc.reason, detail=exc.detail, index=i))
    return labels, rejects
