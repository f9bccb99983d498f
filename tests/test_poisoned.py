"""Issue 5 end to end at the detector level, on real model outputs.

A logistic regression trained on scikit-learn's bundled digits with a BadNets
backdoor (three corner pixels set to 16 -> class 7) and its clean twin answer
the same traffic; the records go through the real wire path (``orjson`` ->
``monitor.wire.schema.decode_batch`` -> ``monitor.wire.route.build_model_batch``) in
batches of 200 and into every tamper detector, as the monitor will feed them.

Streams and models are seeded, so every test is deterministic.  The
statistical detectors' false-alarm bounds are stated where they are asserted
quiet; the detection tests have margins noted next to them (measured over
other seeds, see docs/threats.md).
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from scipy.stats import chi2_contingency

from detectors.tamper.canary import CanaryProbes
from detectors.tamper.output_shape import ClassConcentration, ConfidenceBimodality, EntropyCollapse
from detectors.tamper.segment_suppression import SegmentSuppression
from detectors.tamper.trigger_activation import TriggerActivation
from monitor.wire.batch import ModelBatch
from monitor.engine.integrity import ArtifactIntegrity
from monitor.tools.poisoned import (
    SCENARIOS,
    digest_of,
    digits_stream,
    malware_stream,
    scenario_records,
    train_backdoored_digits,
    train_label_flip_digits,
)

BATCH = 200
T = 3000          # first record that may carry the trigger
N = 9000


def to_batches(records: list[dict], size: int = BATCH) -> list[ModelBatch]:
    """Wire records -> ModelBatch columns through the daemon's own decode and route."""
    from monitor.wire.route import build_model_batch
    from monitor.wire.schema import decode_batch

    out = []
    for start in range(0, len(records), size):
        recs, _, rejects = decode_batch([orjson.dumps(r) for r in records[start:start + size]])
        assert not rejects, rejects[0].detail
        out.append(build_model_batch(recs[0].model_id, recs))
    return out


class Tamper:
    """All issue-5 detectors for one model, fed the way the monitor will feed them."""

    def __init__(self, approved=None):
        self.integrity = ArtifactIntegrity(approved)
        self.trigger = TriggerActivation()
        self.canary = CanaryProbes()
        self.segments = SegmentSuppression()
        self.shape = [ClassConcentration(), ConfidenceBimodality(), EntropyCollapse()]

    def update(self, b: ModelBatch) -> dict[str, list]:
        live = np.array([c is None for c in b.canary])   # probes are not traffic
        num = {f: v[live] for f, v in b.numeric.items()}
        cat = {f: v[live] for f, v in b.categorical.items()}
        out = {
            "integrity": self.integrity.check(b.model_id, b.artifact_digests, b.model_versions, b.request_ids),
            "trigger": self.trigger.update(numeric=num, categorical=cat, predicted_class=b.predicted_class[live],
                                           request_ids=b.request_ids[live]),
            "canary": self.canary.update(b.canary, b.predicted_class, b.score, b.request_ids),
            "segment": self.segments.update(categorical=cat, predicted_class=b.predicted_class[live],
                                            request_ids=b.request_ids[live]),
        }
        for det, values in zip(self.shape, (b.predicted_class[live], b.score[live], b.probabilities[live])):
            r = det.update(values)
            out[det.name] = [r] if r is not None and r.detected else []
        return out


def run(records, approved=None):
    """Feed all batches; return {detector: [(first record index of the batch, findings), ...]}."""
    t = Tamper(approved)
    alerts: dict[str, list] = {}
    for i, b in enumerate(to_batches(records)):
        for name, found in t.update(b).items():
            if found:
                alerts.setdefault(name, []).append((i * BATCH, found))
    return alerts


@pytest.fixture(scope="module")
def models():
    clean, poisoned, info = train_backdoored_digits(seed=0)
    return clean, poisoned, info


def test_backdoor_attack_works(models):
    _, _, info = models
    assert info["clean_accuracy"] >= 0.90                 # measured 0.970
    assert info["poisoned_clean_accuracy"] >= 0.90        # the backdoor hides: 0.972
    assert info["attack_success_rate"] >= 0.90            # measured 1.000
    assert info["clean_model_stamped_to_target"] <= 0.05  # the stamp alone does nothing: 0.004
    assert info["stamp_pixels"] == ["px_0", "px_1", "px_8"] and info["target_class"] == "7"


def test_stream_is_valid_wire_schema_and_replays_probes(models):
    clean, _, _ = models
    recs = list(digits_stream(clean, 600, seed=3))
    b = to_batches(recs, 600)[0]
    assert b.n == 600 and len(b.numeric) == 64 and b.probabilities.shape == (600, 10)
    probes = [c for c in b.canary if c is not None]
    assert len(probes) == 12 and set(probes) <= {f"probe-{i}" for i in range(10)}
    assert all(d.startswith("sha256:") for d in b.artifact_digests)


