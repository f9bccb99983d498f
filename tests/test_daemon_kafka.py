"""The daemon against the real local Apache Kafka broker (make kafka-up)."""

from __future__ import annotations

import json
import signal
import time

import orjson
import pytest

from monitor.tools.simulate import Scenario, generate_records, with_labels
from tests.conftest import consume_all, produce, wait_for

pytestmark = pytest.mark.kafka

# Small windows so a test needs a few thousand records, not a million.
SMALL = """
policy:
  reference_size: 1000
  window_size: 500
alerts:
  fire_after_windows: 2
  resolve_after_windows: 2
"""


def test_shifted_feature_is_flagged_and_stable_model_is_not(kafka_bootstrap, topic, start_daemon):
    daemon = start_daemon("--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--group-id", topic,
                          config=SMALL)
    scenario = Scenario("covariate_shift", feature="f3", magnitude=1.0, shift_at=2500)
    sent = produce(kafka_bootstrap, topic, generate_records(models=2, records_per_model=5000, scenario=scenario, seed=3))
    wait_for(lambda: daemon.sample("infersight_records_total", model="credit-risk") == 5000
             and daemon.sample("infersight_records_total", model="fraud-scorer") == 5000,
             90, what="all records processed")

    events = [json.loads(m.value) for m in consume_all(kafka_bootstrap, f"{topic}.alerts", expect_at_least=1)]
    input_alerts = {(e["model"], e["feature"]) for e in events if e["alert"] == "input_drift" and e["status"] == "firing"}
    assert ("credit-risk", "f3") in input_alerts
    assert not [e for e in events if e["model"] == "fraud-scorer"], "the stable model must raise nothing"
    assert input_alerts == {("credit-risk", "f3")}, "only the shifted feature is an input-drift alert"
    f3 = next(e for e in events if e["feature"] == "f3")
    assert f3["severity"] == "warning" and f3["statistic"] > f3["threshold"]
    assert 2000 <= f3["since_record"] <= 3000  # the shift starts at record 2500; windows are 500 long
    assert f3["example_request_ids"] and all(r.startswith("credit-risk-") for r in f3["example_request_ids"])

    assert daemon.sample("infersight_drift_detected", model="credit-risk", detector="ks", feature="f3") == 1.0
    assert daemon.sample("infersight_drift_detected", model="fraud-scorer", detector="ks", feature="f3") == 0.0
    assert daemon.sample("infersight_alert_active", model="credit-risk", alert="input_drift") == 1.0
    assert daemon.sample("infersight_kafka_connected") == 1.0
    assert sent == 10_000
    assert daemon.stop() == 0


def test_malformed_messages_are_dead_lettered_with_reasons(kafka_bootstrap, topic, start_daemon):
    daemon = start_daemon("--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--group-id", topic)
    good = [value for _, value in generate_records(models=1, records_per_model=50, seed=1)]
    bad = {
        b"{not json": "invalid_json",
        b"[1, 2]": "not_an_object",
        b'{"model_id": "m", "prediction": 1, "timestamp": 1}': "missing_field",
        b'{"model_id": "bad/id", "features": {}, "prediction": 1, "timestamp": 1}': "invalid_model_id",
        b'{"model_id": "m", "features": {"x": NaN}, "prediction": 1, "timestamp": 1}': "invalid_value",
    }
    produce(kafka_bootstrap, topic, [("k", v) for v in good[:25]] + [("k", b) for b in bad] + [("k", v) for v in good[25:]])

    dead = consume_all(kafka_bootstrap, f"{topic}.dlq", expect_at_least=len(bad))
    assert len(dead) == len(bad)
    for message in dead:
        headers = dict(message.headers)
        assert headers["infersight.reason"].decode() == bad[message.value]
        assert headers["infersight.detail"]
        assert headers["infersight.source"].decode().startswith(f"{topic}/")
    wait_for(lambda: daemon.sample("infersight_records_total", model="credit-risk") == 50, 30, what="valid records")
    for reason in bad.values():
        assert daemon.sample("infersight_records_rejected_total", reason=reason) == 1.0
    assert daemon.sample("infersight_records_rejected_total", reason="record_too_large") == 0.0
    assert daemon.stop() == 0


def test_restart_in_the_same_group_does_not_reprocess(kafka_bootstrap, topic, start_daemon):
    args = ("--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--group-id", f"{topic}-group")
    records = [value for _, value in generate_records(models=1, records_per_model=1500, seed=2)]

    first = start_daemon(*args)
    produce(kafka_bootstrap, topic, [("credit-risk", v) for v in records[:1000]])
    wait_for(lambda: first.sample("infersight_records_total", model="credit-risk") == 1000, 60, what="first 1000")
    assert first.stop() == 0
    assert "stopped" in first.log()

    produce(kafka_bootstrap, topic, [("credit-risk", v) for v in records[1000:]])
    second = start_daemon(*args)
    wait_for(lambda: second.sample("infersight_records_total", model="credit-risk") == 500, 60, what="the new 500")
    time.sleep(3)  # anything re-delivered would arrive within a few polls
    assert second.sample("infersight_records_total", model="credit-risk") == 500
    assert second.stop() == 0


