"""KServe logger CloudEvents -> wire-schema records (monitor/wire/kserve.py), no broker.

Payloads follow KServe's inference-logger documentation (the sklearn-iris v1
example: two instances of four floats, predictions ``[1, 1]``; extensions
``inferenceservicename``, ``namespace``, ``component``, ``endpoint``) and the
Open Inference Protocol v2 REST specification (``inputs``/``outputs`` tensors
with ``name``, ``shape``, ``datatype``, ``data`` in row-major order).
"""

from __future__ import annotations

import orjson
import pytest

from monitor.wire.kserve import (
    REQUEST_TYPE,
    RESPONSE_TYPE,
    CloudEvent,
    KServeEventError,
    KServeJoin,
    event_from_kafka,
    events_from_http,
)
from monitor.wire.schema import REJECT_REASONS, decode_batch

IRIS_REQUEST = {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}
IRIS_RESPONSE = {"predictions": [1, 1]}


def kafka_headers(ce_id: str, side: str, isvc: str = "sklearn-iris", component: str = "predictor",
                  time: str = "2021-04-10T00:23:26.0789529Z") -> list[tuple[str, bytes]]:
    """Binary content mode on Kafka, as a KafkaSink writes a logger event."""
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", ce_id.encode()),
        ("ce_type", (REQUEST_TYPE if side == "request" else RESPONSE_TYPE).encode()),
        ("ce_source", b"http://localhost:9081/"),
        ("ce_time", time.encode()),
        ("ce_inferenceservicename", isvc.encode()),
        ("ce_namespace", b"default"),
        ("ce_component", component.encode()),
        ("ce_endpoint", b"default"),
        ("content-type", b"application/json"),
    ]


def pair(join: KServeJoin, ce_id: str, request: dict, response: dict, **kwargs) -> list[dict]:
    assert join.add(event_from_kafka(kafka_headers(ce_id, "request", **kwargs), orjson.dumps(request))) == []
    raws = join.add(event_from_kafka(kafka_headers(ce_id, "response", **kwargs), orjson.dumps(response)))
    records, _, rejects = decode_batch(raws)  # every record passes the real wire schema
    assert not rejects, [(r.reason, r.detail) for r in rejects]
    assert len(records) == len(raws)
    return [orjson.loads(raw) for raw in raws]


def test_v1_iris_example_from_the_kserve_docs_gives_one_record_per_instance():
    join = KServeJoin()
    records = pair(join, "0009174a-24a8-4603-b098-09c8799950e9", IRIS_REQUEST, IRIS_RESPONSE)
    assert [r["request_id"] for r in records] == ["0009174a-24a8-4603-b098-09c8799950e9/0",
                                                  "0009174a-24a8-4603-b098-09c8799950e9/1"]
    assert records[0]["model_id"] == "sklearn-iris"
    assert records[1]["features"] == {"input_0": 6.0, "input_1": 3.4, "input_2": 4.5, "input_3": 1.6}
    assert [r["prediction"] for r in records] == [{"label": 1}, {"label": 1}]  # integer outputs are class ids
    assert records[0]["timestamp"] == pytest.approx(1618014206.078952)  # the request's ce_time
    assert records[0]["tags"] == {"kserve_namespace": "default", "kserve_endpoint": "default"}
    assert join.pending() == {"request": 0, "response": 0}
    assert join.unmatched_total == {"request": 0, "response": 0}


def test_v2_tensors_name_features_by_column_and_outputs_give_label_score_probabilities():
    request = {
        "id": "42",
        "inputs": [
            {"name": "input0", "shape": [2, 2], "datatype": "UINT32", "data": [1, 2, 3, 4]},
            {"name": "flag", "shape": [2], "datatype": "BOOL", "data": [True, False]},
            {"name": "country", "shape": [2, 1], "datatype": "BYTES", "data": [["fr"], ["de"]]},  # nested form
        ],
    }
    response = {
        "model_name": "mymodel", "model_version": "3", "id": "42",
        "outputs": [{"name": "output0", "shape": [2, 3], "datatype": "FP32",
                     "data": [0.1, 0.7, 0.2, 0.6, 0.3, 0.1]}],
    }
    records = pair(KServeJoin(), "42", request, response, isvc="mymodel")
    assert records[0]["features"] == {"input0_0": 1, "input0_1": 2, "flag": True, "country": "fr"}
    assert records[1]["features"] == {"input0_0": 3, "input0_1": 4, "flag": False, "country": "de"}
    assert records[0]["prediction"] == {"label": 1, "score": pytest.approx(0.7),
                                        "probabilities": {"0": pytest.approx(0.1), "1": pytest.approx(0.7),
                                                          "2": pytest.approx(0.2)}}
    assert records[1]["prediction"]["label"] == 0
    assert records[0]["model_version"] == "3"


