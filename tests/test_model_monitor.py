"""Per-model monitor: reference learning, detection, and exact resume from a checkpoint."""

import orjson

from monitor.config import Settings
from monitor.engine.model_monitor import ModelMonitor
from monitor.engine.state import StateWriter, decode
from monitor.wire.route import build_model_batch
from monitor.wire.schema import decode_batch
from monitor.tools.simulate import Scenario, generate_records

SETTINGS = Settings.model_validate({"policy": {"reference_size": 1000, "window_size": 250,
                                                "multivariate_detectors": ["pca_reconstruction", "mmd"]}})
WITH_LABELS = Settings.model_validate({**SETTINGS.model_dump(), "kafka": {"labels_topic": "labels"}})


def batches(model: str, scenario: Scenario, n: int, size: int = 333, seed: int = 0):
    raws = [v for m, v in generate_records(models=2, records_per_model=n, scenario=scenario, seed=seed) if m == model]
    for start in range(0, len(raws), size):
        records, _, rejects = decode_batch(raws[start : start + size])
        assert not rejects
        yield build_model_batch(model, records)


def summary(findings):
    return [(f.detector, f.feature, f.result.detected, round(f.result.statistic, 12), f.since_record) for f in findings]


def test_shift_is_found_on_the_shifted_feature_only():
    monitor = ModelMonitor("credit-risk", SETTINGS)
    scenario = Scenario("covariate_shift", feature="f5", magnitude=1.0, shift_at=3000)
    detected = set()
    for batch in batches("credit-risk", scenario, 5000):
        detected |= {(f.detector, f.feature) for f in monitor.update(batch) if f.result.detected}
    assert monitor.reference_ready
    assert ("ks", "f5") in detected
    assert {feature for _, feature in detected if feature} == {"f5"}
    assert set(monitor.kinds) == {f"f{i}" for i in range(8)} | {"country", "device", "is_returning"}
    assert monitor.kinds["country"] == "categorical" and monitor.kinds["f1"] == "numeric"


def test_checkpoint_round_trip_resumes_exactly():
    scenario = Scenario("gradual_drift", feature="f2", magnitude=1.5, shift_at=1500, ramp=2000)
    all_batches = list(batches("credit-risk", scenario, 4000))
    straight = ModelMonitor("credit-risk", WITH_LABELS)
    expected = [summary(straight.update(b)) for b in all_batches]

    for cut in (1, 4, 8):  # while learning the reference, just after, mid-stream
        first = ModelMonitor("credit-risk", WITH_LABELS)
        got = [summary(first.update(b)) for b in all_batches[:cut]]
        # through the checkpoint codec (frozen parts as blobs)
        record, blobs = StateWriter().encode(first.state_dict())
        state = decode(record, blobs)
        resumed = ModelMonitor.from_state(state, WITH_LABELS)
        got += [summary(resumed.update(b)) for b in all_batches[cut:]]
        assert got == expected, f"diverged after a checkpoint at batch {cut}"
        assert resumed.prediction_ratios() == straight.prediction_ratios()
    assert any(any(d for _, _, d, _, _ in window) for window in expected), "the drift must be detected"


def test_feature_types_mixed_across_batches_become_categorical():
    monitor = ModelMonitor("m", SETTINGS)
    rows = [{"model_id": "m", "timestamp": 1, "prediction": 1, "features": {"x": i % 3 if i < 500 else "big"}}
            for i in range(1000)]
    records, _, _ = decode_batch([orjson.dumps(r) for r in rows])
    monitor.update(build_model_batch("m", records[:500]))
    monitor.update(build_model_batch("m", records[500:]))
    assert monitor.kinds == {"x": "categorical"}


