"""KServe inference-logger CloudEvents -> wire-schema v1 records.

KServe's logger (``spec.predictor.logger``, ``mode: all``) sends every request
and every response to a model as a CloudEvent: ``type``
``org.kubeflow.serving.inference.request`` or ``...response``, the same ``id``
for both, and the extensions ``inferenceservicename``, ``namespace``,
``component`` and ``endpoint``. The data is the body as the model saw it:
the v1 protocol (``{"instances": [...]}`` / ``{"predictions": [...]}``) or the
Open Inference Protocol v2 (``{"inputs": [{"name", "shape", "datatype",
"data"}]}`` / ``{"outputs": [...]}``).

:class:`KServeJoin` pairs request and response by id within a bounded window
and turns each row of a (batched) request into one wire-schema record:

- ``model_id``: the inference service name, plus ``:<component>`` when the
  component is not ``predictor`` (``sklearn-iris:transformer``);
- ``features``: v2 input names, with the column index for a 2-D tensor
  (``x_0``, ``x_1``; a tensor of higher rank is flattened per row), or
  ``input_<i>`` for the values of a v1 row (a v1 row that is an object keeps
  its keys);
- ``prediction``: a class label (integer, string or bool outputs), with
  probabilities (a row of floats in [0, 1] summing to 1) and score where they
  are recognisable, else a number;
- ``request_id``: the event id, ``<id>/<row>`` for a batch of several rows;
- ``timestamp``: the request event's ``time`` (else when it was received);
- ``model_version`` from a v2 response, ``tags`` ``kserve_namespace`` and
  ``kserve_endpoint``.

A malformed event becomes a :class:`~monitor.wire.schema.Reject` with one of
the schema's reasons, so it is dead-lettered and counted like any bad record.
Requests or responses whose other half does not arrive within the window (or
are pushed out by ``max_pending``) are counted in :attr:`KServeJoin.unmatched_total`.

>>> join = KServeJoin()
>>> request = CloudEvent(id="a1", type=REQUEST_TYPE, inference_service="sklearn-iris", component="predictor",
...                      time=1775780606.0, data=b'{"instances": [[6.8, 2.8], [6.0, 3.4]]}')
>>> join.add(request)
[]
>>> records = join.add(CloudEvent(id="a1", type=RESPONSE_TYPE, inference_service="sklearn-iris",
...                               component="predictor", data=b'{"predictions": [1, 2]}'))
>>> [orjson.loads(r) for r in records][1]  # doctest: +NORMALIZE_WHITESPACE
{'model_id': 'sklearn-iris', 'timestamp': 1775780606.0, 'request_id': 'a1/1',
 'features': {'input_0': 6.0, 'input_1': 3.4}, 'prediction': {'label': 2}}
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from monitor.wire.schema import REJECT_REASONS, Reject

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
SIDES = {REQUEST_TYPE: "request", RESPONSE_TYPE: "response"}

#: An HTTP body or Kafka value larger than this is refused (record_too_large)
#: before it is parsed: a batch of rows is one event, so this is far above
#: ``limits.max_record_bytes``, which still applies to each record made from it.
MAX_EVENT_BYTES = 8 * 1024 * 1024

_MODEL_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_STRUCTURED = "application/cloudevents+json"
_BATCH = "application/cloudevents-batch+json"
_PROBABILITY_SUM_TOLERANCE = 1e-3
_USED_ATTRIBUTES = ("id", "type", "source", "time", "inferenceservicename", "namespace", "component", "endpoint")
# Kafka header -> attribute: ``ce_`` per the CloudEvents Kafka binding, ``ce-`` as some bridges write it
_KAFKA_HEADERS = {f"{prefix}{name}": name for name in _USED_ATTRIBUTES for prefix in ("ce_", "ce-")}
_KAFKA_HEADERS.update({"content-type": "content-type", "content_type": "content-type"})


class KServeEventError(ValueError):
    """An event that cannot become records; ``reason`` is one of REJECT_REASONS."""

    def __init__(self, reason: str, detail: str):
        assert reason in REJECT_REASONS, reason
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class CloudEvent:
    """The attributes of a KServe logger event that the join needs."""

    id: str
    type: str
    inference_service: str
    component: str | None = None
    namespace: str | None = None
    endpoint: str | None = None
    source: str | None = None
    time: float | None = None  # epoch seconds of the ``time`` attribute
    data: bytes | None = None  # the body as sent (binary mode, or data_base64)
    parsed: Any = None  # the body already parsed (structured mode's ``data``)
    raw: bytes | None = None  # what to dead-letter when not the whole message (one event of a batch)

    @property
    def model_id(self) -> str:
        if self.component and self.component != "predictor":
            return f"{self.inference_service}:{self.component}"
        return self.inference_service


# -- envelopes: Kafka binary/structured mode, HTTP binary/structured/batched mode


def event_from_kafka(headers: Iterable[tuple[str, bytes]] | None, value: bytes | None) -> CloudEvent:
    """A Kafka message in binary content mode (``ce_*`` headers, value = data)
    or structured mode (``content-type: application/cloudevents+json``)."""
    attributes: dict[str, str] = {}
    for key, raw in headers or ():
        name = _KAFKA_HEADERS.get(key) or _KAFKA_HEADERS.get(key.lower())
        if name is not None:  # only what is used is decoded: this runs once per message
            attributes[name] = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    content_type = attributes.pop("content-type", "")
    _check_size(value)
    if content_type.lower().startswith(_STRUCTURED):
        return _structured(_parse_json(value, "event"))
    return _from_attributes(attributes, value)


def events_from_http(headers: Mapping[str, str], body: bytes) -> list[CloudEvent]:
    """An HTTP request in binary (``ce-*`` headers), structured or batched mode.

    ``headers`` must be case-insensitive (``http.server``'s message is)."""
    _check_size(body)
    content_type = (headers.get("content-type") or "").lower()
    if content_type.startswith(_BATCH):
        events = _parse_json(body, "batch")
        if not isinstance(events, list):
            raise KServeEventError("invalid_type", "a batch of CloudEvents must be a JSON array")
        parsed = [_structured(e) for e in events]
        for event, element in zip(parsed, events):
            event.raw = orjson.dumps(element)
        return parsed
    if content_type.startswith(_STRUCTURED):
        return [_structured(_parse_json(body, "event"))]
    attributes = {k.lower()[3:]: v for k, v in headers.items() if k.lower().startswith("ce-")}
    return [_from_attributes(attributes, body)]


def _structured(event: Any) -> CloudEvent:
    if not isinstance(event, dict):
        raise KServeEventError("not_an_object", "a structured CloudEvent must be a JSON object")
    attributes = {k: v for k, v in event.items() if k not in ("data", "data_base64")}
    wrong = [k for k in _USED_ATTRIBUTES if k in attributes and not isinstance(attributes[k], str)]
    if wrong:
        raise KServeEventError("invalid_type", f"CloudEvent attributes {wrong} must be strings")
    if "data_base64" in event:
        try:
            return _from_attributes(attributes, base64.b64decode(event["data_base64"], validate=True))
        except (ValueError, TypeError):
            raise KServeEventError("invalid_value", "data_base64 is not base64") from None
    return _from_attributes(attributes, None, parsed=event.get("data"), has_parsed="data" in event)


def _from_attributes(attributes: Mapping[str, str], data: bytes | None, parsed: Any = None,
                     has_parsed: bool = False) -> CloudEvent:
    missing = [name for name in ("id", "type", "inferenceservicename") if not attributes.get(name)]
    if missing:
        raise KServeEventError("missing_field", f"CloudEvent without {', '.join(missing)}")
    event_type = attributes["type"]
    if event_type not in SIDES:
        raise KServeEventError("invalid_value", f"type {event_type[:80]!r} is not a KServe inference request or response")
    if not has_parsed and not data:
        raise KServeEventError("missing_field", "CloudEvent without data")
    event = CloudEvent(
        id=attributes["id"],
        type=event_type,
        inference_service=attributes["inferenceservicename"],
        component=attributes.get("component") or None,
        namespace=attributes.get("namespace") or None,
        endpoint=attributes.get("endpoint") or None,
        source=attributes.get("source"),
        time=_event_time(attributes.get("time")),
        data=data,
        parsed=parsed,
    )
    if not _MODEL_ID.fullmatch(event.model_id):
        raise KServeEventError("invalid_model_id", f"model id {event.model_id[:140]!r} is not 1-128 of [A-Za-z0-9._:-]")
    return event


def _event_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)  # Go's nanoseconds are cut to microseconds
    except ValueError:
        raise KServeEventError("invalid_value", f"time {value[:40]!r} is not RFC 3339") from None
    if parsed.tzinfo is None:
        raise KServeEventError("invalid_value", "time has no UTC offset")
    return parsed.timestamp()


