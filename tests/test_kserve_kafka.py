"""KServe's inference logger on the real broker: the daemon reading logger
CloudEvents (``--input-format kserve``), and ``infersight ingest`` receiving
them over HTTP and producing wire-schema records for a daemon to read.

Payloads follow KServe's logger documentation (binary content mode; the
sklearn-iris v1 example) and the Open Inference Protocol v2 REST spec.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from monitor.wire.kserve import REQUEST_TYPE, RESPONSE_TYPE
from monitor.wire.schema import decode_batch
from tests.conftest import REPO, consume_all, wait_for

pytestmark = pytest.mark.kafka

SMALL = """
policy:
  reference_size: 1000
  window_size: 500
alerts:
  fire_after_windows: 2
  resolve_after_windows: 2
"""

ROWS_PER_REQUEST = 10


def ce_headers(ce_id: str, side: str, isvc: str, time: str) -> list[tuple[str, bytes]]:
    """Kafka binary content mode: ``ce_`` attribute headers, value = the body."""
    return [("ce_specversion", b"1.0"), ("ce_id", ce_id.encode()),
            ("ce_type", (REQUEST_TYPE if side == "request" else RESPONSE_TYPE).encode()),
            ("ce_source", b"http://localhost:9081/"), ("ce_time", time.encode()),
            ("ce_inferenceservicename", isvc.encode()), ("ce_namespace", b"default"),
            ("ce_component", b"predictor"), ("ce_endpoint", b"default"), ("content-type", b"application/json")]


def v2_income_traffic(n_requests: int, shift_from_row: int, seed: int = 0):
    """(request body, response body) pairs of an OIP v2 classifier: inputs x
    (rows x 3 FP64) and segment (BYTES); outputs predict (INT64) and
    predict_proba (FP32, rows x 2). Column x_1 moves by 1.5 sd from a row on."""
    rng = np.random.default_rng(seed)
    for i in range(n_requests):
        x = rng.normal(size=(ROWS_PER_REQUEST, 3))
        rows = np.arange(i * ROWS_PER_REQUEST, (i + 1) * ROWS_PER_REQUEST)
        x[rows >= shift_from_row, 1] += 1.5
        segment = rng.choice(["retail", "smb", "corporate"], size=ROWS_PER_REQUEST).tolist()
        p1 = rng.beta(2, 5, size=ROWS_PER_REQUEST)
        request = {"inputs": [
            {"name": "x", "shape": [ROWS_PER_REQUEST, 3], "datatype": "FP64", "data": x.ravel().tolist()},
            {"name": "segment", "shape": [ROWS_PER_REQUEST], "datatype": "BYTES", "data": segment},
        ]}
        response = {"model_name": "income", "model_version": "v7", "outputs": [
            {"name": "predict", "shape": [ROWS_PER_REQUEST], "datatype": "INT64",
             "data": (p1 > 0.5).astype(int).tolist()},
            {"name": "predict_proba", "shape": [ROWS_PER_REQUEST, 2], "datatype": "FP32",
             "data": np.column_stack([1 - p1, p1]).ravel().tolist()},
        ]}
        yield request, response


def send_events(bootstrap: str, topic: str, events: list[tuple[list, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, acks="all")
    for headers, value in events:
        producer.send(topic, value=value, headers=headers)
    producer.flush(timeout=60)
    producer.close()


def iso(second: float) -> str:
    return f"2026-12-01T10:{int(second) // 60 % 60:02d}:{int(second) % 60:02d}.{int(second * 1e6) % 1_000_000:06d}Z"


def single_partition_topic(bootstrap: str) -> str:
    """A logger topic as a Knative KafkaSink fills it: unkeyed events, so only
    one partition keeps them in order (README: KServe)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    name = f"test-kserve-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    admin.close()
    return name


