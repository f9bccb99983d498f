"""Fleet behaviour on the real broker: state per consumer group, fast recovery."""

from __future__ import annotations

import signal
import time

import pytest

from monitor.tools.simulate import generate_records
from tests.conftest import produce, wait_for

pytestmark = pytest.mark.kafka

SMALL = """
policy:
  reference_size: 1000
  window_size: 500
"""


def test_a_new_consumer_group_does_not_inherit_another_groups_state(kafka_bootstrap, topic, start_daemon):
    records = [(m, v) for m, v in generate_records(models=2, records_per_model=1500, seed=4)]
    produce(kafka_bootstrap, topic, records)
    first = start_daemon("--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--group-id", f"{topic}-a",
                         config=SMALL)
    wait_for(lambda: first.sample("infersight_records_total", model="credit-risk") == 1500, 60, what="group a")
    assert first.stop() == 0  # checkpoints on the way out
    second = start_daemon("--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--group-id", f"{topic}-b",
                          config=SMALL)
    # its own group: every record is processed again, from its own reference
    wait_for(lambda: second.sample("infersight_records_total", model="credit-risk") == 1500, 60, what="group b")
    assert second.sample("infersight_records_total", model="fraud-scorer") == 1500
    assert "restored 0 models" in second.log()
    assert second.stop() == 0


def test_a_static_member_resumes_within_15_seconds_after_kill_9(kafka_bootstrap, topic, start_daemon):
    # the default 45 s session: without static membership the restart would wait for it
    args = ("--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--group-id", f"{topic}-g",
            "--instance-id", "pod-0")
    config = SMALL + "kafka:\n  checkpoint_interval_seconds: 1\n"
    records = [(m, v) for m, v in generate_records(models=1, records_per_model=4000, seed=6)]
    first = start_daemon(*args, config=config)
    produce(kafka_bootstrap, topic, records[:2000])
    wait_for(lambda: first.sample("infersight_records_total", model="credit-risk") == 2000, 60, what="first run")
    time.sleep(2.5)  # a checkpoint and commit land
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    killed = time.monotonic()
    second = start_daemon(*args, config=config)
    produce(kafka_bootstrap, topic, records[2000:])
    wait_for(lambda: second.sample("infersight_records_total", model="credit-risk") == 2000, 60,
             what="the restarted daemon's records")
    assert time.monotonic() - killed <= 15, "restart waited for the session timeout"
    assert "restored 1 models" in second.log()
    assert second.stop() == 0