def _check_size(body: bytes | None) -> None:
    if body is not None and len(body) > MAX_EVENT_BYTES:
        raise KServeEventError("record_too_large", f"{len(body)} bytes > limit {MAX_EVENT_BYTES}")


def _parse_json(raw: bytes | None, what: str) -> Any:
    try:
        return orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        # orjson refuses NaN/Infinity, the stdlib takes them: tells a value the
        # sender can fix from garbage, as the wire schema does
        try:
            json.loads(raw or b"")
        except (ValueError, UnicodeDecodeError):
            raise KServeEventError("invalid_json", f"{what} is not UTF-8 JSON") from None
        raise KServeEventError("invalid_value", f"{what} has a non-finite number (NaN or Infinity)") from None


# -- bodies: v1 and Open Inference Protocol v2 --------------------------------


def request_rows(body: Any) -> list[dict[str, Any]]:
    """Feature dicts, one per row, of a v1 or v2 request body.

    >>> request_rows({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
    ...                          {"name": "country", "shape": [2], "datatype": "BYTES", "data": ["fr", "de"]}]})
    [{'x_0': 1, 'x_1': 2, 'country': 'fr'}, {'x_0': 3, 'x_1': 4, 'country': 'de'}]
    """
    if not isinstance(body, dict):
        raise KServeEventError("not_an_object", "request body is not a JSON object")
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise KServeEventError("invalid_type", "v1 instances must be a non-empty array")
        return [_v1_row(instance) for instance in instances]
    if "inputs" in body:
        inputs = body["inputs"]
        if not isinstance(inputs, list) or not inputs or not all(isinstance(t, dict) for t in inputs):
            raise KServeEventError("invalid_type", "v2 inputs must be a non-empty array of tensors")
        return _v2_rows(inputs, "input")
    raise KServeEventError("missing_field", "request body has neither instances (v1) nor inputs (v2)")


