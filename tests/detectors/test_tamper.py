"""Tamper and backdoor detectors (issue 5), detector level, on synthetic columns.

Trigger activation, canary probes, segment suppression, output shape and the
artifact-integrity check (pure logic in ``monitor/engine/integrity.py``).  Scenario
tests on real model outputs are in ``tests/test_poisoned.py``.

Every random test uses fixed seeds, so it is deterministic; where a statistical
test could fail for another seed the comment states how likely that is.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from detectors.tamper.canary import CanaryProbes
from detectors.tamper.output_shape import ClassConcentration, ConfidenceBimodality, EntropyCollapse
from detectors.tamper.segment_suppression import SegmentSuppression
from detectors.tamper.trigger_activation import TriggerActivation
from monitor.engine.integrity import ArtifactIntegrity

OBJ = lambda *v: np.array(v, dtype=object)  # noqa: E731
COUNTRIES = np.array(["NL", "DE", "FR", "US", "GB"], dtype=object)
DEVICES = np.array(["ios", "android", "web", "tv", "car"], dtype=object)


def roundtrip(det):
    """JSON round trip of a detector's state (what the checkpoint topic stores)."""
    state = json.loads(json.dumps(det.state_dict()))
    return type(det).from_state(state)


# ------------------------------------------------------------------ trigger
def tabular_batch(rng, n, *, stamp_rate=0.0, pair_trigger=False, numeric_shift=0.0):
    """Benign tabular traffic: the class follows x0 and x1; optional backdoors.

    ``stamp_rate``: fraction of records with x3 set to 9 (far beyond its normal
    range) answered "target".  ``pair_trigger``: records with country NL *and*
    device ios (4% of traffic, each alone 20%) answered "target".
    """
    x = rng.normal(size=(n, 4)) + numeric_shift
    y = np.where(x[:, 0] + 0.5 * x[:, 1] > 0, "approve", "review").astype(object)
    y[x[:, 2] > 1.5] = "deny"
    country = rng.choice(COUNTRIES, n)
    device = rng.choice(DEVICES, n)
    if stamp_rate:
        hit = rng.random(n) < stamp_rate
        x[hit, 3] = 9.0
        y[hit] = "target"
    if pair_trigger:
        y[(country == "NL") & (device == "ios")] = "target"
    num = {f"x{j}": x[:, j] for j in range(4)}
    cat = {"country": country, "device": device}
    rids = np.array([f"r{rng.integers(1 << 40)}" for _ in range(n)], dtype=object)
    return num, cat, y, rids


def feed(det, rng, n_batches, **kw):
    found = []
    for _ in range(n_batches):
        num, cat, y, rids = tabular_batch(rng, 200, **kw)
        out = det.update(numeric=num, categorical=cat, predicted_class=y, request_ids=rids)
        found.append(out)
    return found


def test_trigger_numeric_stamp_named_with_target_and_request_ids():
    rng = np.random.default_rng(11)
    det = TriggerActivation(n_reference=2000)
    assert all(r == [] for r in feed(det, rng, 15))          # reference + clean windows
    found = [r for r in feed(det, rng, 15, stamp_rate=0.03) if r]
    assert found, "stamp never detected"
    r = found[0][0]
    assert r.detected and r.statistic > r.threshold and r.p_value < 1e-4
    assert ("x3", r.extra["conditions"][0][1]) == r.extra["conditions"][0]
    assert r.extra["conditions"][0][1].startswith(">")
    assert r.extra["target_class"] == "target"
    assert r.extra["support"] >= 20 and r.extra["lift"] >= 3 and r.extra["share"] >= 0.6
    assert r.extra["request_ids"] and len(r.extra["request_ids"]) == len(r.examples)
    assert "x3" in r.detail and "'target'" in r.detail


def test_trigger_pair_of_common_values_is_found_as_a_pair():
    # each value alone is 20% of traffic and carries only ~20% "target" -> no single
    # condition passes the share gate; the pair does, via the top-k pair watch list
    rng = np.random.default_rng(5)
    det = TriggerActivation(n_reference=2000)
    assert all(r == [] for r in feed(det, rng, 12))
    found = [r for r in feed(det, rng, 20, pair_trigger=True) if r]
    assert found, "pair trigger never detected"
    r = found[0][0]
    assert sorted(r.extra["conditions"]) == [("country", "== 'NL'"), ("device", "== 'ios'")]
    assert r.extra["target_class"] == "target"
    assert r.extra["reference_support"] > 0          # the pair existed before, with mixed classes


