"""Route: records of one model -> numpy columns."""

import numpy as np
import orjson

from monitor.wire.route import build_model_batch, group_by_model
from monitor.wire.schema import decode_batch


def batch_of(*rows):
    raws = [orjson.dumps({"model_id": "m", "timestamp": i, **row}) for i, row in enumerate(rows)]
    records, _, rejects = decode_batch(raws)
    assert not rejects
    return build_model_batch("m", records)


def test_columns_by_kind_with_missing_values():
    batch = batch_of(
        {"features": {"x": 1, "flag": True, "c": "fr"}, "prediction": {"label": "a", "score": 0.9,
                                                                      "probabilities": {"a": 0.9, "b": 0.1}}},
        {"features": {"x": None, "flag": False}, "prediction": 3.5},
        {"features": {"x": 2.5, "c": "de", "new": 7}, "prediction": {"label": 2, "probabilities": {"b": 1.0}}},
    )
    assert batch.n == 3
    np.testing.assert_array_equal(batch.numeric["x"], [1.0, np.nan, 2.5])
    np.testing.assert_array_equal(batch.numeric["new"], [np.nan, np.nan, 7.0])
    assert list(batch.categorical["flag"]) == ["true", "false", None]
    assert list(batch.categorical["c"]) == ["fr", None, "de"]
    assert list(batch.predicted_class) == ["a", None, "2"]
    np.testing.assert_array_equal(batch.prediction_value, [np.nan, 3.5, np.nan])
    np.testing.assert_array_equal(batch.score, [0.9, np.nan, np.nan])
    assert batch.classes == ["a", "b"]
    np.testing.assert_array_equal(batch.probabilities, [[0.9, 0.1], [np.nan, np.nan], [0.0, 1.0]])


def test_numbers_in_a_string_feature_become_categories():
    batch = batch_of({"features": {"code": 7}, "prediction": 1}, {"features": {"code": "x"}, "prediction": 1})
    assert list(batch.categorical["code"]) == ["7.0", "x"]


def test_grouping_keeps_arrival_order():
    raws = [orjson.dumps({"model_id": m, "features": {}, "prediction": i, "timestamp": 1})
            for i, m in enumerate("abab")]
    records, _, _ = decode_batch(raws)
    groups = group_by_model(records)
    assert [r.prediction_value for r in groups["a"]] == [0.0, 2.0]
    assert [r.prediction_value for r in groups["b"]] == [1.0, 3.0]
    assert list(build_model_batch("a", groups["a"]).timestamps) == [1.0, 1.0]