def response_rows(body: Any) -> tuple[list[Any], str | None]:
    """Wire-schema predictions, one per row, and the model version if the
    response gives one."""
    if not isinstance(body, dict):
        raise KServeEventError("not_an_object", "response body is not a JSON object")
    if "predictions" in body:
        predictions = body["predictions"]
        if not isinstance(predictions, list) or not predictions:
            raise KServeEventError("invalid_type", "v1 predictions must be a non-empty array")
        return [_v1_prediction(p) for p in predictions], None
    if "outputs" in body:
        outputs = body["outputs"]
        if not isinstance(outputs, list) or not outputs or not all(isinstance(t, dict) for t in outputs):
            raise KServeEventError("invalid_type", "v2 outputs must be a non-empty array of tensors")
        version = body.get("model_version")
        return _v2_predictions(outputs), version if isinstance(version, str) else None
    raise KServeEventError("missing_field", "response body has neither predictions (v1) nor outputs (v2)")


def _v1_row(instance: Any) -> dict[str, Any]:
    if isinstance(instance, dict):
        row: dict[str, Any] = {}
        for name, value in instance.items():
            if isinstance(value, list):
                row.update((f"{name}_{i}", v) for i, v in enumerate(_flatten(value)))
            else:
                row[name] = value
        return row
    if isinstance(instance, list):
        return {f"input_{i}": v for i, v in enumerate(_flatten(instance))}
    return {"input_0": instance}


def _flatten(values: list) -> list:
    if not any(isinstance(v, list) for v in values):
        return values
    flat: list = []
    for v in values:
        flat.extend(_flatten(v) if isinstance(v, list) else (v,))
    return flat


