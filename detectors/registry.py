"""Every detector by its name: what the config can ask for, and what a saved
state is restored with.

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
>>> type(restore("cusum", DETECTORS["cusum"]().state_dict())).__name__
'CUSUM'

Adding a detector is one module and one entry here: the per-model monitor
builds two-sample and multivariate detectors from these tables
(``monitor/engine/slots.py``) and restores every detector through
:func:`restore`.
"""

from __future__ import annotations

from typing import Any

from detectors.anomaly.half_space_trees import HSTDetector
from detectors.base import Detector
from detectors.drift.chi_square import ChiSquareDrift, GTestDrift
from detectors.drift.jensen_shannon import JensenShannonDrift
from detectors.drift.ks import KSDrift
from detectors.drift.mmd import MMDDriftOnline
from detectors.drift.pca_reconstruction import PCAReconstructionDrift
from detectors.drift.psi import PSIDrift
from detectors.drift.wasserstein import WassersteinDrift
from detectors.sequential.adwin import ADWIN
from detectors.sequential.cusum import CUSUM
from detectors.sequential.kswin import KSWIN
from detectors.sequential.page_hinkley import PageHinkley
from detectors.tamper.canary import CanaryProbes
from detectors.tamper.output_shape import ClassConcentration, ConfidenceBimodality, EntropyCollapse
from detectors.tamper.segment_suppression import SegmentSuppression
from detectors.tamper.trigger_activation import TriggerActivation

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

#: output-shape checks: built from their own first records, ``Cls(n_reference, window, alpha)``
SHAPE_DETECTORS: dict[str, type[Detector]] = {
    cls.name: cls for cls in (ClassConcentration, ConfidenceBimodality, EntropyCollapse)
}

#: every detector class by its ``name``, for :func:`restore`
DETECTORS: dict[str, type] = {
    **ALL_DETECTORS,
    **SHAPE_DETECTORS,
    **{cls.name: cls for cls in (HSTDetector, CUSUM, ADWIN, PageHinkley, KSWIN,
                                 TriggerActivation, SegmentSuppression, CanaryProbes)},
}


def build(name: str, reference, **kwargs: Any) -> Detector:
    """Construct the detector registered as ``name`` on ``reference``."""
    try:
        cls = ALL_DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; known: {sorted(ALL_DETECTORS)}") from None
    return cls(reference, **kwargs)


def restore(name: str, state: dict[str, Any]):
    """Rebuild the detector registered as ``name`` from its ``state_dict()``."""
    try:
        cls = DETECTORS[name]
    except KeyError:
        raise ValueError(f"state names unknown detector {name!r}") from None
    return cls.from_state(state)


def detector_from_state(state: dict[str, Any]) -> Detector:
    """Rebuild any registered detector from its ``state_dict()``."""
    name = state.get("name")
    if name not in ALL_DETECTORS:
        raise ValueError(f"state names unknown detector {name!r}")
    return ALL_DETECTORS[name].from_state(state)
