"""Checkpoints: per-model state and the offset it reflects, in a compacted topic.

Principle 4 of docs/architecture.md: nothing lost, nothing counted twice. Every
``checkpoint_interval_seconds`` the daemon writes each model's state to
``<topic>.state`` (key ``<topic>/<model_id>``, value JSON with the source
partition and the offset the state reflects), flushes, and only then commits
the consumer offsets. After a restart or a rebalance the new owner of a
partition restores the models last seen on it and resumes from the committed
offset, which is the offset of their checkpoint: records after the checkpoint
are replayed into exactly the state that had not seen them.

If a daemon dies between writing the checkpoint and committing, a state can be
*ahead* of the committed offset; the daemon then skips, for that model only
(by message key), the records the state already reflects. This is why the
message key must be the ``model_id`` (README, wire schema).

The codec is the stdlib ``json``: unlike orjson it keeps NaN, which detector
states use for missing values.
"""

from __future__ import annotations

import json
import logging
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

log = logging.getLogger("infersight.checkpoint")

STATE_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    # a model with many features and a large reference can exceed the 1 MB default
    "max.message.bytes": str(64 * 1024 * 1024),
}
MAX_STATE_BYTES = 64 * 1024 * 1024


class CheckpointStore:
    def __init__(self, bootstrap_servers: str, source_topic: str, state_topic: str, producer: KafkaProducer):
        self.bootstrap_servers = bootstrap_servers
        self.source_topic = source_topic
        self.state_topic = state_topic
        self.producer = producer

    def ensure_topic(self) -> None:
        """Create the compacted state topic if it does not exist yet."""
        if ensure_topic(self.bootstrap_servers, self.state_topic, 1, STATE_TOPIC_CONFIG):
            log.info("created compacted state topic %s", self.state_topic)

    def save(self, entries: dict[str, dict]) -> None:
        """Write ``{model_id: value}`` and wait until the broker has them all."""
        for model_id, value in entries.items():
            self.producer.send(self.state_topic, key=self._key(model_id), value=json.dumps(value).encode())
        self.producer.flush(timeout=60)

    def delete(self, model_id: str) -> None:
        self.producer.send(self.state_topic, key=self._key(model_id), value=None)  # tombstone

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
        try:
            state_partitions = [TopicPartition(self.state_topic, p) for p in consumer.partitions_for_topic(self.state_topic) or ()]
            if not state_partitions:
                return {}
            consumer.assign(state_partitions)
            consumer.seek_to_beginning(*state_partitions)
            ends = consumer.end_offsets(state_partitions)
            prefix = f"{self.source_topic}/".encode()
            latest: dict[bytes, bytes | None] = {}
            deadline = time.monotonic() + 120
            while any(consumer.position(tp) < ends[tp] for tp in state_partitions):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading {self.state_topic} took over 120 s")
                for messages in consumer.poll(timeout_ms=500).values():
                    for message in messages:
                        if message.key and message.key.startswith(prefix):
                            latest[message.key] = message.value
        finally:
            consumer.close()
        restored = {}
        for key, raw in latest.items():
            if raw is None:
                continue
            value = json.loads(raw)
            if value["partition"] in partitions:
                restored[key[len(prefix) :].decode()] = value
        return restored

    def _key(self, model_id: str) -> bytes:
        return f"{self.source_topic}/{model_id}".encode()


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