def _tensor(tensor: dict, side: str) -> tuple[str, str, np.ndarray]:
    """(name, datatype, rows x columns array) of a v2 tensor; data may be flat
    (row-major) or nested, as the protocol allows."""
    name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
    if not isinstance(name, str) or not name:
        raise KServeEventError("missing_field", f"a v2 {side} tensor has no name")
    if "data" not in tensor:
        raise KServeEventError("missing_field", f"v2 {side} {name!r} has no data (binary tensor data is not supported)")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise KServeEventError("invalid_value", f"v2 {side} {name!r}: shape must be non-negative integers")
    data = tensor["data"]
    data = _flatten(data) if isinstance(data, list) else [data]
    size = math.prod(shape)
    if len(data) != size:
        raise KServeEventError("invalid_value", f"v2 {side} {name!r}: shape {shape} holds {size} values, data has {len(data)}")
    rows = shape[0] if shape else 1
    if rows == 0:
        raise KServeEventError("invalid_value", f"v2 {side} {name!r} has no rows")
    array = np.empty(size, dtype=object)
    array[:] = data
    return name, str(datatype or "").upper(), array.reshape(rows, -1)


def _v2_rows(inputs: list[dict], side: str) -> list[dict[str, Any]]:
    names: list[str] = []
    columns: list[list] = []
    n_rows = None
    for tensor in inputs:
        name, _, array = _tensor(tensor, side)
        if n_rows is not None and array.shape[0] != n_rows:
            raise KServeEventError("invalid_value", f"v2 inputs disagree on the batch size ({n_rows} vs {array.shape[0]})")
        n_rows = array.shape[0]
        if array.shape[1] == 1:
            names.append(name)
        else:
            names.extend(f"{name}_{j}" for j in range(array.shape[1]))
        columns.append(array.tolist())
    # one dict per row: the row's values of every tensor, in input order
    return [dict(zip(names, [v for tensor_rows in columns for v in tensor_rows[i]])) for i in range(n_rows)]


_LABEL_TYPES = ("INT", "UINT", "BOOL", "BYTES")


def _v2_predictions(outputs: list[dict]) -> list[Any]:
    """Outputs -> predictions: the first label-typed output with one value per
    row is the label, the first float output whose rows are distributions
    gives the probabilities; a label with exactly one single-float output
    beside it takes that as its score; exactly one single-float output alone
    is a number (regression). Anything else is not guessed at."""
    labels = probabilities = None
    numbers: list[np.ndarray] = []
    described = []
    for tensor in outputs:
        name, datatype, array = _tensor(tensor, "output")
        described.append(f"{name} {datatype} {list(array.shape)}")
        width = array.shape[1]
        if datatype.startswith(_LABEL_TYPES) and width == 1:
            labels = array[:, 0] if labels is None else labels
        elif datatype.startswith("FP") and width == 1:
            numbers.append(array[:, 0])
        elif datatype.startswith("FP") and probabilities is None and _is_distribution(array):
            probabilities = array.astype(np.float64)
    if len({a.shape[0] for a in (labels, probabilities, *numbers) if a is not None}) > 1:
        raise KServeEventError("invalid_value", f"v2 outputs disagree on the batch size: {described}")
    if probabilities is not None:
        classes = [str(c) for c in range(probabilities.shape[1])]
        predictions = []
        for i, row in enumerate(probabilities.tolist()):
            best = max(range(len(row)), key=row.__getitem__)
            label = labels[i] if labels is not None else best
            index = label if type(label) is int and 0 <= label < len(row) else best
            predictions.append({"label": label, "score": row[index], "probabilities": dict(zip(classes, row))})
        return predictions
    if labels is not None:
        if len(numbers) != 1:  # none, or several: which one is the score would be a guess
            return [{"label": label} for label in labels.tolist()]
        return [{"label": label, "score": _number(score)} for label, score in zip(labels.tolist(), numbers[0].tolist())]
    if len(numbers) == 1:
        return [_number(v) for v in numbers[0].tolist()]
    raise KServeEventError("invalid_type", f"v2 outputs not recognised as a label, probabilities or a number: {described}")


def _number(value: Any) -> float | None:
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    raise KServeEventError("invalid_type", f"a float output holds {type(value).__name__} {str(value)[:40]!r}")


