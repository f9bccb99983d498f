"""The Kafka daemon (``infersight run``): source and sinks around the pipeline.

Loop: poll a batch -> ``Pipeline.process`` -> dead-letter the rejects and
publish alert events (flushed) -> commit offsets. Offsets are committed only
after the batch is processed and its side effects are acknowledged, so a crash
re-delivers (at least once) rather than loses records.

SIGTERM/SIGINT set a flag checked between batches: the batch in hand is
finished and committed, then the consumer leaves the group and the process
exits 0. An unreachable broker at start is retried with capped exponential
backoff, one log line per attempt, and shown as ``infersight_kafka_connected 0``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import orjson
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from monitor.config import Settings
from monitor.metrics import RuntimeStatus
from monitor.pipeline import BatchOutcome, Pipeline
from monitor.schema import Reject

log = logging.getLogger("infersight.daemon")

BACKOFF_START_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0


class Daemon:
    def __init__(self, settings: Settings, pipeline: Pipeline, runtime: RuntimeStatus):
        self.settings = settings
        self.pipeline = pipeline
        self.runtime = runtime
        self.stopping = threading.Event()
        self.consumer: KafkaConsumer | None = None
        self.producer: KafkaProducer | None = None
        self._next_lag_check = 0.0

    def install_signal_handlers(self) -> None:
        def request_stop(signum, _frame):
            log.info("received %s: finishing the current batch, then exiting", signal.Signals(signum).name)
            self.stopping.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    # -- connection ---------------------------------------------------------

    def connect(self) -> bool:
        """Create consumer and producer, retrying with backoff until connected
        or asked to stop. Returns False if stopped before connecting."""
        kafka = self.settings.kafka
        delay = BACKOFF_START_SECONDS
        while not self.stopping.is_set():
            try:
                consumer = KafkaConsumer(
                    bootstrap_servers=kafka.bootstrap_servers,
                    group_id=kafka.group_id,
                    client_id="infersight",
                    enable_auto_commit=False,
                    auto_offset_reset=kafka.auto_offset_reset,
                    max_poll_records=kafka.max_poll_records,
                    bootstrap_timeout_ms=5000,
                )
                producer = KafkaProducer(
                    bootstrap_servers=kafka.bootstrap_servers,
                    client_id="infersight",
                    acks="all",
                    linger_ms=20,
                    bootstrap_timeout_ms=5000,
                )
            except KafkaError as exc:
                self.runtime.kafka_connected = False
                log.warning(
                    "Kafka at %s unreachable (%s); retrying in %.0f s",
                    kafka.bootstrap_servers,
                    type(exc).__name__,
                    delay,
                )
                self.stopping.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX_SECONDS)
                continue
            consumer.subscribe([kafka.topic] + ([kafka.labels_topic] if kafka.labels_topic else []))
            self.consumer, self.producer = consumer, producer
            self.runtime.kafka_connected = True
            log.info(
                "connected to %s; consuming %s as group %s (dead letters -> %s, alerts -> %s)",
                kafka.bootstrap_servers,
                kafka.topic,
                kafka.group_id,
                kafka.dlq_topic,
                kafka.alert_topic,
            )
            return True
        return False

    # -- main loop ----------------------------------------------------------

    def run(self) -> int:
        if not self.connect():
            return 0
        assert self.consumer is not None and self.producer is not None
        kafka = self.settings.kafka
        try:
            while not self.stopping.is_set():
                try:
                    polled = self.consumer.poll(timeout_ms=kafka.poll_timeout_ms, max_records=kafka.max_poll_records)
                    if polled:
                        self._handle(polled)
                    self._maybe_measure_lag()
                except KafkaError as exc:
                    # The client reconnects by itself; say so once per failure
                    # and keep the uncommitted batch for redelivery.
                    self.runtime.kafka_connected = False
                    log.warning("Kafka error (%s: %s); will retry", type(exc).__name__, exc)
                    self.stopping.wait(BACKOFF_START_SECONDS)
        finally:
            self._close()
        return 0

    def _handle(self, polled: dict) -> None:
        labels_topic = self.settings.kafka.labels_topic
        messages, label_messages = [], []
        for tp, partition_messages in polled.items():
            (label_messages if tp.topic == labels_topic else messages).extend(partition_messages)
        raws = [m.value if m.value is not None else b"" for m in messages]
        timestamps = [m.timestamp / 1000.0 if m.timestamp and m.timestamp > 0 else time.time() for m in messages]
        label_raws = [m.value if m.value is not None else b"" for m in label_messages]
        outcome = self.pipeline.process(raws, default_timestamps=timestamps, label_raws=label_raws)
        self._publish(outcome, messages, label_messages)
        self.consumer.commit()
        self.runtime.kafka_connected = True
        log.debug("batch: %d records, %d rejected, %.1f ms", outcome.n_records, len(outcome.rejects), outcome.seconds * 1e3)

    def _publish(self, outcome: BatchOutcome, messages: list, label_messages: list) -> None:
        kafka = self.settings.kafka
        dead = [(r, messages[r.index]) for r in outcome.rejects]
        dead += [(r, label_messages[r.index]) for r in outcome.label_rejects]
        for reject, message in dead:
            self.producer.send(kafka.dlq_topic, value=reject.raw, key=message.key, headers=_dlq_headers(reject, message))
        for event in outcome.events:
            self.producer.send(kafka.alert_topic, value=orjson.dumps(event.to_dict()), key=event.model.encode())
        if dead or outcome.events:
            # Dead letters and alerts must be durable before the offsets that
            # produced them are committed.
            self.producer.flush(timeout=30)

    def _maybe_measure_lag(self) -> None:
        now = time.monotonic()
        if now < self._next_lag_check:
            return
        self._next_lag_check = now + self.settings.kafka.lag_interval_seconds
        assigned = list(self.consumer.assignment())
        if not assigned:
            return
        ends = self.consumer.end_offsets(assigned)
        lag = {}
        for tp in assigned:
            position = self.consumer.position(tp)
            lag[(tp.topic, tp.partition)] = max(0, ends.get(tp, position) - position)
        self.runtime.consumer_lag = lag
        self.runtime.kafka_connected = True

    def _close(self) -> None:
        if self.producer is not None:
            try:
                self.producer.flush(timeout=10)
                self.producer.close(timeout=10)
            except KafkaError as exc:
                log.warning("producer close: %s", exc)
        if self.consumer is not None:
            try:
                self.consumer.close(autocommit=False)
            except KafkaError as exc:
                log.warning("consumer close: %s", exc)
        self.runtime.kafka_connected = False
        log.info("stopped")


def _dlq_headers(reject: Reject, message) -> list[tuple[str, bytes]]:
    return [
        ("infersight.reason", reject.reason.encode()),
        ("infersight.detail", reject.detail.encode()[:1000]),
        ("infersight.source", f"{message.topic}/{message.partition}/{message.offset}".encode()),
    ]

