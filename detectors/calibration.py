"""Turn a user-facing false-alarm target into per-test significance levels.

The user says: "for this model, I accept one false alarm per
``expected_run_length`` records, all its features together". A model with
``n_tests`` windowed tests (one per feature and detector) of ``window_size``
values each runs, per ``window_size`` records, one *family* of ``n_tests``
tests. :func:`per_test_alpha` splits the family's allowance
``window_size / expected_run_length`` among the tests.

The guarantee (Bonferroni, the default)
---------------------------------------
If no feature drifts and each test's p-value is valid (``P(p <= a) <= a`` for
every ``a``; see each detector's docstring for how exact that is), then for
every window the probability that *any* of the ``n_tests`` tests alarms is at
most ``n_tests * alpha = window_size / expected_run_length`` (union bound, any
dependence between features). Summing over windows: the expected number of
false-alarm windows among any ``N`` records is at most
``N / expected_run_length``.

What it does not say:

* It is an expectation over the reference sample too. For one fixed reference,
  all windows share its sampling noise and the realised rate can be higher or
  lower; with ``n_ref >= 10 * window_size`` the difference is small, with
  ``n_ref ~ window_size`` it can be 10x at small ``alpha`` (measured in the
  tests for PSI). Use large references.
* "Expected records between false alarms" is read as a rate. With tumbling
  windows (independent given the reference) the number of windows until the
  first false alarm is geometric, so the mean run length is at least
  ``expected_run_length``. Sliding windows test every ``step`` values: pass
  the step (``window_size // 4``) as ``window_size`` here; their alarms come
  in clusters, so the run length is longer than the rate suggests.

Alternatives
------------
``correction="sidak"``: ``1 - (1 - f) ** (1 / n_tests)``, exact for
independent tests, barely larger than Bonferroni. ``correction="none"``:
the whole allowance to each test (use only with ``n_tests == 1``).

:func:`benjamini_hochberg` controls the false discovery rate of one window's
family instead: among the features it flags, the expected fraction that did
not drift is at most ``q`` (independent or positively dependent p-values).
When nothing drifted, every flag is false, so FDR equals the family-wise rate
and BH at ``q = window_size / expected_run_length`` keeps the same guarantee
as Bonferroni; when several features drift together it flags more of them.
It needs all p-values of a window at once, so it is applied by the caller,
not inside a detector.
"""

from __future__ import annotations

import numpy as np


def per_test_alpha(
    expected_run_length: float,
    window_size: int,
    n_tests: int,
    correction: str = "bonferroni",
) -> float:
    """Per-test ``alpha`` so that a family of ``n_tests`` tests run every
    ``window_size`` records yields at most one false alarm per
    ``expected_run_length`` records in expectation (see module docstring).

    >>> per_test_alpha(1e8, 1000, 32)
    3.125e-07
    >>> round(per_test_alpha(1e4, 1000, 2, "sidak"), 6)
    0.051317
    """
    erl, w, m = float(expected_run_length), int(window_size), int(n_tests)
    if w < 1 or m < 1:
        raise ValueError("window_size and n_tests must be >= 1")
    family = w / erl
    if not 0.0 < family < 1.0:
        raise ValueError(
            f"expected_run_length={erl:g} must exceed window_size={w}: "
            "a test every window cannot be rarer than one false alarm per window"
        )
    if correction == "bonferroni":
        return family / m
    if correction == "sidak":
        # log1p/expm1: exact for tiny family rates where (1 - f) ** (1/m) rounds.
        return float(-np.expm1(np.log1p(-family) / m))
    if correction == "none":
        return family
    raise ValueError(f"unknown correction {correction!r} (bonferroni, sidak, none)")


def benjamini_hochberg(p_values, q: float) -> np.ndarray:
    """Boolean mask of hypotheses rejected by the Benjamini-Hochberg procedure.

    Rejects the ``k`` smallest p-values, ``k`` the largest index with
    ``p_(k) <= k * q / m``. Guarantee: FDR <= ``q * m0 / m`` <= ``q`` when the
    p-values of true nulls are independent of each other and of the rest, or
    positively dependent (PRDS). NaN p-values are never rejected and do not
    count in ``m``.

    >>> benjamini_hochberg([0.001, 0.02, 0.03, 0.5], q=0.05).tolist()
    [True, True, True, False]
    >>> benjamini_hochberg([0.001, 0.02, 0.03, 0.5], q=0.01).tolist()
    [True, False, False, False]
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.zeros(p.shape, dtype=bool)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return out
    pv = p[ok]
    order = np.argsort(pv, kind="stable")
    below = pv[order] <= q * np.arange(1, m + 1) / m
    if below.any():
        k = int(np.flatnonzero(below)[-1]) + 1
        rejected = np.zeros(m, dtype=bool)
        rejected[order[:k]] = True
        out[ok] = rejected
    return out