def test_anomalous_records_raise_the_anomaly_ratio():
    monitor = ModelMonitor("credit-risk", SETTINGS)
    all_batches = list(batches("credit-risk", Scenario(), 4000, size=250))
    kinds = []
    for i, batch in enumerate(all_batches):
        if i >= 10:  # from record 2500: 10% of records far outside every feature's range
            for name in ("f0", "f2", "f3", "f5"):
                column = batch.numeric[name].copy()
                column[::10] = 1e3
                batch.numeric[name] = column
        kinds += [(i, f.alert) for f in monitor.update(batch) if f.result.detected]
    assert monitor.anomaly_ratio() > 0.05
    anomaly_at = [i for i, kind in kinds if kind == "anomaly_rate"]
    assert anomaly_at and min(anomaly_at) >= 10, kinds
    assert ("mmd", "") in monitor.detectors and ("pca_reconstruction", "") in monitor.detectors
    assert monitor.matrix_features == [f"f{i}" for i in range(8)]


def test_a_batch_of_only_canary_probes_is_handled():
    monitor = ModelMonitor("credit-risk", SETTINGS)
    for batch in batches("credit-risk", Scenario(), 1500):
        monitor.update(batch)
    assert monitor.reference_ready
    rows = [{"model_id": "credit-risk", "timestamp": 1, "prediction": {"label": "a", "score": 0.9},
             "features": {"f0": 1.0}, "tags": {"canary": "probe-1"}} for _ in range(5)]
    records, _, _ = decode_batch([orjson.dumps(r) for r in rows])
    monitor.update(build_model_batch("credit-risk", records))
    assert monitor.records_seen == 1505


def test_latency_shift_is_detected_and_missing_latencies_are_fine():
    import numpy as np

    monitor = ModelMonitor("credit-risk", SETTINGS)
    found = []
    for i, batch in enumerate(batches("credit-risk", Scenario(), 6000, size=250)):
        latency = batch.latency_ms.copy()
        latency[::7] = np.nan  # some records carry no latency_ms
        if i >= 12:  # from record 3000 the service is 40% slower
            latency *= 1.4
        batch.latency_ms = latency
        found += [(i, f.alert) for f in monitor.update(batch) if f.result.detected]
    latency_at = [i for i, kind in found if kind == "latency_shift"]
    assert latency_at and min(latency_at) >= 12, found
    assert min(latency_at) <= 14  # within ~500 records of the change


def test_reference_from_a_file_monitors_every_live_record(tmp_path):
    from monitor.engine.pipeline import Pipeline

    approved = tmp_path / "approved.jsonl"
    approved.write_bytes(b"\n".join(v for m, v in generate_records(1, 2000, seed=1)) + b"\n")
    live = [v for _, v in generate_records(1, 2000, Scenario("covariate_shift", feature="f3", shift_at=0), seed=2)]
    settings = Settings.model_validate({"policy": {
        "reference_size": 1000, "window_size": 500, "reference_files": {"credit-risk": str(approved)}}})
    monitor = Pipeline(settings)._new_monitor("credit-risk")
    assert monitor.reference_ready  # before any live record
    findings = []
    for start in range(0, 2000, 100):
        records, _, _ = decode_batch(live[start : start + 100])
        findings += [(start + 100, f) for f in monitor.update(build_model_batch("credit-risk", records))
                     if f.feature == "f3" and f.result.detected]
    at, first = findings[0]
    assert at == 500 and first.since_record == 0  # the first live window already shows the shift
    assert monitor.live_reference_records == 0


def test_sliding_windows_detect_sooner_than_tumbling():
    def first_detection(sliding):
        settings = Settings.model_validate({"policy": {"reference_size": 1000, "window_size": 500,
                                                        "sliding_windows": sliding}})
        monitor = ModelMonitor("credit-risk", settings)
        scenario = Scenario("covariate_shift", feature="f3", magnitude=0.6, shift_at=1300)
        for i, batch in enumerate(batches("credit-risk", scenario, 4000, size=50)):
            if any(f.feature == "f3" and f.result.detected for f in monitor.update(batch)):
                return (i + 1) * 50
        return None

    tumbling, sliding = first_detection(False), first_detection(True)
    assert tumbling is not None and sliding is not None
    assert sliding < tumbling, (sliding, tumbling)
