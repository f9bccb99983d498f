"""``infersight ingest``: an HTTP CloudEvents receiver for KServe's logger.

Point an InferenceService's ``logger.url`` here. Each POST (binary content
mode with ``ce-*`` headers, structured ``application/cloudevents+json``, or
batched ``application/cloudevents-batch+json``) is checked for a CloudEvent
envelope and put in a bounded buffer; a worker thread joins requests with
their responses (:class:`monitor.wire.kserve.KServeJoin`) and produces one
wire-schema v1 record per row to Kafka, keyed by model id, so that the daemon
(any number of them in one consumer group) reads it as its own format.

Backpressure: when the buffer is full (Kafka slower than the logger, or
unreachable) a POST gets ``503`` with ``Retry-After`` and nothing of it is
kept. Malformed events get ``400`` and go, with their reason, to the
dead-letter topic like any rejected record. ``GET /healthz`` answers ``200``
with counters as JSON. SIGTERM stops accepting, drains the buffer, counts the
halves still waiting for their pair as unmatched, flushes Kafka, exits 0.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

import orjson

from monitor.wire.kserve import MAX_EVENT_BYTES, CloudEvent, KServeEventError, KServeJoin, events_from_http

log = logging.getLogger("infersight.ingest")

RETRY_AFTER_SECONDS = 1
_IDLE_SECONDS = 1.0  # how often an idle worker expires halves past the window


class Sink(Protocol):
    """Where converted records and dead letters go (Kafka in production)."""

    def records(self, model_id: str, raws: list[bytes]) -> None: ...
    def reject(self, raw: bytes, reason: str, detail: str, source: str) -> None: ...
    def close(self) -> None: ...


class KafkaSink:
    """Records to ``topic`` keyed by model id; dead letters to ``dlq_topic``
    with the daemon's headers (``infersight.reason``, ``.detail``, ``.source``).

    A full producer buffer blocks the worker (retried until stopped), which
    fills the ingest buffer, which answers 503: backpressure reaches the sender."""

    def __init__(self, producer, topic: str, dlq_topic: str, stopping: threading.Event):
        self.producer = producer
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.stopping = stopping
        self.failed = 0  # sends given up (broker unreachable at shutdown, or the broker refused them)
        self._given_up = False

    def records(self, model_id: str, raws: list[bytes]) -> None:
        key = model_id.encode()
        for raw in raws:
            self._send(self.topic, raw, key, None)

    def reject(self, raw: bytes, reason: str, detail: str, source: str) -> None:
        headers = [("infersight.reason", reason.encode()), ("infersight.detail", detail.encode()[:1000]),
                   ("infersight.source", source.encode()[:1000])]
        self._send(self.dlq_topic, raw, None, headers)

    def _send(self, topic: str, value: bytes, key: bytes | None, headers) -> None:
        from kafka.errors import KafkaError, KafkaTimeoutError

        while not self._given_up:
            try:
                self.producer.send(topic, value=value, key=key, headers=headers).add_errback(self._failed)
                return
            except KafkaTimeoutError:
                if self.stopping.is_set():
                    # draining for shutdown with Kafka gone: the rest fails at once, not 5 s each
                    self._given_up = True
                    log.error("Kafka unreachable while stopping: what is still buffered is lost (counted)")
                    break
                log.warning("Kafka producer buffer full for %s; waiting (the HTTP side answers 503 meanwhile)", topic)
            except KafkaError as exc:
                log.error("cannot produce to %s: %s", topic, exc)
                break
        self.failed += 1

    def _failed(self, exc) -> None:
        self.failed += 1
        log.error("Kafka refused a message: %s", exc)

    def close(self) -> None:
        from kafka.errors import KafkaError

        try:
            self.producer.flush(timeout=20)
        except KafkaError as exc:
            log.error("Kafka flush at shutdown failed (%s): unacknowledged messages may be lost", exc)
        self.producer.close(timeout=5)


class IngestServer:
    """The HTTP receiver, its bounded buffer and the worker that drains it."""

    def __init__(self, join: KServeJoin, sink: Sink, host: str = "127.0.0.1", port: int = 0, buffer_size: int = 1000):
        self.join = join
        self.sink = sink
        self.capacity = buffer_size
        self._buffer: deque = deque()
        self._ready = threading.Condition()
        self._stopping = False
        self.counts: Counter[str] = Counter()  # events (200), malformed (400), busy (503); records produced
        self.rejected_total: Counter[str] = Counter()  # per reason, converter and envelope alike
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self._threads = [
            threading.Thread(target=self.httpd.serve_forever, name="ingest-http", daemon=True),
            threading.Thread(target=self._work, name="ingest-worker", daemon=True),
        ]

    @property
    def address(self) -> tuple[str, int]:
        return self.httpd.server_address[:2]

    def start(self) -> IngestServer:
        for thread in self._threads:
            thread.start()
        return self

    def offer(self, items: list[tuple], kind: str) -> bool:
        """All of ``items`` into the buffer (counted as ``kind``), or none of
        them if they do not fit."""
        with self._ready:
            if self._stopping or len(self._buffer) + len(items) > self.capacity:
                return False
            self._buffer.extend(items)
            self.counts[kind] += len(items)
            self._ready.notify()
            return True

    def count(self, kind: str) -> None:
        with self._ready:  # handler threads count concurrently
            self.counts[kind] += 1

    def stats(self) -> dict:
        with self._ready:
            buffered, counts = len(self._buffer), dict(self.counts)
        return {"buffered": buffered, "capacity": self.capacity, **counts,
                "rejected": dict(self.rejected_total), "unmatched": dict(self.join.unmatched_total),
                "pending": self.join.pending()}

    def stop(self) -> None:
        """Stop accepting, finish what is buffered, give up on unpaired halves, flush."""
        self.httpd.shutdown()
        with self._ready:
            self._stopping = True
            self._ready.notify()
        self._threads[1].join()
        unmatched = self.join.expire_all()
        if unmatched:
            log.info("stopping: %d requests/responses never got their other half", unmatched)
        self.sink.close()
        self.httpd.server_close()

    def _work(self) -> None:
        while True:
            with self._ready:
                if not self._buffer and not self._stopping:
                    self._ready.wait(_IDLE_SECONDS)
                items = list(self._buffer)
                self._buffer.clear()
                done = self._stopping and not items
            if done:
                return
            if not items:
                self.join.expire(time.time())
                continue
            for item in items:
                self._handle(*item)

    def _handle(self, kind: str, *args) -> None:
        if kind == "reject":
            raw, reason, detail, source = args
            self._dead_letter(raw, reason, detail, source)
            return
        event, received, raw = args
        try:
            joined = self.join.add_joined(event, received)
        except KServeEventError as exc:
            self._dead_letter(raw, exc.reason, exc.detail, f"http:{event.source or ''}#{event.id}")
            return
        if joined is not None:
            self.sink.records(joined.model_id, joined.records)
            with self._ready:
                self.counts["records"] += len(joined.records)

    def _dead_letter(self, raw: bytes, reason: str, detail: str, source: str) -> None:
        self.rejected_total[reason] += 1
        self.sink.reject(raw, reason, detail, source)


def _handler(server: IngestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the logger sends one POST per event

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self._reply(411, {"error": "Content-Length required"}, close=True)
                return
            if int(length) > MAX_EVENT_BYTES:
                self._reply(413, {"error": f"body of {length} bytes > limit {MAX_EVENT_BYTES}"}, close=True)
                return
            body = self.rfile.read(int(length))
            received = time.time()
            try:
                events: list[CloudEvent] = events_from_http(self.headers, body)
            except KServeEventError as exc:
                source = f"http:{self.headers.get('ce-source') or self.client_address[0]}#{self.headers.get('ce-id') or ''}"
                if server.offer([("reject", body, exc.reason, exc.detail, source)], "malformed"):
                    self._reply(400, {"error": exc.reason, "detail": exc.detail})
                else:
                    self._busy()
                return
            items = [("event", e, received, e.raw if e.raw is not None else body) for e in events]
            if server.offer(items, "events"):
                self._reply(200, {"accepted": len(events)})
            else:
                self._busy()

        def do_GET(self) -> None:  # noqa: N802
            if self.path.rstrip("/") in ("/healthz", ""):
                self._reply(200, server.stats())
            else:
                self._reply(404, {"error": "POST CloudEvents to any path; GET /healthz"})

        def _busy(self) -> None:
            server.count("busy")
            self._reply(503, {"error": "buffer full, retry later"}, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

        def _reply(self, status: int, body: dict, headers: dict | None = None, close: bool = False) -> None:
            payload = orjson.dumps(body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format, *args) -> None:  # noqa: A002 - the logger sends one POST per event
            log.debug("%s " + format, self.client_address[0], *args)

    return Handler