def test_daemon_reads_kserve_logger_events_and_flags_the_shifted_tensor_column(kafka_bootstrap, start_daemon):
    topic = single_partition_topic(kafka_bootstrap)
    events = []
    for i, (request, response) in enumerate(v2_income_traffic(400, shift_from_row=2500)):
        at = iso(i * 0.1)
        pair = [(ce_headers(f"inc-{i}", "request", "income", at), orjson.dumps(request)),
                (ce_headers(f"inc-{i}", "response", "income", at), orjson.dumps(response))]
        events.extend(pair if i % 7 else pair[::-1])  # some responses come first
    for i in range(100):  # the v1 sklearn-iris example of KServe's docs, one instance per request
        at = iso(i * 0.4)
        events.append((ce_headers(f"iris-{i}", "request", "sklearn-iris", at), b'{"instances": [[6.8, 2.8, 4.8, 1.4]]}'))
        events.append((ce_headers(f"iris-{i}", "response", "sklearn-iris", at), b'{"predictions": [1]}'))
    bad = {
        "invalid_json": (ce_headers("bad-1", "request", "income", iso(1)), b"{not json"),
        "invalid_value": ([("ce_type", b"dev.knative.other") if k == "ce_type" else (k, v)
                           for k, v in ce_headers("bad-2", "request", "income", iso(1))], b'{"instances": [[1]]}'),
        "missing_field": ([(k, v) for k, v in ce_headers("bad-3", "request", "income", iso(1))
                           if k != "ce_inferenceservicename"], b'{"instances": [[1]]}'),
    }
    events[50:50] = list(bad.values())
    events.append((ce_headers("never-answered", "request", "income", iso(50)), orjson.dumps(request)))

    daemon = start_daemon("--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--group-id", topic,
                          "--input-format", "kserve", config=SMALL + "kafka: {checkpoint_interval_seconds: 1, max_poll_records: 100}\n")
    send_events(kafka_bootstrap, topic, events)
    wait_for(lambda: daemon.sample("infersight_records_total", model="income") == 4000
             and daemon.sample("infersight_records_total", model="sklearn-iris") == 100,
             90, what="every row of every joined request")

    dead = consume_all(kafka_bootstrap, f"{topic}.dlq", expect_at_least=len(bad))
    assert sorted(dict(m.headers)["infersight.reason"].decode() for m in dead) == sorted(bad)
    for message in dead:
        reason = dict(message.headers)["infersight.reason"].decode()
        assert message.value == bad[reason][1], "the original event body is dead-lettered"
        assert dict(message.headers)["infersight.source"].decode().startswith(f"{topic}/")
    for reason in bad:
        assert daemon.sample("infersight_records_rejected_total", reason=reason) == 1.0

    # the alert is published with the next checkpoint (every second here)
    wait_for(lambda: daemon.sample("infersight_alert_active", model="income", alert="input_drift") == 1.0, 30,
             what="the input drift alert")
    time.sleep(2)  # two checkpoints later the event is flushed and the alerts topic exists
    alerts = [json.loads(m.value) for m in consume_all(
        kafka_bootstrap, f"{topic}.alerts", expect_at_least=1,
        until=lambda ms: any(json.loads(m.value)["alert"] == "input_drift" for m in ms))]
    drifted = {(a["model"], a["feature"]) for a in alerts if a["alert"] == "input_drift" and a["status"] == "firing"}
    assert drifted == {("income", "x_1")}
    [x1] = [a for a in alerts if a["alert"] == "input_drift"][:1]
    assert 2000 <= x1["since_record"] <= 3000  # the shift starts at row 2500
    assert all(re.fullmatch(r"inc-\d+/\d", r) for r in x1["example_request_ids"])
    assert daemon.stop() == 0


class IngestProcess:
    def __init__(self, tmp_path, *args: str):
        self.log_path = tmp_path / f"ingest-{uuid.uuid4().hex[:6]}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen([sys.executable, "-m", "monitor.cli", "ingest", *args],
                                        stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)
        self.port = int(wait_for(self._port, 30, what="ingest to listen"))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _port(self):
        if self.process.poll() is not None:
            raise AssertionError(f"ingest exited early ({self.process.returncode}):\n{self.log()}")
        match = re.search(r"listening on http://[^:]+:(\d+)", self.log())
        return match and match.group(1)

    def post(self, headers: dict, body: bytes) -> tuple[int, dict]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("POST", "/", body=body, headers=headers)
            response = connection.getresponse()
            return response.status, orjson.loads(response.read())
        finally:
            connection.close()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)
        self._log.close()
        return self.process.returncode


@pytest.fixture
def start_ingest(tmp_path):
    started: list[IngestProcess] = []

    def start(*args: str) -> IngestProcess:
        started.append(IngestProcess(tmp_path, *args))
        return started[-1]

    yield start
    for ingest in started:
        if ingest.process.poll() is None:
            ingest.process.kill()
            ingest.process.wait()
        ingest._log.close()