def _is_distribution(array: np.ndarray) -> bool:
    try:
        values = array.astype(np.float64)
    except (TypeError, ValueError):
        return False
    return bool(np.all((values >= 0) & (values <= 1))
                and np.all(np.abs(values.sum(axis=1) - 1) <= _PROBABILITY_SUM_TOLERANCE))


def _v1_prediction(prediction: Any) -> Any:
    """One v1 prediction -> the wire schema's ``prediction``.

    Integers are class ids (classifiers return them; a regression returns
    floats), a list of probabilities gives label, score and probabilities, an
    object passes its ``label``/``score``/``probabilities`` through."""
    if isinstance(prediction, bool) or isinstance(prediction, str):
        return prediction
    if isinstance(prediction, int):
        return {"label": prediction}
    if isinstance(prediction, float):
        return prediction
    if isinstance(prediction, list):
        if len(prediction) == 1:
            return _v1_prediction(prediction[0])
        if prediction and all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in prediction):
            row = np.array(prediction, dtype=np.float64)[None, :]
            if _is_distribution(row):
                index = int(np.argmax(row))
                return {"label": index, "score": float(row[0, index]),
                        "probabilities": {str(c): float(p) for c, p in enumerate(prediction)}}
        raise KServeEventError("invalid_type", f"v1 prediction of {len(prediction)} values is not a probability row")
    if isinstance(prediction, dict):
        known = {k: prediction[k] for k in ("label", "score", "probabilities") if k in prediction}
        if known:
            return known
        raise KServeEventError("invalid_type", "v1 prediction object has no label, score or probabilities")
    raise KServeEventError("missing_field", "v1 prediction is null")


# -- the join -----------------------------------------------------------------


@dataclass(slots=True)
class _Half:
    event: CloudEvent
    rows: Any  # request: feature dicts; response: (predictions, model_version)
    timestamp: float | None  # the record's event time (the request's)
    arrival: float  # for the window: event time, else the newest event time seen


@dataclass(slots=True)
class Joined:
    """Wire-schema records made from one request/response pair."""

    model_id: str
    records: list[bytes]
    timestamp: float | None  # the request's time, None if it had none


