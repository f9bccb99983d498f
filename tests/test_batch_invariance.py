"""The same alerts whatever the poll batch size.

A poll batch is an accident of timing: the daemon's alerts, and a replay's,
must not depend on it. One mixed stream (input drift with delayed labels, a
backdoor trigger, an artifact swap with canary probes) is replayed at batch
sizes 1, 7, 250, 1000 and 5000; every alert event must be identical.
"""

import itertools

import orjson
import pytest

from monitor.config import Settings
from monitor.engine.pipeline import Pipeline
from monitor.tools.poisoned import _scenario_models, digest_of, scenario_records
from monitor.tools.simulate import Scenario, generate_records, with_labels

BATCH_SIZES = (1, 7, 250, 1000, 5000)


def renamed(records, model_id):
    for record in records:
        yield orjson.dumps({**record, "model_id": model_id})


@pytest.fixture(scope="module")
def mixed_stream():
    """``[(kind, bytes)]``: records of four models interleaved, and labels."""
    clean, poisoned, rogue = _scenario_models()
    drift = Scenario("covariate_shift", feature="f3", magnitude=1.0, shift_at=3000)
    drifting = [(kind, value) for kind, _, value in with_labels(generate_records(2, 7000, drift, seed=3), drift, 2)]
    backdoor = [("record", v) for v in renamed(
        scenario_records("digits-backdoor", 7000, seed=1, artifact_digest=digest_of(poisoned)), "digits-backdoor")]
    swap = [("record", v) for v in renamed(
        scenario_records("digits-swap", 7000, seed=2, artifact_digest=digest_of(clean)), "digits-swap")]
    # round-robin, so each poll batch holds several models
    mixed = [item for group in itertools.zip_longest(drifting, backdoor, swap) for item in group if item]
    return mixed, digest_of(clean), digest_of(poisoned)


def replay(stream, settings: Settings, batch_size: int):
    pipeline = Pipeline(settings)
    events = []
    for start in range(0, len(stream), batch_size):
        part = stream[start : start + batch_size]
        records = [value for kind, value in part if kind == "record"]
        labels = [value for kind, value in part if kind == "label"]
        events += pipeline.process(records, label_raws=labels).events
    return events


def test_alerts_do_not_depend_on_the_batch_size(mixed_stream):
    stream, clean_digest, poisoned_digest = mixed_stream
    settings = Settings.model_validate({
        "kafka": {"labels_topic": "labels"},
        "policy": {"reference_size": 2000, "window_size": 500},
        "integrity": {"approved": {"digits-backdoor": [poisoned_digest], "digits-swap": [clean_digest]}},
    })
    timelines = {}
    for size in BATCH_SIZES:
        events = replay(stream, settings, size)
        timelines[size] = sorted(
            (e.at, e.model, e.alert, e.feature, e.status, e.since, e.statistic, e.detector) for e in events
        )
    reference = timelines[BATCH_SIZES[0]]
    kinds = {(alert, status) for _, _, alert, _, status, *_ in reference}
    # the stream exercises every kind of decision the invariance is about
    for kind in ("input_drift", "trigger_suspected", "artifact_unapproved", "canary_mismatch",
                 "performance_degraded"):
        assert (kind, "firing") in kinds, (kind, sorted(kinds))
    for size in BATCH_SIZES[1:]:
        assert timelines[size] == reference, f"batch size {size} changed the alerts"