def http_binary(ce_id: str, side: str, isvc: str) -> dict[str, str]:
    """What KServe's logger sends: binary content mode, Go's header casing."""
    return {"Ce-Id": ce_id, "Ce-Type": REQUEST_TYPE if side == "request" else RESPONSE_TYPE,
            "Ce-Source": "http://localhost:9081/", "Ce-Specversion": "1.0", "Ce-Time": "2026-12-01T10:00:00.123456789Z",
            "Ce-Inferenceservicename": isvc, "Ce-Namespace": "default", "Ce-Component": "predictor",
            "Ce-Endpoint": "default", "Content-Type": "application/json"}


def test_ingest_turns_logger_posts_into_records_a_daemon_reads(kafka_bootstrap, topic, start_ingest, start_daemon):
    ingest = start_ingest("--listen", "127.0.0.1:0", "--topic", topic, "--bootstrap-servers", kafka_bootstrap)
    iris_request = b'{"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}'
    for i in range(50):  # binary mode, as the logger posts
        assert ingest.post(http_binary(f"iris-{i}", "request", "sklearn-iris"), iris_request)[0] == 200
        assert ingest.post(http_binary(f"iris-{i}", "response", "sklearn-iris"), b'{"predictions": [1, 2]}')[0] == 200
    structured = []
    for i, (request, response) in enumerate(v2_income_traffic(20, shift_from_row=10**9)):
        for side, body in (("request", request), ("response", response)):
            structured.append({"specversion": "1.0", "id": f"inc-{i}", "source": "http://localhost:9081/",
                               "type": REQUEST_TYPE if side == "request" else RESPONSE_TYPE,
                               "inferenceservicename": "income", "component": "predictor",
                               "time": "2026-12-01T10:00:01Z", "datacontenttype": "application/json", "data": body})
    for event in structured[:20]:  # structured mode, one event per POST
        status, _ = ingest.post({"Content-Type": "application/cloudevents+json"}, orjson.dumps(event))
        assert status == 200
    status, reply = ingest.post({"Content-Type": "application/cloudevents-batch+json"}, orjson.dumps(structured[20:]))
    assert (status, reply) == (200, {"accepted": 20})
    no_name = {k: v for k, v in http_binary("x", "request", "sklearn-iris").items() if k != "Ce-Inferenceservicename"}
    status, reply = ingest.post(no_name, iris_request)
    assert status == 400 and reply["error"] == "missing_field"

    expected = 50 * 2 + 20 * ROWS_PER_REQUEST
    produced = consume_all(kafka_bootstrap, topic, expect_at_least=expected)
    assert len(produced) == expected
    records, _, rejects = decode_batch([m.value for m in produced])
    assert not rejects
    assert all(m.key.decode() == r.model_id for m, r in zip(produced, records)), "keyed by model id"
    assert {r.model_id for r in records} == {"sklearn-iris", "income"}
    iris = [r for r in records if r.model_id == "sklearn-iris"]
    assert sorted(r.request_id for r in iris)[:2] == ["iris-0/0", "iris-0/1"]
    assert {r.predicted_class for r in iris} == {"1", "2"}
    assert iris[0].timestamp == datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC).timestamp()  # ce-time
    [dead] = consume_all(kafka_bootstrap, f"{topic}.dlq", expect_at_least=1)
    assert dict(dead.headers)["infersight.reason"] == b"missing_field" and dead.value == iris_request

    daemon = start_daemon("--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--group-id", topic)
    wait_for(lambda: daemon.sample("infersight_records_total", model="sklearn-iris") == 100
             and daemon.sample("infersight_records_total", model="income") == 200, 60,
             what="the daemon to read what ingest produced")
    assert daemon.stop() == 0
    assert ingest.stop() == 0
    log = ingest.log()
    assert "stopped: 140 events, 300 records, 1 malformed, 0 refused (503)" in log, log
    assert "Traceback" not in log


def test_ingest_exits_with_a_clear_error_when_kafka_is_unreachable(tmp_path):
    result = subprocess.run([sys.executable, "-m", "monitor.cli", "ingest", "--listen", "127.0.0.1:0",
                             "--topic", "t", "--bootstrap-servers", "127.0.0.1:1"],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 1
    assert "Kafka at 127.0.0.1:1 unreachable" in result.stderr and "Traceback" not in result.stderr
