"""Decoding and validation: every reject reason, the limits, NaN/inf."""

import orjson
import pytest

from monitor.wire.schema import REJECT_REASONS, decode_batch

GOOD = {
    "model_id": "credit-risk",
    "model_version": "1.0",
    "artifact_digest": "sha256:" + "ab" * 32,
    "timestamp": "2026-11-30T08:00:00Z",
    "request_id": "r-1",
    "features": {"age": 41, "income": 5.2e4, "country": "fr", "returning": True, "missing": None},
    "prediction": {"label": "approve", "score": 0.93, "probabilities": {"approve": 0.93, "deny": 0.07}},
    "latency_ms": 12.5,
    "tags": {"canary": "probe-1"},
    "unknown_top_level_field": {"is": "ignored"},
}


def one(raw: bytes, **limits):
    records, _, rejects = decode_batch([raw], **limits)
    return records[0] if records else None, rejects[0] if rejects else None


def with_fields(**changes) -> bytes:
    record = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in record.items() if v is not ...})


def test_valid_record_is_typed():
    record, reject = one(orjson.dumps(GOOD))
    assert reject is None
    assert record.model_id == "credit-risk"
    assert record.timestamp == pytest.approx(1796025600.0)
    # bools stay bools here; the router makes them categorical "true"/"false"
    assert record.features == {"age": 41.0, "income": 52000.0, "country": "fr", "returning": True, "missing": None}
    assert (record.predicted_class, record.score) == ("approve", 0.93)
    assert record.probabilities == {"approve": 0.93, "deny": 0.07}
    assert record.tags == {"canary": "probe-1"}


@pytest.mark.parametrize(
    "prediction, expected",
    [
        (0.25, (None, 0.25, None)),
        ("spam", ("spam", None, None)),
        (True, ("true", None, None)),
        ({"label": 7, "score": 0.5}, ("7", None, 0.5)),
        ({"score": 0.8}, (None, None, 0.8)),
    ],
)
def test_prediction_forms(prediction, expected):
    record, reject = one(with_fields(prediction=prediction))
    assert reject is None
    assert (record.predicted_class, record.prediction_value, record.score) == expected


def test_epoch_timestamp_and_kafka_fallback():
    record, _ = one(with_fields(timestamp=1_700_000_000.5))
    assert record.timestamp == 1_700_000_000.5
    records, _, rejects = decode_batch([with_fields(timestamp=...)], default_timestamps=[123.0])
    assert records[0].timestamp == 123.0 and not rejects


# Every reason in the public, bounded set is produced by some input (model_limit by the router).
CASES = [
    ("record_too_large", with_fields(features={f"f{i}": i for i in range(100)}), {"max_record_bytes": 300}),
    ("invalid_json", b'{"model_id": "m", ', {}),
    ("invalid_json", b"\xff\xfe", {}),
    ("not_an_object", b"[1, 2, 3]", {}),
    ("not_an_object", b'"just a string"', {}),
    ("missing_field", with_fields(model_id=...), {}),
    ("missing_field", with_fields(features=...), {}),
    ("missing_field", with_fields(prediction=None), {}),
    ("missing_field", with_fields(prediction={"explanation": "none"}), {}),
    ("missing_field", with_fields(timestamp=...), {}),
    ("invalid_model_id", with_fields(model_id=""), {}),
    ("invalid_model_id", with_fields(model_id="a/b"), {}),
    ("invalid_model_id", with_fields(model_id="x" * 129), {}),
    ("invalid_model_id", with_fields(model_id=42), {}),
    ("invalid_type", with_fields(features=[1, 2]), {}),
    ("invalid_type", with_fields(features={"x": [1]}), {}),
    ("invalid_type", with_fields(features={"x": {"nested": 1}}), {}),
    ("invalid_type", with_fields(prediction=[0.1]), {}),
    ("invalid_type", with_fields(prediction={"score": "high"}), {}),
    ("invalid_type", with_fields(request_id=12), {}),
    ("invalid_type", with_fields(tags={"canary": 1}), {}),
    ("invalid_type", with_fields(latency_ms="fast"), {}),
    ("invalid_value", b'{"model_id": "m", "features": {"x": NaN}, "prediction": 1, "timestamp": 1}', {}),
    ("invalid_value", b'{"model_id": "m", "features": {"x": Infinity}, "prediction": 1, "timestamp": 1}', {}),
    ("invalid_value", b'{"model_id": "m", "features": {"x": -Infinity}, "prediction": 1, "timestamp": 1}', {}),
    ("invalid_value", b'{"model_id": "m", "features": {"x": 1e999}, "prediction": 1, "timestamp": 1}', {}),
    ("invalid_value", b'{"model_id": "m", "features": {}, "prediction": NaN, "timestamp": 1}', {}),
    ("invalid_value", with_fields(timestamp="yesterday"), {}),
    ("invalid_value", with_fields(timestamp="2026-11-30T08:00:00"), {}),  # no offset: ambiguous
    ("invalid_value", with_fields(timestamp=-5), {}),
    ("invalid_value", with_fields(artifact_digest="md5:abc"), {}),
    ("invalid_value", with_fields(prediction={"probabilities": {"a": 1.5}}), {}),
    ("invalid_value", with_fields(features={"x" * 129: 1}), {}),
    ("invalid_type", with_fields(prediction={"probabilities": {"a": None}}), {}),
    ("too_many_features", with_fields(features={f"f{i}": i for i in range(11)}), {"max_features": 10}),
]


@pytest.mark.parametrize("reason, raw, limits", CASES)
def test_reject_reasons(reason, raw, limits):
    record, reject = one(raw, **limits)
    assert record is None
    assert reject.reason == reason
    assert reject.raw == raw  # the DLQ gets the original bytes
    assert reject.detail


def test_reasons_are_the_public_set():
    produced = {reason for reason, _, _ in CASES} | {"model_limit"}
    assert produced == set(REJECT_REASONS)


def test_bad_records_do_not_stop_the_batch():
    raws = [orjson.dumps(GOOD), b"garbage", orjson.dumps(GOOD), b"[]", orjson.dumps(GOOD)]
    records, indices, rejects = decode_batch(raws)
    assert indices == [0, 2, 4]
    assert [(r.index, r.reason) for r in rejects] == [(1, "invalid_json"), (3, "not_an_object")]
    assert len(records) == 3


def test_limits_at_the_boundary_are_accepted():
    raw = with_fields(features={f"f{i}": i for i in range(10)})
    record, reject = one(raw, max_features=10, max_record_bytes=len(raw))
    assert reject is None and len(record.features) == 10
