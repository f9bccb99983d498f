"""Names the monitor's config can use for two-sample and multivariate detectors.

Every class in :data:`NUMERIC_DETECTORS` and :data:`CATEGORICAL_DETECTORS` is
built the same way::

    Cls(reference, window_size=1000, alpha=1e-6, *, sliding=False, seed=0, **options)

with a 1-d reference (float64 with NaN for numeric, object array of str with
None for categorical). Multivariate ones take a 2-d ``(rows, features)``
reference; :class:`detectors.drift.mmd.MMDDriftOnline` is calibrated by expected run
time instead of ``alpha`` (see its docstring).

>>> sorted(NUMERIC_DETECTORS), sorted(CATEGORICAL_DETECTORS)
(['js', 'ks', 'psi', 'wasserstein'], ['chi2', 'gtest'])
>>> import numpy as np
>>> det = build("ks", np.arange(100.0), window_size=50)
>>> type(detector_from_state(det.state_dict())).__name__
'KSDrift'
"""

from __future__ import annotations

from typing import Any

from detectors.base import Detector
from detectors.drift.chi_square import ChiSquareDrift, GTestDrift
from detectors.drift.jensen_shannon import JensenShannonDrift
from detectors.drift.ks import KSDrift
from detectors.drift.mmd import MMDDriftOnline
from detectors.drift.pca_reconstruction import PCAReconstructionDrift
from detectors.drift.psi import PSIDrift
from detectors.drift.wasserstein import WassersteinDrift

NUMERIC_DETECTORS: dict[str, type[Detector]] = {
    "ks": KSDrift,
    "psi": PSIDrift,
    "js": JensenShannonDrift,
    "wasserstein": WassersteinDrift,
}

CATEGORICAL_DETECTORS: dict[str, type[Detector]] = {
    "chi2": ChiSquareDrift,
    "gtest": GTestDrift,
}

MULTIVARIATE_DETECTORS: dict[str, type[Detector]] = {
    "mmd": MMDDriftOnline,
    "pca_reconstruction": PCAReconstructionDrift,
}

ALL_DETECTORS: dict[str, type[Detector]] = {
    **NUMERIC_DETECTORS,
    **CATEGORICAL_DETECTORS,
    **MULTIVARIATE_DETECTORS,
}


def build(name: str, reference, **kwargs: Any) -> Detector:
    """Construct the detector registered as ``name`` on ``reference``."""
    try:
        cls = ALL_DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; known: {sorted(ALL_DETECTORS)}") from None
    return cls(reference, **kwargs)


def detector_from_state(state: dict[str, Any]) -> Detector:
    """Rebuild any registered detector from its ``state_dict()``."""
    name = state.get("name")
    if name not in ALL_DETECTORS:
        raise ValueError(f"state names unknown detector {name!r}")
    return ALL_DETECTORS[name].from_state(state)