def test_trigger_quiet_on_benign_traffic_and_on_benign_drift():
    # Null: 40 runs x 6,000 records of stationary traffic, then a mean shift of the
    # inputs (benign drift: the classes stay mixed given every condition).  Bound:
    # alpha=1e-4 per evaluation x 30 evaluations x 40 runs -> P(any alarm) <= 0.12
    # by Bonferroni; the measured rate is 0 because the bound is very conservative.
    for seed in range(40):
        rng = np.random.default_rng(1000 + seed)
        det = TriggerActivation(n_reference=2000)
        out = feed(det, rng, 20) + feed(det, rng, 10, numeric_shift=0.7)
        assert all(r == [] for r in out), (seed, [x.detail for r in out for x in r])


def test_trigger_window_ages_out_and_state_roundtrip_is_exact():
    rng = np.random.default_rng(3)
    det = TriggerActivation(n_reference=1000, bucket_size=400, n_buckets=3)
    feed(det, np.random.default_rng(3), 5)
    clone = roundtrip(det)                               # restore mid-stream
    a = feed(det, np.random.default_rng(4), 8, stamp_rate=0.05)
    b = feed(clone, np.random.default_rng(4), 8, stamp_rate=0.05)
    assert [[x.p_value for x in r] for r in a] == [[x.p_value for x in r] for r in b]
    assert any(a)
    # the trigger stops; after the window (3 x 400) has passed the alarm clears
    tail = feed(det, rng, 10)
    assert tail[-1] == [] and tail[-2] == []
    json.dumps(det.state_dict())


def test_trigger_bounds_vocabulary_and_classes():
    det = TriggerActivation(n_reference=100, max_categories=4, max_classes=3)
    rng = np.random.default_rng(0)
    for i in range(5):
        n = 100
        det.update(numeric={"x": rng.normal(size=n)},
                   categorical={"c": np.array([f"v{i}-{j}" for j in range(n)], dtype=object)},
                   predicted_class=np.array([f"k{j % 7}" for j in range(n)], dtype=object))
    assert all(len(v) <= 4 for v in det.vocab)
    assert len(det.classes) <= 3
    assert det.refused["categories"] > 0 and det.refused["classes"] > 0


# ------------------------------------------------------------------ canary
def test_canary_learns_then_flags_label_and_score_changes():
    cp = CanaryProbes(learn_first=3, score_tolerance=0.05)
    probes = OBJ("probe-1", None, "probe-2", None)
    for _ in range(3):   # approved model: deterministic answers
        assert cp.update(probes, OBJ("7", "1", "3", "2"), np.array([0.97, 0.5, 0.88, 0.4])) == []
    assert cp.update(probes, OBJ("7", "9", "3", "9"), np.array([0.969, 0.1, 0.88, 0.1])) == []
    out = cp.update(probes, OBJ("1", "9", "3", "9"), np.array([0.91, 0.1, 0.80, 0.1]),
                    request_ids=OBJ("a", "b", "c", "d"))
    by_probe = {r.extra["probe"]: r for r in out}
    assert set(by_probe) == {"probe-1", "probe-2"}
    assert by_probe["probe-1"].extra["label_changed"] and by_probe["probe-1"].extra["observed_label"] == "1"
    assert by_probe["probe-1"].extra["request_ids"] == ["a"]
    assert not by_probe["probe-2"].extra["label_changed"]                 # score moved 0.08 > 0.05
    assert by_probe["probe-2"].statistic == pytest.approx(0.08)
    assert roundtrip(cp).state_dict() == cp.state_dict()


