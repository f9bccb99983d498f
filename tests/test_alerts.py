"""The alert state machine: pending -> firing -> resolved, hysteresis, dedup."""

from detectors.base import DriftResult
from monitor.engine.alerts import AlertBook
from monitor.engine.findings import Finding


def finding(detected: bool, *, feature="f3", detector="ks", statistic=None, t=0.0, examples=("r-1",), window=0):
    statistic = statistic if statistic is not None else (0.3 if detected else 0.01)
    result = DriftResult(statistic=statistic, threshold=0.1, detected=detected, n_seen=1000, change_index=500,
                         detail="moved")
    return Finding(model="m", alert="input_drift", feature=feature, detector=detector, result=result,
                   example_request_ids=list(examples), event_time=1_700_000_000.0 + t, since_record=1500,
                   window=window)


def test_fires_after_consecutive_detections_and_resolves_after_clean_windows():
    book = AlertBook(fire_after=2, resolve_after=2)
    assert book.observe([finding(True, t=0)]) == []  # pending
    assert book.firing() == {("m", "input_drift", "warning"): 0}
    [fired] = book.observe([finding(True, t=10, examples=("r-2",))])
    assert (fired.status, fired.model, fired.feature, fired.detector) == ("firing", "m", "f3", "ks")
    assert fired.since == "2023-11-14T22:13:20Z" and fired.at == "2023-11-14T22:13:30Z"
    assert fired.example_request_ids == ["r-1", "r-2"] and fired.since_record == 1500
    assert book.firing() == {("m", "input_drift", "warning"): 1}
    assert book.observe([finding(False)]) == []  # one clean window is not enough
    assert book.observe([finding(True)]) == []  # still firing: no duplicate page
    assert book.observe([finding(False)]) == []
    [resolved] = book.observe([finding(False)])
    assert resolved.status == "resolved"
    assert book.firing() == {("m", "input_drift", "warning"): 0}


def test_a_single_blip_never_pages():
    book = AlertBook(fire_after=2, resolve_after=2)
    for _ in range(50):
        assert book.observe([finding(True)]) == []
        assert book.observe([finding(False)]) == []


def test_windows_closing_in_one_batch_count_one_by_one():
    # Delayed labels can close several accuracy windows in one batch: each is
    # a window of its own (two detected ones fire at fire_after=2), in order,
    # so a clean window between them still breaks the run.
    book = AlertBook(fire_after=2, resolve_after=2)
    [fired] = book.observe([finding(True, window=1000), finding(True, window=2000)])
    assert fired.status == "firing"
    book = AlertBook(fire_after=2, resolve_after=2)
    assert book.observe([finding(True, window=3000), finding(False, window=2000), finding(True, window=1000)]) == []
    assert book.firing() == {("m", "input_drift", "warning"): 0}


def test_detectors_on_one_feature_merge_into_one_alert():
    book = AlertBook(fire_after=1, resolve_after=1)
    events = book.observe(
        [finding(True, detector="ks", statistic=0.2), finding(True, detector="psi", statistic=0.5),
         finding(True, feature="f5")]
    )
    assert sorted((e.feature, e.detector) for e in events) == [("f3", "psi"), ("f5", "ks")]