def test_sigterm_mid_stream_finishes_the_batch_and_exits_zero(kafka_bootstrap, topic, start_daemon):
    daemon = start_daemon("--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--group-id", topic)
    produce(kafka_bootstrap, topic, generate_records(models=2, records_per_model=20_000, seed=4))
    wait_for(lambda: (daemon.sample("infersight_records_total", model="credit-risk") or 0) > 0, 60,
             what="processing to start")
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=30) == 0
    log = daemon.log()
    assert "received SIGTERM" in log and "stopped" in log
    assert "Traceback" not in log


def test_unreachable_broker_is_retried_with_backoff_and_reported(start_daemon):
    # Nothing listens on port 1: the daemon must say so, export kafka_connected 0,
    # keep retrying without stack traces, and still stop cleanly on SIGTERM.
    daemon = start_daemon("--bootstrap-servers", "127.0.0.1:1", "--topic", "nowhere")
    assert daemon.sample("infersight_kafka_connected") == 0.0
    wait_for(lambda: daemon.log().count("unreachable") >= 2, 40, what="two retry messages")
    assert daemon.stop() == 0
    log = daemon.log()
    assert "retrying in 1 s" in log and "retrying in 2 s" in log
    assert "Traceback" not in log


def test_records_without_timestamp_take_the_kafka_timestamp(kafka_bootstrap, topic, start_daemon):
    daemon = start_daemon("--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--group-id", topic)
    record = {"model_id": "no-clock", "features": {"x": 1.0}, "prediction": 0.5}
    before = time.time()
    produce(kafka_bootstrap, topic, [("no-clock", orjson.dumps(record))])
    stamp = wait_for(lambda: daemon.sample("infersight_last_record_timestamp_seconds", model="no-clock"), 30,
                     what="the record")
    assert before - 5 <= stamp <= time.time() + 5
    assert daemon.stop() == 0


def test_delayed_labels_give_accuracy_and_page_on_a_drop(kafka_bootstrap, topic, start_daemon):
    labels_topic = f"{topic}.labels"
    config = SMALL + f"kafka:\n  labels_topic: {labels_topic}\n"
    daemon = start_daemon("--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--group-id", topic,
                          config=config)
    scenario = Scenario("covariate_shift", feature="f3", shift_at=2500)
    stream = list(with_labels(generate_records(models=2, records_per_model=5000, scenario=scenario, seed=5),
                              scenario, models=2))
    produce(kafka_bootstrap, topic, [(m, v) for kind, m, v in stream if kind == "record"])
    produce(kafka_bootstrap, labels_topic, [(m, v) for kind, m, v in stream if kind == "label"])
    wait_for(lambda: daemon.sample("infersight_labels_total", model="fraud-scorer", outcome="matched") == 5000,
             90, what="all labels joined")
    assert 0.85 < daemon.sample("infersight_model_performance", model="fraud-scorer", metric="accuracy") < 0.97
    assert daemon.sample("infersight_model_performance", model="credit-risk", metric="accuracy") < 0.75
    def has_degraded(messages):
        return any(json.loads(m.value)["alert"] == "performance_degraded" for m in messages)

    events = [json.loads(m.value) for m in consume_all(kafka_bootstrap, f"{topic}.alerts", until=has_degraded)]
    degraded = [e for e in events if e["alert"] == "performance_degraded"]
    assert {e["model"] for e in degraded} == {"credit-risk"}
    assert daemon.stop() == 0


def test_state_survives_restart_and_crash_without_loss_or_double_count(kafka_bootstrap, topic, start_daemon):
    """A checkpoints on SIGTERM; B processes more and is killed -9 (no checkpoint,
    no commit); C restores A's checkpoint, replays B's records once, and still
    compares against the reference A learned."""
    # a short session so C need not wait 45 s for the killed B to time out
    config = SMALL + "kafka:\n  checkpoint_interval_seconds: 3600\n  session_timeout_ms: 6000\n"
    args = ("--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--group-id", f"{topic}-g")
    scenario = Scenario("covariate_shift", feature="f3", magnitude=1.0, shift_at=3500)
    records = [v for m, v in generate_records(models=1, records_per_model=6000, scenario=scenario, seed=9)]

    def seen(daemon):
        return daemon.sample("infersight_detector_records", model="credit-risk", detector="ks", feature="f0")

    a = start_daemon(*args, config=config)
    produce(kafka_bootstrap, topic, [("credit-risk", v) for v in records[:3000]])
    wait_for(lambda: a.sample("infersight_records_total", model="credit-risk") == 3000, 60, what="A's records")
    assert a.stop() == 0

    b = start_daemon(*args, config=config)
    produce(kafka_bootstrap, topic, [("credit-risk", v) for v in records[3000:3500]])
    wait_for(lambda: b.sample("infersight_records_total", model="credit-risk") == 500, 60, what="B's records")
    assert seen(b) == 2500  # restored 2000 + 500 new
    b.process.kill()
    b.process.wait()

    c = start_daemon(*args, config=config)
    produce(kafka_bootstrap, topic, [("credit-risk", v) for v in records[3500:]])
    wait_for(lambda: c.sample("infersight_records_total", model="credit-risk") == 3000, 60, what="C's records")
    assert "restored 1 models" in c.log()
    assert seen(c) == 5000  # every record after the reference exactly once
    assert c.sample("infersight_drift_detected", model="credit-risk", detector="ks", feature="f3") == 1.0
    assert c.sample("infersight_drift_detected", model="credit-risk", detector="ks", feature="f0") == 0.0
    assert c.stop() == 0