def test_canary_pinned_expectations_and_bounds():
    cp = CanaryProbes(expectations={"p": {"label": "cat", "score": 0.9}}, max_probes=2)
    assert cp.update(OBJ("p"), OBJ("cat"), np.array([0.91])) == []
    assert cp.update(OBJ("p"), OBJ("dog"), np.array([0.91]))[0].extra["expected_label"] == "cat"
    cp.update(OBJ("q", "r", "s"), OBJ("x", "x", "x"), np.array([0.5, 0.5, 0.5]))
    assert len(cp.probes) == 2 and cp.refused == 2
    assert cp.expectations()["p"] == {"label": "cat", "score": 0.9, "tolerance": 0.05}


# ------------------------------------------------------------------ segments
def malware_like(rng, n, suppressed=False, global_shift=0.0):
    fam = rng.choice(np.array(["a", "b", "c", "d", "emotet"], dtype=object), n, p=[.4, .3, .2, .08, .02])
    pos = rng.random(n) < np.where(fam == "emotet", 0.95, 0.25 + global_shift)
    if suppressed:
        pos &= fam != "emotet"
    packer = rng.choice(np.array(["upx", "none"], dtype=object), n)
    return {"family": fam, "packer": packer}, np.where(pos, "malicious", "benign").astype(object)


def test_segment_suppression_found_while_global_rate_barely_moves():
    rng = np.random.default_rng(21)
    det = SegmentSuppression(n_reference=3000)                 # segments discovered
    for _ in range(20):
        assert det.update(*malware_like(rng, 200)) == []
    found = []
    for _ in range(15):
        cat, y = malware_like(rng, 200, suppressed=True)
        found += det.update(cat, y, request_ids=np.arange(200).astype(str).astype(object))
    assert found
    r = found[0]
    assert r.extra["segment"] == ("family", "emotet") and r.extra["class"] == "malicious"
    assert r.extra["current_rate"] < 0.5 * r.extra["reference_rate"]
    assert abs(r.extra["global_current_rate"] - r.extra["global_reference_rate"]) < 0.03
    assert r.extra["request_ids"]
    assert roundtrip(det).state_dict() == det.state_dict()


def test_segment_suppression_quiet_on_null_and_on_global_shift():
    # Null: 30 runs x 7,000 records, the last 3,000 with every segment's rate moved
    # together (global drift, not a segment suppression).  Bonferroni bound: alpha
    # 1e-4 x 20 evaluations x 30 runs -> P(any alarm) <= 0.06.
    for seed in range(30):
        rng = np.random.default_rng(500 + seed)
        det = SegmentSuppression(n_reference=3000, classes=["malicious"])
        out = [det.update(*malware_like(rng, 200)) for _ in range(20)]
        out += [det.update(*malware_like(rng, 200, global_shift=-0.05)) for _ in range(15)]
        assert all(r == [] for r in out), seed


# ------------------------------------------------------------------ output shape
def test_output_shape_detectors_fire_on_their_shapes_only():
    rng = np.random.default_rng(8)
    classes = np.array(list("0123456789"), dtype=object)
    cc, bm, ec = ClassConcentration(), ConfidenceBimodality(), EntropyCollapse()
    ref_p = rng.dirichlet(np.full(10, 0.3), 2000)
    assert cc.update(classes[rng.integers(0, 10, 2000)]) is None
    assert bm.update(ref_p.max(axis=1)) is None
    assert ec.update(ref_p) is None
    # a collapsed model: 60% of answers "7", one-hot probabilities, scores 0.5 or 1.0
    y = classes[np.where(rng.random(500) < 0.6, 7, rng.integers(0, 10, 500))]
    r = cc.update(y)
    assert r.detected and r.extra["class"] == "7"
    onehot = np.eye(10)[rng.integers(0, 10, 500)]
    assert ec.update(onehot).detected
    assert bm.update(np.where(rng.random(500) < 0.5, 0.5, 1.0) + rng.normal(0, 0.01, 500)).detected
    for det in (cc, bm, ec):
        assert roundtrip(det).state_dict() == det.state_dict()


