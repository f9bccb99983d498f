"""Multivariate detectors: PCA reconstruction error and online MMD.

Statistical bounds state their false-failure rate for a random seed; seeds
are fixed, so the tests are deterministic.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from detectors.drift.mmd import MMDDriftOnline, quadratic_form_isf, quadratic_form_logsf
from detectors.drift.pca_reconstruction import PCAReconstructionDrift
from detectors.registry import MULTIVARIATE_DETECTORS, build, detector_from_state

D = 6


def correlated(rng, n, rho=0.7, shift=None):
    cov = rho * np.ones((D, D)) + (1 - rho) * np.eye(D)
    x = rng.multivariate_normal(np.zeros(D), cov, size=n)
    if shift is not None:
        x += shift
    return x


def key(r):
    return (r.statistic, r.threshold, r.detected, r.change_index, r.n_seen)


# -------------------------------------------------------- PCA reconstruction


def test_pca_detects_broken_correlation_not_visible_in_marginals():
    rng = np.random.default_rng(40)
    det = PCAReconstructionDrift(correlated(rng, 10000), window_size=1000, alpha=1e-6)
    quiet = det.update_all(correlated(rng, 10000))
    assert not any(r.detected for r in quiet)  # 10 tests at 1e-6
    r = det.update(correlated(rng, 1000, rho=0.0))  # same N(0,1) marginals
    assert r.detected and r.extra["window_error_mean"] > r.extra["reference_error_mean"]
    assert "rose" in r.detail and len(r.examples) == 5
    # Tighter correlation: error falls, also detected (two-sided).
    r = det.update(correlated(rng, 1000, rho=0.95))
    assert r.detected and "fell" in r.detail


def test_pca_missing_cells_and_bad_shapes():
    rng = np.random.default_rng(41)
    det = PCAReconstructionDrift(correlated(rng, 2000), window_size=100)
    x = correlated(rng, 150)
    x[::7, 2] = np.nan
    x[5] = np.nan  # an empty row is dropped
    x[6, 0] = np.inf
    r = det.update(x)
    assert r.n_seen == 101 and det.n_missing == 1
    with pytest.raises(ValueError):
        det.update(np.zeros((3, D + 1)))
    with pytest.raises(ValueError):
        PCAReconstructionDrift(np.zeros((5, 3)))


def test_pca_state_round_trip_and_split():
    rng = np.random.default_rng(42)
    det = PCAReconstructionDrift(correlated(rng, 3000), window_size=200, alpha=1e-4, sliding=True)
    det.update(correlated(rng, 500))
    state = json.loads(json.dumps(det.state_dict()))
    clone = PCAReconstructionDrift.from_state(state)
    data = np.vstack([correlated(rng, 700), correlated(rng, 700, rho=0.0)])
    assert det.update_all(data) == clone.update_all(data)
    # Split batches: same decisions; statistics equal up to BLAS rounding.
    a = PCAReconstructionDrift.from_state(state)
    b = PCAReconstructionDrift.from_state(state)
    want = a.update_all(data)
    got = [r for piece in np.array_split(data, [13, 200, 201, 999]) for r in b.update_all(piece)]
    assert [(r.detected, r.change_index, r.n_seen) for r in got] == [
        (r.detected, r.change_index, r.n_seen) for r in want
    ]
    np.testing.assert_allclose([r.statistic for r in got], [r.statistic for r in want], rtol=1e-9)


@pytest.mark.parametrize("alpha", [0.01, 0.001])
def test_pca_false_alarm_rate(alpha):
    # 10 references x 1000 windows of 500 rows; 5 sd binomial bound (false
    # failure < 1e-6 for independent windows; 10 references average out the
    # shared-reference variance).
    rng = np.random.default_rng(43)
    total = 0
    for i in range(10):
        det = PCAReconstructionDrift(correlated(rng, 20000), window_size=500, alpha=alpha, seed=i)
        total += det.update(correlated(rng, 500 * 1000)).extra["detections_in_batch"]
    sd = np.sqrt(10000 * alpha * (1 - alpha))
    print(f"pca alpha={alpha}: {total}/10000")
    assert abs(total - 10000 * alpha) <= 5 * sd


# ------------------------------------------------------------------- MMD


def test_quadratic_form_tail_matches_exact_and_simulation():
    # Equal weights: lam * chi2(k), exact in scipy. The saddlepoint is
    # slightly conservative (true tail below target): within 8% for one
    # weight (its worst case), 1.5% for 5, far closer for the ~100 weights of
    # an MMD feature map.
    for k, lam, tol in [(1, 0.5, 0.08), (5, 2.0, 0.015), (40, 0.1, 0.001)]:
        w = np.full(k, lam)
        for p in [1e-2, 1e-5, 1e-9, 1e-12]:
            ratio = stats.chi2.sf(quadratic_form_isf(p, w) / lam, k) / p
            assert 1 - tol <= ratio <= 1.0
    # Unequal weights vs simulation at 1e-3: 2e6 draws, expected 2000
    # exceedances, 5 sd band (false failure < 1e-6) plus 3% approximation.
    rng = np.random.default_rng(44)
    lam = rng.exponential(size=12)
    h = quadratic_form_isf(1e-3, lam)
    q = (rng.standard_normal((2_000_000, 12)) ** 2 @ lam)
    assert abs((q > h).sum() - 2000) <= 5 * np.sqrt(2000) + 60
    assert quadratic_form_logsf(lam.sum() * 0.5, lam) == 0.0


@pytest.mark.parametrize("calibration", ["gaussian", "bootstrap"])
def test_mmd_per_step_rate_and_run_length(calibration):
    # ERT 2000 on 600,000 stationary rows: the guarantee is at most
    # N / ERT = 300 alarm steps in expectation; with restarts after each alarm
    # there are fewer. Bound 300 + 5 sd (Poisson; false failure < 1e-6).
    rng = np.random.default_rng(45)
    det = MMDDriftOnline(
        rng.normal(size=(20000, D)), window_size=100, ert=2000, seed=2,
        calibration=calibration, n_bootstraps=40000,
    )
    alarms = 0
    for _ in range(6):
        r = det.update(rng.normal(size=(100_000, D)))
        if r.detected:
            alarms += r.extra["alarms_in_batch"]
    print(f"mmd {calibration}: {alarms} alarm episodes in 600k rows (ERT 2000)")
    assert alarms <= 300 + 5 * np.sqrt(300)
    assert det.n_seen == 600_000


def test_mmd_detects_mean_and_correlation_shifts():
    rng = np.random.default_rng(46)
    det = MMDDriftOnline(correlated(rng, 20000), window_size=200, ert=1e7, seed=3)
    quiet = det.update(correlated(rng, 20000))
    # 20,000 steps at 1e-7 per step: a false alarm has probability <= 2e-3.
    assert not quiet.detected and quiet.extra["alarms_in_batch"] == 0
    state = det.state_dict()
    # One feature moves 0.6 sd: an alarm within 1000 rows, naming it.
    shift = np.zeros(D)
    shift[4] = 0.6
    r = det.update(correlated(rng, 1000, shift=shift))
    assert r.detected and r.extra["top_features"][0] == 4
    assert r.change_index >= 20000 and len(r.examples) == 5
    assert "feature 4 (+0.6" in r.detail
    # Correlation gone, marginals unchanged: repeated alarms (restart after
    # each, so at most 2000 / 200 = 10).
    det = MMDDriftOnline.from_state(state)
    r = det.update(correlated(rng, 2000, rho=0.0))
    assert r.detected and r.extra["alarms_in_batch"] >= 5


def test_mmd_state_round_trip_and_split():
    rng = np.random.default_rng(47)
    det = MMDDriftOnline(rng.normal(size=(3000, D)), window_size=50, ert=500, seed=4)
    det.update(rng.normal(size=(120, D)))
    state = json.loads(json.dumps(det.state_dict()))
    clone = MMDDriftOnline.from_state(state)
    for n, s in [(30, 0.0), (400, 2.0), (0, 0.0), (77, 0.0)]:
        x = rng.normal(loc=s, size=(n, D))
        assert det.update(x) == clone.update(x)
    assert det.state_dict() == clone.state_dict()
    # Splitting a batch changes nothing but float rounding of running sums.
    a, b = MMDDriftOnline.from_state(state), MMDDriftOnline.from_state(state)
    x = np.vstack([rng.normal(size=(300, D)), rng.normal(loc=1.0, size=(300, D))])
    whole = a.update(x)
    parts = [b.update(p) for p in np.array_split(x, [1, 49, 50, 333])]
    last = [p for p in parts if p is not None][-1]
    assert whole.detected and last.detected
    assert (whole.change_index, whole.n_seen) == (last.change_index, last.n_seen)
    assert whole.statistic == pytest.approx(last.statistic, rel=1e-9)
    assert a._since_restart == b._since_restart


def test_mmd_missing_and_warmup():
    rng = np.random.default_rng(48)
    det = MMDDriftOnline(rng.normal(size=(1000, D)), window_size=100, ert=1000)
    assert det.update(rng.normal(size=(99, D))) is None
    x = rng.normal(size=(1, D))
    x[0, 2] = np.nan
    r = det.update(x)
    assert r is not None and r.n_seen == 100 and r.extra["missing_total"] == 1
    assert det.update(np.empty((0, D))) is None


def test_registry_multivariate():
    rng = np.random.default_rng(49)
    assert set(MULTIVARIATE_DETECTORS) == {"mmd", "pca_reconstruction"}
    for name, kw in [("mmd", {"ert": 100.0, "window_size": 20}), ("pca_reconstruction", {})]:
        det = build(name, rng.normal(size=(500, D)), **kw)
        again = detector_from_state(json.loads(json.dumps(det.state_dict())))
        assert type(again) is type(det)
