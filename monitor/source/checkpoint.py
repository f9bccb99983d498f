"""Checkpoints: per-model state and the offset it reflects, in a compacted topic.

Principle 4 of docs/architecture.md: nothing lost, nothing counted twice. Every
``checkpoint_interval_seconds`` the daemon writes the state of each model that
changed since its last checkpoint to ``<topic>.state`` (key
``<group>/<topic>/<model_id>``: the consumer group's own, so a second group on
the same topic starts from nothing), flushes, and only then commits the
consumer offsets. After a restart or a rebalance the new owner of a partition
restores the models last seen on it and resumes from the committed offset:
records after a model's checkpoint are replayed into exactly the state that had
not seen them. A model that saw nothing since its checkpoint has nothing to
replay, so it is not written again.

Values are binary (:mod:`monitor.engine.state`): the source partition, the
offset and the model's state, with its frozen parts (fitted references) stored
once as blobs under ``<group>/<topic>/<model_id>/blob/<name>`` and referred to
by name afterwards.

If a daemon dies between writing the checkpoint and committing, a state can be
*ahead* of the committed offset; the daemon then skips, for that model only
(by message key), the records the state already reflects. This is why the
message key must be the ``model_id`` (README, wire schema).

Checkpoints written by earlier versions (JSON, keys without the group) are not
read: the daemon says so once, and those models learn their reference again.
"""

from __future__ import annotations

import logging
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from monitor.engine.state import StateWriter, decode

log = logging.getLogger("infersight.checkpoint")

STATE_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    # a model with many features and a large reference can exceed the 1 MB default
    "max.message.bytes": str(64 * 1024 * 1024),
}
MAX_STATE_BYTES = 64 * 1024 * 1024
BLOB_MARK = "/blob/"


class CheckpointStore:
    def __init__(self, bootstrap_servers: str, source_topic: str, state_topic: str, producer: KafkaProducer,
                 group_id: str = "infersight"):
        self.bootstrap_servers = bootstrap_servers
        self.source_topic = source_topic
        self.state_topic = state_topic
        self.producer = producer
        self.prefix = f"{group_id}/{source_topic}/"
        self.writer = StateWriter()
        self.bytes_written = 0  # records and blobs, since start

    def ensure_topic(self) -> None:
        """Create the compacted state topic if it does not exist yet."""
        if ensure_topic(self.bootstrap_servers, self.state_topic, 1, STATE_TOPIC_CONFIG):
            log.info("created compacted state topic %s", self.state_topic)

    def save(self, entries: dict[str, dict]) -> int:
        """Write ``{model_id: value}`` and wait until the broker has them all;
        return the bytes written."""
        written = 0
        for model_id, value in entries.items():
            record, blobs = self.writer.encode(value)
            for name, blob in blobs.items():
                # blobs first: a record never refers to a blob the store lacks
                self.producer.send(self.state_topic, key=self._key(model_id, name), value=blob)
                written += len(blob)
            self.producer.send(self.state_topic, key=self._key(model_id), value=record)
            written += len(record)
        self.producer.flush(timeout=60)
        self.bytes_written += written
        return written

    def load(self, partitions: set[int]) -> dict[str, dict]:
        """Latest checkpoint of every model last seen on one of ``partitions``."""
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            client_id="infersight-state-reader",
            fetch_max_bytes=MAX_STATE_BYTES,
            max_partition_fetch_bytes=MAX_STATE_BYTES,
        )
        old_format = 0
        try:
            state_partitions = [TopicPartition(self.state_topic, p) for p in consumer.partitions_for_topic(self.state_topic) or ()]
            if not state_partitions:
                return {}
            consumer.assign(state_partitions)
            consumer.seek_to_beginning(*state_partitions)
            ends = consumer.end_offsets(state_partitions)
            prefix = self.prefix.encode()
            legacy = f"{self.source_topic}/".encode()
            latest: dict[bytes, bytes | None] = {}
            deadline = time.monotonic() + 120
            while any(consumer.position(tp) < ends[tp] for tp in state_partitions):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading {self.state_topic} took over 120 s")
                for messages in consumer.poll(timeout_ms=500).values():
                    for message in messages:
                        if not message.key:
                            continue
                        if message.key.startswith(prefix):
                            latest[message.key] = message.value
                        elif message.key.startswith(legacy) and message.value is not None:
                            old_format += 1
        finally:
            consumer.close()
        if old_format:
            log.warning("%s holds %d checkpoints of %s in the format of an earlier infersight version "
                        "(JSON, not namespaced by consumer group); they are not restored: those models "
                        "learn their reference again", self.state_topic, old_format, self.source_topic)
        records, blobs = {}, {}
        for key, raw in latest.items():
            if raw is None:
                continue
            name = key[len(prefix):].decode()
            if BLOB_MARK in name:
                blobs[name.rsplit(BLOB_MARK, 1)[1]] = raw
            else:
                records[name] = raw
        restored = {}
        for model_id, raw in records.items():
            try:
                value = decode(raw, blobs)
            except ValueError as exc:
                log.error("checkpoint of model %s not restored (%s); it learns its reference again", model_id, exc)
                continue
            if value["partition"] in partitions:
                restored[model_id] = value
        return restored

    def _key(self, model_id: str, blob: str | None = None) -> bytes:
        key = f"{self.prefix}{model_id}"
        return (key if blob is None else f"{key}{BLOB_MARK}{blob}").encode()


def ensure_topic(bootstrap_servers: str, name: str, partitions: int, configs: dict | None = None) -> bool:
    """Create topic ``name`` unless it exists; True if this call created it."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="infersight-admin")
    try:
        admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {})])
        return True
    except TopicAlreadyExistsError:
        return False
    finally:
        admin.close()
