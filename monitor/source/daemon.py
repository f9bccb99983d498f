"""The Kafka daemon (``infersight run``): source and sinks around the pipeline.

Loop: poll a batch -> ``Pipeline.process`` -> dead-letter the rejects and
publish alert events (flushed) -> every ``checkpoint_interval_seconds``:
checkpoint model state with the offsets it reflects, then commit those offsets
(see :mod:`monitor.source.checkpoint`). Offsets are never committed ahead of the
state, so a crash replays records into the state that had not seen them:
nothing lost, nothing counted twice. Dead letters and alerts are at least once.

Rebalances: partitions taken away drop their models from memory (their new
owner restores them from the checkpoint); partitions given restore theirs and
rewind to the committed offset, so each record reaches the restored state once.

SIGTERM/SIGINT set a flag checked between batches: the batch in hand is
finished, checkpointed and committed, then the consumer leaves the group and
the process exits 0. An unreachable broker at start is retried with capped
exponential backoff, one log line per attempt, and shown as
``infersight_kafka_connected 0``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from monitor.source.checkpoint import MAX_STATE_BYTES, CheckpointStore, ensure_topic
from monitor.config import Settings
from monitor.export.metrics import RuntimeStatus
from monitor.engine.approvals import ApprovalGate, TrustedKeys
from monitor.engine.pipeline import BatchOutcome, Pipeline
from monitor.wire.kserve import KServeJoin
from monitor.wire.schema import Reject

log = logging.getLogger("infersight.daemon")

BACKOFF_START_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0


class _RebalanceRecorder(ConsumerRebalanceListener):
    """Notes partition changes; the main loop acts on them after ``poll``
    (the callbacks run on the client's IO loop, where blocking is not allowed)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.revoked: set[TopicPartition] = set()
        self.assigned: set[TopicPartition] = set()

    def on_partitions_revoked(self, revoked):
        with self.lock:
            self.revoked.update(revoked)
            self.assigned.difference_update(revoked)

    def on_partitions_assigned(self, assigned):
        with self.lock:
            self.assigned.update(assigned)

    def take(self) -> tuple[set[TopicPartition], set[TopicPartition]]:
        with self.lock:
            revoked, assigned = self.revoked, self.assigned
            self.revoked, self.assigned = set(), set()
        return revoked, assigned


class _RegistryFeed:
    """Approved artifacts published by a model registry to a compacted topic
    (key ``model_id``, value ``{"digests": ["sha256:..."], "signatures": [...]}``).
    Every daemon reads all of it, from the beginning, outside the consumer
    group, and checks each approval's signatures (monitor/engine/approvals.py)
    before it counts: a restart verifies everything again."""

    def __init__(self, bootstrap_servers: str, topic: str, gate: ApprovalGate):
        self.topic = topic
        self.gate = gate
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False,
            client_id="infersight-registry", bootstrap_timeout_ms=5000,
        )
        partitions = [TopicPartition(topic, p) for p in self.consumer.partitions_for_topic(topic) or ()]
        self.consumer.assign(partitions)
        if partitions:
            self.consumer.seek_to_beginning(*partitions)

    def catch_up(self, pipeline: Pipeline, timeout: float = 60.0) -> None:
        """Apply everything published so far, before the first inference record."""
        partitions = list(self.consumer.assignment())
        ends = self.consumer.end_offsets(partitions) if partitions else {}
        deadline = time.monotonic() + timeout
        while any(self.consumer.position(tp) < ends[tp] for tp in partitions) and time.monotonic() < deadline:
            self.poll(pipeline, timeout_ms=500)

    def poll(self, pipeline: Pipeline, timeout_ms: int = 0) -> None:
        for messages in self.consumer.poll(timeout_ms=timeout_ms).values():
            for message in messages:
                model_id = (message.key or b"").decode("utf-8", "replace")
                decision = self.gate.review(model_id, message.value)
                pipeline.apply_approval(decision)
                (log.warning if decision.rejection else log.info)(
                    "registry %s offset %d: model %s: %s", self.topic, message.offset, model_id, decision.describe())

    def close(self) -> None:
        self.consumer.close()