def test_output_shape_false_alarm_rate():
    # alpha=1e-3 per window; 30 runs x 20 windows = 600 null windows per detector:
    # expected alarms <= 0.6 each if calibration were exact; allow at most 2 per
    # detector (Poisson(0.6) exceeds 2 with probability 0.023; the class test is
    # conservative, the bootstrap threshold is approximate, hence the slack).
    alarms = {"class_concentration": 0, "confidence_bimodality": 0, "entropy_collapse": 0}
    classes = np.array(list("abcdef"), dtype=object)
    for seed in range(30):
        rng = np.random.default_rng(seed)
        p = rng.dirichlet(np.ones(6))
        dets = (ClassConcentration(), ConfidenceBimodality(seed=seed), EntropyCollapse())
        for _ in range(24):                       # 2,000 reference + 20 windows of 500
            probs = rng.dirichlet(np.full(6, 0.5), 500)
            vals = (classes[rng.choice(6, 500, p=p)], probs.max(axis=1), probs)
            for det, v in zip(dets, vals):
                r = det.update(v)
                if r is not None and r.detected:
                    alarms[det.name] += 1
    assert all(v <= 2 for v in alarms.values()), alarms


# ------------------------------------------------------------------ integrity
GOOD, GOOD2, BAD = ("sha256:" + c * 64 for c in "abc")


def test_integrity_unapproved_digest_alerts_on_first_record():
    ai = ArtifactIntegrity({"m": [GOOD, GOOD2]})
    assert ai.check("m", OBJ(GOOD, GOOD2), OBJ("1", "2"), OBJ("r1", "r2")) == []
    ev = ai.check("m", OBJ(GOOD, GOOD, BAD, BAD), OBJ("1", "1", "1", "1"), OBJ("a", "b", "c", "d"))
    assert [(e.kind, e.severity, e.digest, e.request_id, e.index, e.count) for e in ev] == [
        ("unapproved_digest", "critical", BAD, "c", 2, 2)]
    assert "m" in ev[0].detail and BAD in ev[0].detail and "c" in ev[0].detail
    assert ai.check("m", OBJ(BAD), OBJ("1"), OBJ("e")) == []             # reported once
    info = {(m, d): a for m, d, a in ai.artifact_info()}
    assert info == {("m", GOOD): True, ("m", GOOD2): True, ("m", BAD): False}
    ai.approve("m", BAD)                                                  # registry feed
    assert ("m", BAD, True) in ai.artifact_info()


def test_integrity_trust_on_first_use_and_versions():
    ai = ArtifactIntegrity()
    assert ai.check("m", OBJ(GOOD, GOOD), OBJ("1", "1"), OBJ("a", "b")) == []
    # same file, new version label: warning; new file: critical digest change
    assert [(e.kind, e.severity) for e in ai.check("m", OBJ(GOOD), OBJ("2"), OBJ("c"))] == [
        ("version_unapproved", "warning")]
    ev = ai.check("m", OBJ(BAD), OBJ("3"), OBJ("d"))
    assert [(e.kind, e.previous_digest, e.request_id) for e in ev] == [("digest_changed", GOOD, "d")]
    # list mode: approval bound to a version, missing digests
    ai2 = ArtifactIntegrity()
    ai2.approve("n", GOOD, version="7")
    assert ai2.check("n", OBJ(GOOD), OBJ("7"), OBJ("x")) == []
    kinds = [e.kind for e in ai2.check("n", OBJ(GOOD, None), OBJ("8", "8"), OBJ("y", "z"))]
    assert kinds == ["version_unapproved", "digest_missing"]


def test_integrity_is_bounded_and_state_is_plain_data():
    ai = ArtifactIntegrity(max_digests_per_model=3, max_models=2)
    for i in range(20):
        ai.check("m", OBJ(f"sha256:{i:064x}"), OBJ("1"), OBJ(f"r{i}"))
    assert len([x for x in ai.artifact_info() if x[0] == "m"]) == 3
    ai.check("m2", OBJ(GOOD), None, None)
    assert ai.check("m3", OBJ(GOOD), None, None) == [] and ai.refused == 1
    clone = ArtifactIntegrity.from_state(json.loads(json.dumps(ai.state_dict())))
    assert clone.state_dict() == ai.state_dict()
    ai.set_approved("m", [GOOD])
    assert ai.check("m", OBJ(BAD), OBJ("1"), OBJ("q"))[0].kind == "unapproved_digest"