@pytest.mark.parametrize("outputs, expected", [
    # regression: one float per row
    ([{"name": "y", "shape": [2], "datatype": "FP64", "data": [1.5, 2.5]}], [1.5, 2.5]),
    # a label and one float beside it: its score
    ([{"name": "label", "shape": [2], "datatype": "BYTES", "data": ["cat", "dog"]},
      {"name": "confidence", "shape": [2, 1], "datatype": "FP32", "data": [0.9, 0.8]}],
     [{"label": "cat", "score": 0.9}, {"label": "dog", "score": 0.8}]),
    # MLServer's predict + predict_proba: the label output names the class
    ([{"name": "predict", "shape": [2, 1], "datatype": "INT64", "data": [2, 0]},
      {"name": "predict_proba", "shape": [2, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.7, 0.5, 0.25, 0.25]}],
     [{"label": 2, "score": 0.7, "probabilities": {"0": 0.1, "1": 0.2, "2": 0.7}},
      {"label": 0, "score": 0.5, "probabilities": {"0": 0.5, "1": 0.25, "2": 0.25}}]),
])
def test_v2_output_forms(outputs, expected):
    request = {"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32", "data": [0.0, 1.0]}]}
    records = pair(KServeJoin(), "r", request, {"outputs": outputs})
    assert [r["prediction"] for r in records] == expected  # JSON numbers pass through unchanged
    assert [r["features"] for r in records] == [{"x": 0.0}, {"x": 1.0}]


def test_v1_prediction_forms_and_a_single_instance_keeps_the_plain_request_id():
    join = KServeJoin()
    [record] = pair(join, "one", {"instances": [{"age": 31, "city": "Lyon"}]}, {"predictions": [[0.2, 0.8]]})
    assert record["request_id"] == "one"
    assert record["features"] == {"age": 31, "city": "Lyon"}  # an object row keeps its keys
    assert record["prediction"] == {"label": 1, "score": 0.8, "probabilities": {"0": 0.2, "1": 0.8}}
    [record] = pair(join, "two", {"instances": [[1.0]]}, {"predictions": [3.25]})
    assert record["prediction"] == 3.25  # a float is a regression output
    [record] = pair(join, "three", {"instances": [[1.0]]}, {"predictions": ["setosa"]})
    assert record["prediction"] == "setosa"


def test_model_id_adds_the_component_unless_it_is_the_predictor():
    [record] = pair(KServeJoin(), "t1", {"instances": [[1.0]]}, {"predictions": [1]}, component="transformer")
    assert record["model_id"] == "sklearn-iris:transformer"
    # the same id on another component is another pair
    join = KServeJoin()
    join.add(event_from_kafka(kafka_headers("x", "request", component="transformer"), b'{"instances": [[1]]}'))
    assert join.add(event_from_kafka(kafka_headers("x", "response"), b'{"predictions": [1]}')) == []
    assert join.pending() == {"request": 1, "response": 1}


def test_response_before_request_still_joins():
    join = KServeJoin()
    assert join.add(event_from_kafka(kafka_headers("z", "response"), orjson.dumps(IRIS_RESPONSE))) == []
    raws = join.add(event_from_kafka(kafka_headers("z", "request"), orjson.dumps(IRIS_REQUEST)))
    assert len(raws) == 2 and join.pending() == {"request": 0, "response": 0}


def event(ce_id: str, side: str, at: float) -> CloudEvent:
    body = b'{"instances": [[1.0]]}' if side == "request" else b'{"predictions": [1]}'
    return CloudEvent(id=ce_id, type=REQUEST_TYPE if side == "request" else RESPONSE_TYPE,
                      inference_service="m", time=at, data=body)


def test_unmatched_halves_are_counted_per_side_after_the_window_or_beyond_max_pending():
    join = KServeJoin(window_seconds=10, max_pending=3)
    join.add(event("old-request", "request", 100.0))
    join.add(event("old-response", "response", 101.0))
    join.add(event("fresh", "request", 108.0))
    assert join.unmatched_total == {"request": 0, "response": 0}
    join.add(event("later", "request", 111.5))  # the clock passes 110 + ... : 100 and 101 are out of the window
    assert join.unmatched_total == {"request": 1, "response": 1}
    assert join.add(event("fresh", "response", 112.0)), "within the window it still joins"
    for i in range(4):  # beyond max_pending the oldest waiting request goes
        join.add(event(f"burst-{i}", "request", 112.0))
    assert join.pending()["request"] == 3
    assert join.unmatched_total["request"] == 1 + 2  # "later" and "burst-0"
    assert join.expire_all() == 3 and join.unmatched_total["request"] == 6


def test_a_repeated_id_replaces_the_older_half_and_counts_it():
    join = KServeJoin()
    join.add(event("dup", "request", 1.0))
    join.add(event("dup", "request", 2.0))
    assert join.unmatched_total["request"] == 1 and join.pending()["request"] == 1