class Daemon:
    def __init__(self, settings: Settings, pipeline: Pipeline, runtime: RuntimeStatus):
        self.settings = settings
        self.pipeline = pipeline
        self.runtime = runtime
        self.stopping = threading.Event()
        self.consumer: KafkaConsumer | None = None
        self.producer: KafkaProducer | None = None
        self.checkpoints: CheckpointStore | None = None
        self.registry: _RegistryFeed | None = None
        self.rebalances = _RebalanceRecorder()
        # (partition, key) -> offset: records a restored state already reflects
        self.skip_until: dict[tuple[int, bytes], int] = {}
        self._next_lag_check = 0.0
        self._next_checkpoint = time.monotonic() + settings.kafka.checkpoint_interval_seconds
        # kafka.input_format: kserve -> logger CloudEvents are joined into records first
        self.kserve = KServeJoin.from_settings(settings) if settings.kafka.input_format == "kserve" else None

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
            consumer = producer = None
            try:
                consumer = KafkaConsumer(
                    bootstrap_servers=kafka.bootstrap_servers,
                    group_id=kafka.group_id,
                    # static membership: a restarted daemon with the same id gets
                    # its partitions back at once instead of after the session timeout
                    group_instance_id=kafka.group_instance_id,
                    client_id="infersight",
                    enable_auto_commit=False,
                    auto_offset_reset=kafka.auto_offset_reset,
                    max_poll_records=kafka.max_poll_records,
                    session_timeout_ms=kafka.session_timeout_ms,
                    heartbeat_interval_ms=kafka.session_timeout_ms // 3,
                    # notice topics created after we subscribed within 30 s, not the default 5 min
                    metadata_max_age_ms=30_000,
                    bootstrap_timeout_ms=5000,
                )
                producer = KafkaProducer(
                    bootstrap_servers=kafka.bootstrap_servers,
                    client_id="infersight",
                    acks="all",
                    linger_ms=20,
                    compression_type="gzip",  # checkpoints and alert events compress well
                    max_request_size=MAX_STATE_BYTES,
                    bootstrap_timeout_ms=5000,
                )
                checkpoints = CheckpointStore(kafka.bootstrap_servers, kafka.topic, kafka.state_topic, producer,
                                              group_id=kafka.group_id)
                checkpoints.ensure_topic()
                if kafka.labels_topic:
                    # co-partitioned with the inference topic, so that the range
                    # assignor gives a model's labels to the daemon that owns it
                    partitions = len(consumer.partitions_for_topic(kafka.topic) or ()) or 1
                    if ensure_topic(kafka.bootstrap_servers, kafka.labels_topic, partitions):
                        log.info("created labels topic %s with %d partitions", kafka.labels_topic, partitions)
                registry_topic = self.settings.integrity.registry_topic
                self.registry = (_RegistryFeed(kafka.bootstrap_servers, registry_topic, self._approval_gate())
                                 if registry_topic else None)
                if self.registry is not None:
                    self.registry.catch_up(self.pipeline)
            except KafkaError as exc:
                for client in (self.registry, producer, consumer):  # whatever did connect
                    if client is not None:
                        client.close()
                self.registry = None
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
            topics = [kafka.topic] + ([kafka.labels_topic] if kafka.labels_topic else [])
            consumer.subscribe(topics, listener=self.rebalances)
            self.consumer, self.producer, self.checkpoints = consumer, producer, checkpoints
            self.runtime.kafka_connected = True
            log.info(
                "connected to %s; consuming %s as group %s (dead letters -> %s, alerts -> %s, state -> %s)",
                kafka.bootstrap_servers,
                ", ".join(topics),
                kafka.group_id,
                kafka.dead_letter_topic,
                kafka.alerts_topic,
                kafka.state_topic,
            )
            return True
        return False

    def _approval_gate(self) -> ApprovalGate:
        integrity = self.settings.integrity
        return ApprovalGate(TrustedKeys.load(integrity.trusted_keys), integrity.require_signed_approvals)

    # -- main loop ----------------------------------------------------------

    def run(self) -> int:
        if not self.connect():
            return 0
        kafka = self.settings.kafka
        try:
            while not self.stopping.is_set():
                try:
                    polled = self.consumer.poll(timeout_ms=kafka.poll_timeout_ms, max_records=kafka.max_poll_records)
                    rewound = self._apply_rebalance()
                    if rewound:  # what this poll returned from those partitions comes again
                        polled = {tp: m for tp, m in polled.items() if (tp.topic, tp.partition) not in rewound}
                    if self.registry is not None:
                        self.registry.poll(self.pipeline)  # approvals before the records they govern
                    if polled:
                        self._handle(polled)
                    if time.monotonic() >= self._next_checkpoint:
                        self._checkpoint_and_commit()
                    self._maybe_measure_lag()
                except KafkaError as exc:
                    # The client reconnects by itself; say so once per failure.
                    # Uncommitted records are redelivered from the last checkpoint.
                    self.runtime.kafka_connected = False
                    log.warning("Kafka error (%s: %s); will retry", type(exc).__name__, exc)
                    self.stopping.wait(BACKOFF_START_SECONDS)
            self._checkpoint_and_commit()
        finally:
            self._close()
        return 0

    def _apply_rebalance(self) -> set[tuple[str, int]]:
        """Act on partition changes; returns the partitions rewound."""
        revoked, assigned = self.rebalances.take()
        topic = self.settings.kafka.topic
        lost = {tp.partition for tp in revoked if tp.topic == topic}
        if lost:
            gone = self.pipeline.forget_partitions(lost)
            self.skip_until = {k: v for k, v in self.skip_until.items() if k[0] not in lost}
            log.info("partitions %s revoked: %d models handed over", sorted(lost), len(gone))
        gained = {tp.partition for tp in assigned if tp.topic == topic}
        labels_topic = self.settings.kafka.labels_topic
        gained_labels = {tp.partition for tp in assigned if tp.topic == labels_topic}
        if not gained and not gained_labels:
            return set()
        # The assignment callback runs on the client's IO thread, so a poll may
        # already have returned records of these partitions and built monitors
        # from them. Drop those, restore the checkpointed state, and rewind to
        # the committed offsets the checkpoint reflects, labels included (the
        # label joins live in the model state): every record then reaches the
        # restored state exactly once.
        self.pipeline.forget_partitions(gained)
        restored = self.checkpoints.load(gained) if gained else {}
        for model_id, checkpoint in restored.items():
            self.pipeline.restore(model_id, checkpoint)
        committed = {}
        for tp in [TopicPartition(topic, p) for p in gained] + [TopicPartition(labels_topic, p) for p in gained_labels]:
            committed[tp] = self.consumer.committed(tp)
            if committed[tp] is not None:
                self.consumer.seek(tp, committed[tp])
            elif self.settings.kafka.auto_offset_reset == "earliest":
                self.consumer.seek_to_beginning(tp)
        for model_id, checkpoint in restored.items():
            partition_commit = committed.get(TopicPartition(topic, checkpoint["partition"])) or 0
            if checkpoint["offset"] > partition_commit:
                # died between checkpoint and commit: this state is ahead
                self.skip_until[(checkpoint["partition"], model_id.encode())] = checkpoint["offset"]
        log.info("partitions %s assigned: restored %d models from %s", sorted(gained), len(restored),
                 self.settings.kafka.state_topic)
        return {(topic, p) for p in gained} | {(labels_topic, p) for p in gained_labels}

    def _handle(self, polled: dict) -> None:
        labels_topic = self.settings.kafka.labels_topic
        messages, label_messages = [], []
        for tp, partition_messages in polled.items():
            (label_messages if tp.topic == labels_topic else messages).extend(partition_messages)
        if self.skip_until:
            messages = [m for m in messages if m.offset >= self.skip_until.get((m.partition, m.key), 0)]
        kserve_rejects = []
        if self.kserve is not None:  # messages becomes each record's source, then the malformed events
            messages, raws, timestamps, kserve_rejects = self.kserve.convert_messages(messages)
        else:
            raws = [m.value if m.value is not None else b"" for m in messages]
            timestamps = [m.timestamp / 1000.0 if m.timestamp and m.timestamp > 0 else time.time() for m in messages]
        label_raws = [m.value if m.value is not None else b"" for m in label_messages]
        outcome = self.pipeline.process(
            raws, default_timestamps=timestamps, label_raws=label_raws,
            partitions=[m.partition for m in messages[:len(raws)]],
        )
        if kserve_rejects:
            outcome.rejects.extend(kserve_rejects)
            self.pipeline.count_rejects(kserve_rejects)
        if self.kserve is not None:
            self.runtime.kserve_unmatched = dict(self.kserve.unmatched_total)
        self._publish(outcome, messages, label_messages)
        self.runtime.kafka_connected = True
        log.debug("batch: %d records, %d rejected, %.1f ms", outcome.n_records, len(outcome.rejects), outcome.seconds * 1e3)

    def _publish(self, outcome: BatchOutcome, messages: list, label_messages: list) -> None:
        kafka = self.settings.kafka
        dead = [(r, messages[r.index]) for r in outcome.rejects]
        dead += [(r, label_messages[r.index]) for r in outcome.label_rejects]
        for reject, message in dead:
            self.producer.send(kafka.dead_letter_topic, value=reject.raw, key=message.key, headers=_dlq_headers(reject, message))
        for event in outcome.events:
            self.producer.send(kafka.alerts_topic, value=orjson.dumps(event.to_dict()), key=event.model.encode())
        # Dead letters and alerts are flushed with the next checkpoint, before
        # the offsets that produced them are committed.

    def _checkpoint_and_commit(self) -> None:
        """Write every model's state with the offsets it reflects, then commit them."""
        self._next_checkpoint = time.monotonic() + self.settings.kafka.checkpoint_interval_seconds
        assigned = self.consumer.assignment()
        if not assigned:
            return
        offsets = {tp: self.consumer.position(tp) for tp in assigned}
        topic = self.settings.kafka.topic
        entries = self.pipeline.checkpoint()
        for checkpoint in entries.values():
            checkpoint["offset"] = offsets.get(TopicPartition(topic, checkpoint["partition"]))
        started = time.process_time()
        self.runtime.checkpoint_bytes += self.checkpoints.save(entries)  # flushes dead letters and alerts too
        self.pipeline.saved(entries.keys())
        self.runtime.checkpoint_cpu_seconds += time.process_time() - started
        try:
            self.consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()})
        except CommitFailedError as exc:
            # A rebalance took the partitions; their new owner resumes from the
            # previous commit and the matching checkpoint.
            log.warning("commit refused (%s); the partitions' new owner replays from the last commit", exc)
        self.skip_until = {k: v for k, v in self.skip_until.items() if offsets.get(TopicPartition(topic, k[0]), 0) < v}

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
        if self.registry is not None:
            self.registry.close()
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