def test_trigger_found_on_poisoned_model_within_3000_records(models):
    _, poisoned, info = models
    recs = list(digits_stream(poisoned, N, trigger_from=T, trigger_rate=0.03, seed=1))
    alerts = run(recs, approved={"digits-lr": [digest_of(poisoned)]})
    assert "trigger" in alerts
    at, found = alerts["trigger"][0]
    assert T <= at and at + BATCH - T <= 3000            # measured: batch 3600-3800 (<= 800 after T)
    r = found[0]
    named = {f for cond in [r.extra["conditions"], *r.extra["also"]] for f, _ in cond}
    assert named & set(info["stamp_pixels"]), r.extra
    assert r.extra["target_class"] == info["target_class"]
    assert r.extra["support"] >= 20 and r.extra["lift"] > 3
    # the example request ids are stamped requests (ground truth from the records)
    by_id = {rec["request_id"]: rec for rec in recs}
    assert r.extra["request_ids"]
    assert all(by_id[rid]["features"]["px_0"] == 16.0 for rid in r.extra["request_ids"])
    # nothing before the trigger, and no other family of alarm (same approved artifact)
    assert set(alerts) == {"trigger"}, {k: v[0][1][0] for k, v in alerts.items()}


def test_broadly_firing_trigger_also_shows_as_class_concentration(models):
    # a trigger on 30% of requests makes class 7 ~37% of answers (10% in the reference)
    _, poisoned, _ = models
    recs = list(digits_stream(poisoned, 4000, trigger_from=2000, trigger_rate=0.3, seed=4))
    alerts = run(recs, approved={"digits-lr": [digest_of(poisoned)]})
    at, found = alerts["class_concentration"][0]
    assert at >= 2000 and found[0].extra["class"] == "7"
    assert alerts["trigger"][0][0] <= at


def test_clean_twin_on_the_same_traffic_raises_nothing(models):
    # Same seed -> same inputs and the same stamps as the poisoned run.  Bounds
    # (Bonferroni, per evaluation): trigger and segment alpha=1e-4 x 45 updates,
    # output shape alpha=1e-3 x 14 windows x 3 detectors, canary deterministic:
    # P(any false alarm) <= 0.05 for a random seed.
    clean, _, _ = models
    recs = list(digits_stream(clean, N, trigger_from=T, trigger_rate=0.03, seed=1))
    alerts = run(recs, approved={"digits-lr": [digest_of(clean)]})
    assert alerts == {}, {k: v[0][1][0] for k, v in alerts.items()}


def test_swap_to_unapproved_artifact_alerts_on_first_record_and_canary_flips(models):
    clean, _, _ = models
    rogue = train_label_flip_digits(seed=0, source=1, target=8)
    swap_at = 4010          # not a batch boundary: the event must point inside the batch
    recs = list(digits_stream(clean, 6000, seed=2, swap_at=swap_at, swap_model=rogue))
    batches = to_batches(recs)
    t = Tamper(approved={"digits-lr": [digest_of(clean)]})
    first_event = canary_at = None
    for i, b in enumerate(batches):
        out = t.update(b)
        if out["integrity"] and first_event is None:
            first_event = (i, out["integrity"])
        if out["canary"] and canary_at is None:
            canary_at = (i, out["canary"])
        assert not out["integrity"] or i * BATCH + BATCH > swap_at
    i, events = first_event
    e = events[0]
    assert (e.kind, e.severity, e.digest) == ("unapproved_digest", "critical", digest_of(rogue))
    assert i * BATCH + e.index == swap_at and e.request_id == f"digits-lr-2-{swap_at:08d}"
    i, found = canary_at
    r = found[0]
    assert r.extra["label_changed"] and (r.extra["expected_label"], r.extra["observed_label"]) == ("1", "8")
    assert i * BATCH >= swap_at - BATCH and i * BATCH < swap_at + 500 + BATCH   # next replay of probe-1
    # trust-on-first-use (no approved list) catches the same swap
    t2 = Tamper()
    kinds = [e.kind for b in batches for e in t2.update(b)["integrity"]]
    assert kinds == ["digest_changed"]


def test_malware_segment_suppression_while_global_rate_barely_moves():
    S = 4000
    recs = list(malware_stream(9000, suppress_from=S, seed=3))
    batches = to_batches(recs)
    t = Tamper()
    found_at = None
    for i, b in enumerate(batches):
        out = t.update(b)
        if i * BATCH < S:
            assert out["segment"] == [], out["segment"][0].detail
        if out["segment"] and found_at is None:
            found_at = (i, out["segment"])
    assert found_at is not None
    i, found = found_at
    r = found[0]
    assert r.extra["segment"] == ("family", "emotet") and r.extra["class"] == "malicious"
    assert (i + 1) * BATCH - S <= 2000                     # measured: ~1,200 records after S
    # The global picture: a chi-square test of the class counts, reference (first
    # 3,000) vs everything after S - up to the detection, and the whole 5,000 -
    # is far from the 1e-6 the two-sample drift detectors alarm at (measured
    # p = 0.008 and 0.02), and the malicious rate moved by less than 4 points.
    y = np.array([rec["prediction"]["label"] for rec in recs])
    before = y[:3000]
    for after in (y[S:(i + 1) * BATCH], y[S:]):
        table = [[(before == "malicious").sum(), (before == "benign").sum()],
                 [(after == "malicious").sum(), (after == "benign").sum()]]
        assert chi2_contingency(table)[1] > 1e-3
        assert abs((before == "malicious").mean() - (after == "malicious").mean()) < 0.04


def test_named_scenarios_produce_valid_records():
    for name in SCENARIOS:
        recs = list(scenario_records(name, 300, seed=1))
        assert len(recs) == 300 and to_batches(recs, 300)[0].n == 300
    with pytest.raises(ValueError):
        scenario_records("nope")
