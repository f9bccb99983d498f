"""The HTTP CloudEvents receiver (monitor/source/ingest.py) on 127.0.0.1, with a
sink the test controls: its bounded buffer, 503 backpressure, 400 for bad
events. The path through the real broker is in tests/test_kserve_kafka.py."""

from __future__ import annotations

import http.client
import threading

import orjson

from monitor.source.ingest import IngestServer
from monitor.wire.kserve import REQUEST_TYPE, RESPONSE_TYPE, KServeJoin
from tests.conftest import wait_for


class GatedSink:
    """Holds the worker at the first record until ``gate`` is set: Kafka too slow."""

    def __init__(self):
        self.gate = threading.Event()
        self.delivered: list[tuple[str, bytes]] = []
        self.rejects: list[tuple[bytes, str, str, str]] = []
        self.closed = False

    def records(self, model_id, raws):
        self.gate.wait(30)
        self.delivered.extend((model_id, raw) for raw in raws)

    def reject(self, raw, reason, detail, source):
        self.rejects.append((raw, reason, detail, source))

    def close(self):
        self.closed = True


def binary_headers(ce_id: str, side: str) -> dict[str, str]:
    return {"Ce-Id": ce_id, "Ce-Type": REQUEST_TYPE if side == "request" else RESPONSE_TYPE,
            "Ce-Source": "http://localhost:9081/", "Ce-Specversion": "1.0",
            "Ce-Inferenceservicename": "sklearn-iris", "Ce-Namespace": "default", "Ce-Component": "predictor",
            "Ce-Endpoint": "default", "Content-Type": "application/json"}


def post(port: int, headers: dict, body: bytes) -> tuple[int, dict, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), orjson.loads(response.read())
    finally:
        connection.close()


def test_a_full_buffer_answers_503_and_everything_accepted_is_delivered():
    sink = GatedSink()
    server = IngestServer(KServeJoin(), sink, "127.0.0.1", 0, buffer_size=4).start()
    port = server.address[1]
    try:
        request, response = b'{"instances": [[1.0, 2.0]]}', b'{"predictions": [1]}'
        # the first pair reaches the sink, which blocks the worker
        assert post(port, binary_headers("p0", "request"), request)[0] == 200
        assert post(port, binary_headers("p0", "response"), response)[0] == 200
        wait_for(lambda: server.stats()["buffered"] == 0, 10, what="the worker to take the first pair")
        statuses = []
        for i in range(1, 5):  # 8 events into a buffer of 4
            statuses.append(post(port, binary_headers(f"p{i}", "request"), request))
            statuses.append(post(port, binary_headers(f"p{i}", "response"), response))
        accepted = [s for s in statuses if s[0] == 200]
        refused = [s for s in statuses if s[0] == 503]
        assert len(accepted) == 4 and len(refused) == 4
        assert all(s[1].get("Retry-After") == "1" for s in refused)
        assert server.stats()["busy"] == 4 and server.stats()["buffered"] == 4
        sink.gate.set()
        wait_for(lambda: len(sink.delivered) == 3, 10, what="the buffered pairs to be delivered")
        assert [orjson.loads(raw)["request_id"] for _, raw in sink.delivered] == ["p0", "p1", "p2"]
        # room again: the sender's retry goes through
        assert post(port, binary_headers("p3", "request"), request)[0] == 200
        assert post(port, binary_headers("p3", "response"), response)[0] == 200
        wait_for(lambda: len(sink.delivered) == 4, 10, what="the retried pair")
    finally:
        sink.gate.set()
        server.stop()
    assert sink.closed
    assert server.join.unmatched_total == {"request": 0, "response": 0}


def test_bad_events_get_400_and_a_dead_letter_and_unpaired_halves_count_at_stop():
    sink = GatedSink()
    sink.gate.set()
    server = IngestServer(KServeJoin(), sink, "127.0.0.1", 0, buffer_size=100).start()
    port = server.address[1]
    try:
        no_type = {k: v for k, v in binary_headers("x", "request").items() if k != "Ce-Type"}
        status, _, body = post(port, no_type, b'{"instances": [[1]]}')
        assert status == 400 and body["error"] == "missing_field"
        # a well-formed envelope with a bad body: accepted, then dead-lettered by the worker
        assert post(port, binary_headers("y", "request"), b'{"instances": "nope"}')[0] == 200
        assert post(port, binary_headers("lonely", "request"), b'{"instances": [[1]]}')[0] == 200
        wait_for(lambda: len(sink.rejects) == 2, 10, what="two dead letters")
        assert [r[1] for r in sink.rejects] == ["missing_field", "invalid_type"]
        assert sink.rejects[1][0] == b'{"instances": "nope"}' and sink.rejects[1][3].endswith("#y")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/healthz")
        stats = orjson.loads(connection.getresponse().read())
        connection.close()
        assert stats["malformed"] == 1 and stats["events"] == 2 and stats["pending"]["request"] == 1
        assert stats["rejected"] == {"missing_field": 1, "invalid_type": 1}
    finally:
        server.stop()
    assert server.join.unmatched_total == {"request": 1, "response": 0}
    assert sink.delivered == []


def test_kafka_gone_at_shutdown_loses_the_rest_at_once_and_counts_it():
    from kafka.errors import KafkaTimeoutError

    from monitor.source.ingest import KafkaSink

    class UnreachableProducer:
        calls = 0

        def send(self, *args, **kwargs):
            UnreachableProducer.calls += 1
            raise KafkaTimeoutError("buffer full for 5000 ms")

    stopping = threading.Event()
    stopping.set()
    sink = KafkaSink(UnreachableProducer(), "t", "t.dlq", stopping)
    sink.records("m", [b"{}", b"{}"])
    sink.reject(b"x", "invalid_json", "not JSON", "http:src#1")
    assert sink.failed == 3
    assert UnreachableProducer.calls == 1, "after the first timeout nothing waits again"