@pytest.mark.parametrize("headers, body, reason", [
    ([h for h in kafka_headers("a", "request") if h[0] != "ce_id"], b'{"instances": [[1]]}', "missing_field"),
    ([("ce_type", b"com.example.other") if h[0] == "ce_type" else h for h in kafka_headers("a", "request")],
     b'{"instances": [[1]]}', "invalid_value"),
    ([h for h in kafka_headers("a", "request", isvc="bad name!")], b'{"instances": [[1]]}', "invalid_model_id"),
    (kafka_headers("a", "request"), None, "missing_field"),
    (kafka_headers("a", "request", time="yesterday"), b'{"instances": [[1]]}', "invalid_value"),
    (kafka_headers("a", "request"), b"{broken", "invalid_json"),
    (kafka_headers("a", "request"), b'{"instances": [[NaN]]}', "invalid_value"),
    (kafka_headers("a", "request"), b"[1, 2]", "not_an_object"),
    (kafka_headers("a", "request"), b'{"data": 1}', "missing_field"),
    (kafka_headers("a", "request"), b'{"instances": 5}', "invalid_type"),
    (kafka_headers("a", "request"), b'{"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]}',
     "invalid_value"),
    (kafka_headers("a", "request"), b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]},'
                                    b' {"name": "y", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}]}',
     "invalid_value"),
    (kafka_headers("a", "request"), b'{"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}', "missing_field"),
    (kafka_headers("a", "response"), b'{"outputs": [{"name": "emb", "shape": [1, 3], "datatype": "FP32",'
                                     b' "data": [4.0, -2.0, 9.0]}]}', "invalid_type"),
    (kafka_headers("a", "response"), b'{"predictions": [[1.5, 7.0]]}', "invalid_type"),
])
def test_malformed_events_are_rejected_with_a_schema_reason(headers, body, reason):
    join = KServeJoin()
    with pytest.raises(KServeEventError) as caught:
        join.add(event_from_kafka(headers, body))
    assert caught.value.reason == reason and reason in REJECT_REASONS
    assert join.pending() == {"request": 0, "response": 0}, "nothing of a malformed event waits"


def test_request_and_response_row_counts_must_agree():
    join = KServeJoin()
    join.add(event_from_kafka(kafka_headers("r", "request"), orjson.dumps(IRIS_REQUEST)))
    with pytest.raises(KServeEventError) as caught:
        join.add(event_from_kafka(kafka_headers("r", "response"), b'{"predictions": [1, 2, 0]}'))
    assert caught.value.reason == "invalid_value" and "2 rows" in caught.value.detail
    assert join.unmatched_total == {"request": 1, "response": 0} and join.pending() == {"request": 0, "response": 0}


class _Message:
    def __init__(self, headers, value, offset, timestamp=1_700_000_000_000, partition=0):
        self.headers, self.value, self.offset, self.timestamp, self.partition = headers, value, offset, timestamp, partition


def test_convert_messages_maps_records_and_rejects_back_to_their_messages():
    messages = [
        _Message(kafka_headers("a", "request"), orjson.dumps(IRIS_REQUEST), 0),
        _Message(kafka_headers("b", "request"), b"{broken", 1),
        _Message(kafka_headers("a", "response"), orjson.dumps(IRIS_RESPONSE), 2),
    ]
    sources, raws, timestamps, rejects = KServeJoin().convert_messages(messages)
    assert len(raws) == 2 and [m.offset for m in sources[:2]] == [2, 2]  # completed by the response
    assert timestamps == [pytest.approx(1618014206.078952)] * 2
    [reject] = rejects
    assert reject.reason == "invalid_json" and sources[reject.index].offset == 1 and reject.raw == b"{broken"


def test_http_binary_structured_and_batched_modes():
    # binary: what KServe's logger sends (Go's canonical header case)
    headers = _Headers({"Ce-Id": "h1", "Ce-Type": REQUEST_TYPE, "Ce-Source": "http://localhost:9081/",
                        "Ce-Specversion": "1.0", "Ce-Inferenceservicename": "sklearn-iris",
                        "Ce-Namespace": "default", "Ce-Component": "predictor", "Ce-Endpoint": "",
                        "Ce-Time": "2021-04-10T00:23:26.080736102Z", "Content-Type": "application/json"})
    [request] = events_from_http(headers, orjson.dumps(IRIS_REQUEST))
    assert request.model_id == "sklearn-iris" and request.endpoint is None
    structured = {"specversion": "1.0", "id": "h1", "type": RESPONSE_TYPE, "source": "x",
                  "inferenceservicename": "sklearn-iris", "component": "predictor",
                  "datacontenttype": "application/json", "data": IRIS_RESPONSE}
    [response] = events_from_http(_Headers({"Content-Type": "application/cloudevents+json; charset=utf-8"}),
                                  orjson.dumps(structured))
    join = KServeJoin()
    join.add(request)
    assert len(join.add(response)) == 2
    batch = events_from_http(_Headers({"Content-Type": "application/cloudevents-batch+json"}),
                             orjson.dumps([structured, {**structured, "id": "h2"}]))
    assert [e.id for e in batch] == ["h1", "h2"] and orjson.loads(batch[1].raw)["id"] == "h2"
    with pytest.raises(KServeEventError) as caught:
        events_from_http(_Headers({"Content-Type": "application/json"}), orjson.dumps(IRIS_REQUEST))
    assert caught.value.reason == "missing_field"


class _Headers(dict):
    """Case-insensitive like http.server's headers."""

    def get(self, key, default=None):
        return next((v for k, v in self.items() if k.lower() == key.lower()), default)