class KServeJoin:
    """Pairs request and response events by id; its state is what is pending.

    ``window_seconds`` bounds how long (in event time: the newest event seen
    so far) one half waits for the other; ``max_pending`` bounds how many
    wait, per side. Halves dropped either way are counted in
    ``unmatched_total[side]`` (``infersight_kserve_unmatched_total{side}``).
    Pending halves live in memory only: a restart forgets them.
    """

    def __init__(self, window_seconds: float = 60.0, max_pending: int = 10_000):
        self.window_seconds = window_seconds
        self.max_pending = max_pending
        self.unmatched_total = {"request": 0, "response": 0}
        self._pending: dict[str, OrderedDict[tuple[str, str], _Half]] = {"request": OrderedDict(),
                                                                          "response": OrderedDict()}
        self._clock = float("-inf")

    @classmethod
    def from_settings(cls, settings) -> KServeJoin:
        return cls(window_seconds=settings.kserve.join_window_seconds, max_pending=settings.kserve.max_pending)

    def pending(self) -> dict[str, int]:
        return {side: len(halves) for side, halves in self._pending.items()}

    def add(self, event: CloudEvent, received: float | None = None) -> list[bytes]:
        """Add one event; the records it completes (none while its other half
        is missing). ``received``: when it arrived (Kafka timestamp, HTTP
        receipt), used when the event has no ``time``."""
        joined = self.add_joined(event, received)
        return joined.records if joined else []

    def add_joined(self, event: CloudEvent, received: float | None = None) -> Joined | None:
        """:meth:`add`, with the pair's model and timestamp. Raises
        :class:`KServeEventError` for a malformed event (or a pair whose row
        counts differ); nothing of it stays pending then."""
        side = SIDES[event.type]
        body = event.parsed if event.data is None else _parse_json(event.data, f"{side} body")
        rows = request_rows(body) if side == "request" else response_rows(body)
        timestamp = event.time if event.time is not None else received
        if timestamp is not None and timestamp > self._clock:
            self._clock = timestamp
            self.expire(self._clock)
        key = (event.model_id, event.id)
        other = "response" if side == "request" else "request"
        half = _Half(event, rows, timestamp, timestamp if timestamp is not None else self._clock)
        partner = self._pending[other].pop(key, None)
        if partner is None:
            waiting = self._pending[side]
            if waiting.pop(key, None) is not None:  # the same id twice: the older one never pairs
                self.unmatched_total[side] += 1
            waiting[key] = half
            while len(waiting) > self.max_pending:
                waiting.popitem(last=False)
                self.unmatched_total[side] += 1
            return None
        request, response = (half, partner) if side == "request" else (partner, half)
        try:
            records = self._records(request, response)
        except KServeEventError:
            self.unmatched_total[other] += 1  # this event is dead-lettered; its partner is counted here
            raise
        return Joined(event.model_id, records, request.timestamp)

    def expire(self, now: float) -> int:
        """Drop halves that arrived before ``now - window_seconds``; returns how many."""
        cutoff = now - self.window_seconds
        dropped = 0
        for side, waiting in self._pending.items():
            # arrival order is event-time order up to the senders' clock skew:
            # a straggler behind a newer half waits until that one goes
            while waiting and next(iter(waiting.values())).arrival < cutoff:
                waiting.popitem(last=False)
                self.unmatched_total[side] += 1
                dropped += 1
        return dropped

    def expire_all(self) -> int:
        """Give up on everything pending (shutdown)."""
        dropped = 0
        for side, waiting in self._pending.items():
            self.unmatched_total[side] += len(waiting)
            dropped += len(waiting)
            waiting.clear()
        return dropped

    def _records(self, request: _Half, response: _Half) -> list[bytes]:
        features_rows = request.rows
        predictions, model_version = response.rows
        if len(features_rows) != len(predictions):
            raise KServeEventError(
                "invalid_value", f"request has {len(features_rows)} rows, its response {len(predictions)} predictions")
        event = request.event
        tags = {k: v for k, v in (("kserve_namespace", event.namespace), ("kserve_endpoint", event.endpoint)) if v}
        base: dict[str, Any] = {"model_id": event.model_id}
        if request.timestamp is not None:
            base["timestamp"] = request.timestamp
        if model_version is not None:
            base["model_version"] = model_version
        if tags:
            base["tags"] = tags
        single = len(features_rows) == 1
        return [
            orjson.dumps({**base, "request_id": event.id if single else f"{event.id}/{i}",
                          "features": features, "prediction": prediction})
            for i, (features, prediction) in enumerate(zip(features_rows, predictions))
        ]

    # -- the daemon's step before Pipeline.process -------------------------------

    def convert_messages(self, messages: list) -> tuple[list, list[bytes], list[float], list[Reject]]:
        """Kafka messages (``.headers``, ``.value``, ``.timestamp`` in ms) ->
        ``(sources, raws, timestamps, rejects)`` for ``Pipeline.process``.

        ``sources[i]`` is the message whose arrival completed ``raws[i]`` (its
        partition and offset go into dead-letter headers); after the records,
        ``sources`` holds the malformed messages, and each reject's ``index``
        points there."""
        sources: list = []
        raws: list[bytes] = []
        timestamps: list[float] = []
        bad: list[tuple[Any, str, str]] = []
        for message in messages:
            received = message.timestamp / 1000.0 if message.timestamp and message.timestamp > 0 else None
            try:
                joined = self.add_joined(event_from_kafka(message.headers, message.value), received)
            except KServeEventError as exc:
                bad.append((message, exc.reason, exc.detail))
                continue
            if joined is not None:
                n = len(joined.records)
                raws.extend(joined.records)
                sources.extend([message] * n)
                fallback = joined.timestamp if joined.timestamp is not None else received or time.time()
                timestamps.extend([fallback] * n)
        rejects = [Reject(raw=message.value or b"", reason=reason, detail=detail, index=len(sources) + i)
                   for i, (message, reason, detail) in enumerate(bad)]
        sources.extend(message for message, _, _ in bad)
        return sources, raws, timestamps, rejects
