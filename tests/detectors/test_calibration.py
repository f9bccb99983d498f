"""per_test_alpha / benjamini_hochberg, and the end-to-end false-alarm budget:
a model with 32 stationary features watched for 10 million records."""

from __future__ import annotations

import time

import numpy as np
import pytest

from detectors.calibration import benjamini_hochberg, per_test_alpha
from detectors.drift.ks import KSDrift


def test_per_test_alpha_bonferroni_and_sidak():
    assert per_test_alpha(1e8, 1000, 32) == pytest.approx(1000 / 1e8 / 32)
    assert per_test_alpha(1e6, 250, 1, "none") == pytest.approx(2.5e-4)
    s = per_test_alpha(1e8, 1000, 32, "sidak")
    assert 1 - (1 - s) ** 32 == pytest.approx(1e-5, rel=1e-9)
    assert s >= per_test_alpha(1e8, 1000, 32)
    with pytest.raises(ValueError):
        per_test_alpha(500, 1000, 4)
    with pytest.raises(ValueError):
        per_test_alpha(1e6, 1000, 4, "holm")


def test_benjamini_hochberg_against_definition():
    rng = np.random.default_rng(30)
    for _ in range(200):
        m = int(rng.integers(1, 40))
        p = np.where(rng.random(m) < 0.3, rng.random(m) * 1e-3, rng.random(m))
        q = float(rng.choice([0.01, 0.05, 0.2]))
        got = benjamini_hochberg(p, q)
        srt = np.sort(p)
        ok = np.flatnonzero(srt <= q * np.arange(1, m + 1) / m)
        cut = srt[ok[-1]] if len(ok) else -1.0
        assert got.tolist() == (p <= cut).tolist()
    assert benjamini_hochberg([np.nan, 0.001], 0.05).tolist() == [False, True]
    assert benjamini_hochberg([], 0.05).tolist() == []


def test_benjamini_hochberg_fdr_under_global_null_is_fwer():
    # Global null, independent uniform p-values: P(any rejection) <= q.
    # 20,000 families of 16 at q = 0.05: expect <= 1000 families with a
    # rejection; bound 1000 + 5 sd (false failure < 1e-6).
    rng = np.random.default_rng(31)
    p = rng.random((20000, 16))
    srt = np.sort(p, axis=1)
    any_rej = (srt <= 0.05 * np.arange(1, 17) / 16).any(axis=1)
    assert any_rej.sum() <= 1000 + 5 * np.sqrt(20000 * 0.05 * 0.95)
    # spot-check the function on some rows
    for row in p[:50]:
        assert benjamini_hochberg(row, 0.05).any() == ((np.sort(row) <= 0.05 * np.arange(1, 17) / 16).any())


def test_fleet_of_features_meets_run_length_target():
    # 32 stationary features x 10,000 tumbling windows of 1,000 values (10
    # million records per feature) with alpha from a target of one false
    # alarm per 1e8 records: expected false alarms 10e6 / 1e8 = 0.1 (over
    # reference draws). P(Poisson(0.1) >= 2) = 0.47%: the false-failure rate.
    # References of 20,000 values (20x the window), as the docs recommend.
    alpha = per_test_alpha(expected_run_length=1e8, window_size=1000, n_tests=32)
    rng = np.random.default_rng(32)
    t0 = time.perf_counter()
    alarms = 0
    for feature in range(32):
        det = KSDrift(rng.random(20000), window_size=1000, alpha=alpha)
        for _ in range(40):
            r = det.update(rng.random(250_000))
            alarms += r.extra["detections_in_batch"]
        assert det.n_seen == 10_000_000
    elapsed = time.perf_counter() - t0
    print(f"32 x 10,000 KS windows: {alarms} alarms in {elapsed:.1f} s "
          f"({32e7 / elapsed / 1e6:.1f} M values/s), alpha={alpha:.3g}")
    assert alarms <= 1
