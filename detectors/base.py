"""The one interface every detector shares.

A detector is built from plain parameters (and, for two-sample tests, a reference
sample), takes a whole batch of values as a numpy array in ``update`` and returns
a :class:`DriftResult` once it has something to say (``None`` while a window is
still filling or the detector is warming up). Its state is plain data: ``state_dict``
returns only JSON-serialisable values (numbers, strings, lists, dicts) and
``from_state(state_dict())`` rebuilds a detector that behaves identically.

Detectors know nothing of Kafka, Prometheus, clocks or files: the monitor feeds
them columns and labels their results with the model and feature.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np


@dataclass(frozen=True, slots=True)
class DriftResult:
    """What a detector concluded about the data it has seen so far.

    ``statistic`` and ``threshold`` are on the same scale and ``detected`` is
    ``statistic > threshold`` (for p-value tests the statistic is the test
    statistic and ``p_value`` is reported next to the corrected ``alpha``).
    ``n_seen`` counts every value the detector has consumed; ``change_index``
    is the position in that stream where the change is believed to start
    (window start for window tests, the estimated change point for sequential
    detectors). ``examples`` are positions in the *last batch passed to
    update* of values that best show the change, so the caller can map them
    to request ids. ``detail`` is one human sentence.
    """

    statistic: float
    threshold: float
    detected: bool
    n_seen: int
    p_value: float | None = None
    change_index: int | None = None
    examples: tuple[int, ...] = ()
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Frozen(dict):
    """A part of a detector's state that will not change any more (a fitted
    reference summary). A detector returns the same object from every
    ``state_dict`` call, so a checkpoint writer can store it once and refer
    to it afterwards (monitor/engine/state.py). ``blob_name`` is set on parts
    read back from such a store."""

    blob_name: str | None = None


def shift_examples(x: np.ndarray, batch_start: int, change: int, detected_at: int, up: bool, k: int = 5) -> tuple[int, ...]:
    """Positions in the batch ``x`` (its first value is stream position
    ``batch_start``) of the ``k`` values that best show a mean shift: from
    the change point (or the batch start) to the detection, the largest for
    an increase, the smallest for a decrease; in stream order."""
    lo = max(change, batch_start) - batch_start
    seg = x[lo : detected_at - batch_start + 1]
    order = np.argsort(-seg if up else seg, kind="stable")[:k] + lo
    return tuple(sorted(int(t) for t in order))


class Detector(abc.ABC):
    """Base class: one detector watches one stream (a feature column, the
    predicted class, the score, or a feature matrix for multivariate ones)."""

    #: short stable name used in metrics labels (``detector="ks"``)
    name: ClassVar[str]

    @abc.abstractmethod
    def update(self, values: np.ndarray) -> DriftResult | None:
        """Consume a batch (1-d for univariate detectors, 2-d rows x features
        for multivariate ones) and return the latest decision, if any."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable state, enough to resume exactly."""

    @classmethod
    @abc.abstractmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        """Rebuild a detector from :meth:`state_dict` output."""
