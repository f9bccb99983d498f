"""Issue 5 through the whole pipeline: poisoned, swapped and suppressing models
raise the right alerts; the clean twin on the same traffic raises none."""

import orjson
import pytest

from monitor.config import Settings
from monitor.engine.pipeline import Pipeline
from monitor.tools.poisoned import _scenario_models, digest_of, scenario_records

BATCH = 200
T = 3000  # trigger / swap / suppression start (scenario defaults: 3000 / 4000 / 4000)


@pytest.fixture(scope="module")
def models():
    return _scenario_models()


def replay(records, settings: Settings):
    """Feed records in batches; return [(records fed so far, event)]."""
    pipeline = Pipeline(settings)
    raws = [orjson.dumps(r) for r in records]
    timeline = []
    for start in range(0, len(raws), BATCH):
        outcome = pipeline.process(raws[start : start + BATCH])
        assert not outcome.rejects
        timeline += [(start + BATCH, event) for event in outcome.events]
    return pipeline, timeline


def approved(model_id, model):
    return Settings.model_validate({"integrity": {"approved": {model_id: [digest_of(model)]}}})


def test_backdoor_trigger_is_named_within_3000_records(models):
    clean, poisoned, _ = models
    records = list(scenario_records("digits-backdoor", 8000, seed=1, artifact_digest=digest_of(poisoned)))
    pipeline, timeline = replay(records, approved("digits-lr", poisoned))
    triggers = [(at, e) for at, e in timeline if e.alert == "trigger_suspected" and e.status == "firing"]
    assert triggers, [e.alert for _, e in timeline]
    at, event = triggers[0]
    assert T < at <= T + 3000
    assert event.feature == "class=7" and event.severity == "critical"
    assert any(px in event.detail for px in ("px_0", "px_1", "px_8")), event.detail
    stamped = {r["request_id"] for r in records if r["features"]["px_0"] == 16.0}
    assert event.example_request_ids and set(event.example_request_ids) <= stamped
    assert pipeline.alerts.firing()[("digits-lr", "trigger_suspected", "critical")] == 1


def test_clean_twin_on_the_same_traffic_raises_nothing(models):
    clean, _, _ = models
    records = list(scenario_records("digits-clean", 8000, seed=1, artifact_digest=digest_of(clean)))
    _, timeline = replay(records, approved("digits-lr", clean))
    assert timeline == []


def test_swap_to_unapproved_digest_alerts_on_its_first_record_and_canary_flips(models):
    clean, _, rogue = models
    records = list(scenario_records("digits-swap", 6000, seed=2, artifact_digest=digest_of(clean),
                                    swap_digest=digest_of(rogue)))
    first_swapped = next(r for r in records if r["artifact_digest"] == digest_of(rogue))
    pipeline, timeline = replay(records, approved("digits-lr", clean))
    integrity = [(at, e) for at, e in timeline if e.alert == "artifact_unapproved"]
    at, event = integrity[0]
    assert event.status == "firing" and event.feature == digest_of(rogue)
    assert event.example_request_ids == [first_swapped["request_id"]]
    assert at == 4000 + BATCH  # the batch holding the first swapped record
    canary = [e for _, e in timeline if e.alert == "canary_mismatch" and e.status == "firing"]
    assert canary and all(e.feature.startswith("probe-") for e in canary)
    info = {(m, d, a) for m, d, a in pipeline.integrity.artifact_info()}
    assert ("digits-lr", digest_of(rogue), False) in info and ("digits-lr", digest_of(clean), True) in info
    # what is serving now (last window): only the rogue, 2000 records after the swap
    assert pipeline.serving_artifacts() == [("digits-lr", digest_of(rogue), False)]


def test_malware_segment_suppression_is_found():
    records = list(scenario_records("malware-suppression", 9000, seed=3))
    _, timeline = replay(records, Settings())
    found = [e for _, e in timeline if e.alert == "segment_suppression" and e.status == "firing"]
    assert found and found[0].feature == "family=emotet"
    assert not [e for _, e in timeline if e.alert in ("trigger_suspected", "artifact_unapproved", "canary_mismatch")]


@pytest.mark.parametrize("scenario", ["covariate_shift", "gradual_drift", "class_concentration"])
def test_plain_drift_never_pages_as_tampering(scenario):
    """Drift moves outputs for every segment at once; that is drift, not a
    targeted backdoor: no critical tamper alert may fire."""
    from monitor.engine.findings import ALERT_KINDS
    from monitor.tools.simulate import Scenario, generate_records

    settings = Settings.model_validate({"policy": {"reference_size": 1000, "window_size": 500}})
    raws = [v for _, v in generate_records(3, 8000, Scenario(scenario, magnitude=1.5, shift_at=3000), seed=7)]
    pipeline = Pipeline(settings)
    events = []
    for start in range(0, len(raws), 1000):
        events += pipeline.process(raws[start : start + 1000]).events
    assert {e.alert for e in events if e.model == "credit-risk"} & {"input_drift", "output_drift"}
    fire_at_once = {kind.name for kind in ALERT_KINDS.values() if kind.fires_at_once}
    assert not [(e.model, e.alert, e.feature) for e in events if e.alert in fire_at_once]