def test_registry_approvals_and_a_swapped_model_over_kafka(kafka_bootstrap, topic, start_daemon):
    from monitor.tools.poisoned import _scenario_models, digest_of, scenario_records

    clean, _, rogue = _scenario_models()
    registry = f"{topic}.registry"
    produce(kafka_bootstrap, registry, [("digits-lr", orjson.dumps({"digests": [digest_of(clean)]}))])
    config = f"integrity:\n  registry_topic: {registry}\n"
    daemon = start_daemon("--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--group-id", topic,
                          config=config)
    records = list(scenario_records("digits-swap", 5000, seed=2, artifact_digest=digest_of(clean),
                                    swap_digest=digest_of(rogue)))
    produce(kafka_bootstrap, topic, [("digits-lr", orjson.dumps(r)) for r in records])

    def swap_alert(messages):
        return any(json.loads(m.value)["alert"] == "artifact_unapproved" for m in messages)

    events = [json.loads(m.value) for m in consume_all(kafka_bootstrap, f"{topic}.alerts", until=swap_alert)]
    [swap] = [e for e in events if e["alert"] == "artifact_unapproved"]
    assert swap["feature"] == digest_of(rogue) and swap["severity"] == "critical"
    assert swap["example_request_ids"] == [next(r["request_id"] for r in records
                                                if r["artifact_digest"] == digest_of(rogue))]
    wait_for(lambda: daemon.sample("infersight_records_total", model="digits-lr") == 5000, 60, what="all records")
    assert daemon.sample("infersight_model_artifact_info", model="digits-lr", digest=digest_of(rogue)) == 1.0
    assert 'approved="false"' in next(line for line in daemon.metrics().splitlines()
                                      if digest_of(rogue) in line and not line.startswith("#"))
    assert daemon.sample("infersight_alert_active", model="digits-lr", alert="artifact_unapproved") == 1.0
    assert daemon.stop() == 0


def test_two_daemons_share_the_partitions_and_hand_over_state(kafka_bootstrap, topic, start_daemon):
    """Scale out on Kafka (docs/architecture.md, principle 7): a second daemon in the group takes
    some partitions; when one stops, the other restores its models' state."""
    config = SMALL + "kafka:\n  session_timeout_ms: 6000\n"
    args = ("--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--group-id", f"{topic}-g")
    records = list(generate_records(models=6, records_per_model=3000, seed=11))
    first = [(m, v) for i, (m, v) in enumerate(records) if i < len(records) // 2]
    second = records[len(records) // 2 :]
    models = sorted({m for m, _ in records})

    a = start_daemon(*args, config=config)
    b = start_daemon(*args, config=config)

    def owners():
        counts = {d: {m: d.sample("infersight_records_total", model=m) or 0 for m in models} for d in (a, b)}
        return counts if all(counts[a][m] + counts[b][m] == 1500 for m in models) else None

    wait_for(lambda: a.sample("infersight_kafka_connected") and b.sample("infersight_kafka_connected"), 30,
             what="both connected")
    time.sleep(8)  # let the group settle on two members before producing
    produce(kafka_bootstrap, topic, first)
    counts = wait_for(owners, 90, what="every record processed once")
    on_a = [m for m in models if counts[a][m]]
    assert on_a and len(on_a) < len(models), "both daemons must own some models"
    assert all(counts[a][m] in (0, 1500) for m in models), "a model's records stay on one daemon"

    assert a.stop() == 0
    produce(kafka_bootstrap, topic, second)
    def restored_everywhere():
        # every record after each model's reference exactly once, wherever it was processed
        return all(b.sample("infersight_detector_records", model=m, detector="ks", feature="f0") == 2000
                   for m in models)

    wait_for(restored_everywhere, 60, interval=1, what="b to own every model, restored")
    assert "restored" in b.log()
    assert b.stop() == 0
