"""Half-Space Trees (River parity, batching, state) and the streaming scorer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from river import anomaly

from detectors.anomaly.half_space_trees import HalfSpaceTrees, HSTDetector
from detectors.anomaly.streaming_anomaly import StreamingAnomalyScorer, detect_period


def _river_scores(X, **params) -> np.ndarray:
    """River's score_one then learn_one, record by record; NaN = missing key."""
    m = anomaly.HalfSpaceTrees(**params)
    out = []
    for row in X:
        x = {i: float(v) for i, v in enumerate(row) if not np.isnan(v)}
        out.append(m.score_one(x))
        m.learn_one(x)
    return np.array(out)


def _data(seed, n, d):
    rng = np.random.default_rng(seed)
    X = rng.beta(2, 5, size=(n, d))
    X[::53] = rng.uniform(0.9, 1.0, size=(len(X[::53]), d))  # sparse outliers
    return X


@pytest.mark.parametrize(
    "params,d",
    [
        ({"n_trees": 5, "height": 3, "window_size": 3, "seed": 42}, 1),
        ({"n_trees": 10, "height": 8, "window_size": 250, "seed": 7}, 4),
        ({"n_trees": 6, "height": 6, "window_size": 64, "seed": 1, "limits": {0: (-1.0, 2.0), 1: (0.0, 5.0)}}, 2),
    ],
)
def test_hst_equals_river_exactly(params, d):
    X = _data(0, 1500, d)
    ref = _river_scores(X, **params)
    ours = HalfSpaceTrees(**params).score_then_learn(X)
    assert np.array_equal(ours, ref)  # bit-identical, not just close


def test_hst_missing_values_follow_river():
    X = _data(1, 800, 3)
    X[np.random.default_rng(2).random(X.shape) < 0.05] = np.nan
    params = {"n_trees": 5, "height": 5, "window_size": 40, "seed": 3}
    assert np.array_equal(HalfSpaceTrees(**params).score_then_learn(X), _river_scores(X, **params))


def test_hst_batching_and_state_round_trip():
    X = _data(3, 2000, 3)
    params = {"n_trees": 8, "height": 6, "window_size": 100, "seed": 5}
    whole = HalfSpaceTrees(**params).score_then_learn(X)
    m = HalfSpaceTrees(**params)
    parts = [m.score_then_learn(X[:1])]
    parts.append(m.score_then_learn(X[1:777]))
    m2 = HalfSpaceTrees.from_state(json.loads(json.dumps(m.state_dict())))
    parts.append(m2.score_then_learn(X[777:1500]))
    for i in range(1500, 1510):  # one by one
        parts.append(m2.score_then_learn(X[i : i + 1]))
    parts.append(m2.score_then_learn(X[1510:]))
    assert np.array_equal(np.concatenate(parts), whole)
    # learn_batch + score_batch == River's learn_one... then score_one
    a = HalfSpaceTrees(**params)
    a.learn_batch(X[:1000])
    r = anomaly.HalfSpaceTrees(**params)
    for row in X[:1000]:
        r.learn_one(dict(enumerate(row.tolist())))
    assert np.array_equal(a.score_batch(X[1000:1100]), [r.score_one(dict(enumerate(x.tolist()))) for x in X[1000:1100]])


def test_hst_detector_quiet_then_detects():
    rng = np.random.default_rng(4)
    ref = rng.normal(0, 1, size=(3000, 4))
    det = HSTDetector(ref, target_rate=0.01, alpha=1e-4, seed=2)
    # 20 normal batches: the per-batch false alarm probability is alpha (1e-4)
    # if records were independent; HST's learning adds some dependence, so
    # allow one: P(>= 2 of 20) is far below 1e-3.
    alarms = sum(det.update(rng.normal(0, 1, size=(500, 4))).detected for _ in range(20))
    assert alarms <= 1
    bad = rng.normal(0, 1, size=(500, 4))
    bad[:60] += 6.0  # 12% far outliers
    r = det.update(bad)
    assert r.detected and r.statistic > r.threshold
    assert all(e < 60 for e in r.examples)
    state = json.loads(json.dumps(det.state_dict()))
    det2 = HSTDetector.from_state(state)
    nxt = rng.normal(0, 1, size=(300, 4))
    assert det2.update(nxt) == det.update(nxt)


# ------------------------------------------------------------ streaming scorer
def _seasonal(seed, n=24 * 40):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = 50 + 0.01 * t + 8 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 1, n)
    y[500] += 15
    y[700:] -= 10
    y[300:330] = np.nan
    return y


def test_streaming_scorer_chunking_and_state():
    y = _seasonal(0)
    whole_s, whole_c = StreamingAnomalyScorer().score(y)
    sc = StreamingAnomalyScorer()
    s1, c1 = sc.score(y[:123])
    sc2 = StreamingAnomalyScorer.from_state(json.loads(json.dumps(sc.state_dict())))
    s2, c2 = sc2.score(y[123:611])
    s3, c3 = sc2.score(y[611:])
    np.testing.assert_array_equal(np.concatenate([s1, s2, s3]), whole_s)
    np.testing.assert_array_equal(np.concatenate([c1, c2, c3]), whole_c)


def test_streaming_scorer_finds_spike_shift_and_handles_gap():
    y = _seasonal(1)
    sc = StreamingAnomalyScorer()
    s, c = sc.score(y)
    assert sc.period == 24
    assert s[500] > 0.9
    assert np.isnan(s[300:330]).all()
    assert np.nanmax(s[330:340]) < 0.9  # coming back from the gap is not an anomaly
    cps = np.flatnonzero(c)
    assert any(700 <= p < 712 for p in cps) and len(cps) <= 2


@pytest.mark.parametrize("kind", ["random_walk", "ar1", "white"])
def test_streaming_scorer_quiet_without_seasonality(kind):
    # 3 seeds x 3000 points of each non-seasonal process (20-seed sweep: about 1 change point per 60k points)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        e = rng.normal(size=3000)
        if kind == "random_walk":
            y = np.cumsum(e)
        elif kind == "ar1":
            y = np.zeros(3000)
            for i in range(1, 3000):
                y[i] = 0.8 * y[i - 1] + e[i]
        else:
            y = e
        s, c = StreamingAnomalyScorer().score(y + 100)
        assert c.sum() <= 1
        assert np.mean(s > 0.5) < 0.01


def test_detect_period():
    t = np.arange(600)
    rng = np.random.default_rng(0)
    assert detect_period(np.sin(2 * np.pi * t / 24) * 3 + rng.normal(size=600))[0] == 24
    assert detect_period(rng.normal(size=600))[0] == 0
