"""Tamper watch for one model: canary probes, trigger activation, segment
suppression and output shape (detectors in ``detectors/``), fed from its
ModelBatch. Model integrity (approved digests) spans models and lives in the
pipeline (:class:`monitor.engine.integrity.ArtifactIntegrity`).

Canary records (``tags.canary`` set) are replays of golden inputs, not traffic:
they go to the canary check only, and every other detector sees real traffic.

Every check here returns only what it found. The trigger and segment checks
look at everything on every update, so their findings are complete
(:attr:`TamperWatch.COMPLETE_KINDS`): an open alert not found again is a clean
decision (see ``AlertBook.observe``). Canary probes are judged only when
replayed; the monitor turns a replay that passes into a clean decision.
"""

from __future__ import annotations

import json
from typing import Any

from detectors.base import DriftResult
from detectors.calibration import per_test_alpha
from detectors.tamper.canary import CanaryProbes
from detectors.tamper.output_shape import ClassConcentration, ConfidenceBimodality, EntropyCollapse
from detectors.tamper.segment_rate import SegmentSuppression
from detectors.tamper.trigger import TriggerActivation
from monitor.wire.batch import ModelBatch
from monitor.config import PolicySettings, TamperSettings

SHAPE_DETECTORS = {
    "class_concentration": ClassConcentration,
    "confidence_bimodality": ConfidenceBimodality,
    "entropy_collapse": EntropyCollapse,
}


class TamperWatch:
    COMPLETE_KINDS = ("trigger_suspected", "segment_suppression")

    def __init__(self, settings: TamperSettings, policy: PolicySettings, expectations: dict | None = None):
        self.settings = settings
        c, t, s, o = settings.canary, settings.trigger, settings.segment_suppression, settings.output_shape
        self.canary = (
            CanaryProbes(c.learn_first, c.score_tolerance, expectations, c.max_probes) if c.enabled else None
        )
        self.trigger = (
            TriggerActivation(
                n_reference=t.n_reference, tail=t.tail, min_support=t.min_support, min_share=t.min_share,
                min_lift=t.min_lift, min_rise=t.min_rise, max_entropy_bits=t.max_entropy_bits,
                alpha=t.alpha, max_conditions=t.max_conditions, features=t.features,
            )
            if t.enabled
            else None
        )
        self.segments = (
            SegmentSuppression(
                segment_features=s.segment_features, classes=s.classes, n_reference=s.n_reference,
                min_support=s.min_support, min_expected=s.min_expected,
                min_relative_drop=s.min_relative_drop, alpha=s.alpha,
            )
            if s.enabled
            else None
        )
        # Output-shape windows share the model's false-alarm budget (ERT).
        alpha = per_test_alpha(policy.expected_run_length, o.window, max(len(o.detectors), 1))
        self.shape = {name: SHAPE_DETECTORS[name](o.n_reference, o.window, alpha) for name in o.detectors}

    def update(self, batch: ModelBatch, live: ModelBatch) -> list[tuple[str, str, str, DriftResult]]:
        """``(alert kind, subject, detector, result)`` for everything decided.

        ``batch`` is everything the model answered, canary replays included;
        ``live`` is its real traffic (the caller splits them once)."""
        out: list[tuple[str, str, str, DriftResult]] = []
        if self.canary is not None and live.n < batch.n:
            for result in self.canary.update(batch.canary, batch.predicted_class, batch.score, batch.request_ids):
                out.append(("canary_mismatch", result.extra.get("probe", ""), "canary", result))
        if live.n == 0:
            return out
        if self.trigger is not None:
            for result in self.trigger.update(
                numeric=live.numeric, categorical=live.categorical,
                predicted_class=live.predicted_class, request_ids=live.request_ids,
            ):
                out.append(("trigger_suspected", f"class={result.extra['target_class']}", "trigger", result))
        if self.segments is not None:
            for result in self.segments.update(
                categorical=live.categorical, predicted_class=live.predicted_class, request_ids=live.request_ids
            ):
                feature, value = result.extra["segment"]
                out.append(("segment_suppression", f"{feature}={value}", "segment_rate", result))
        columns = {
            "class_concentration": live.predicted_class,
            "confidence_bimodality": live.score,
            "entropy_collapse": live.probabilities,
        }
        for name, detector in self.shape.items():
            column = columns[name]
            if column is None or (name == "entropy_collapse" and not live.classes):
                continue
            result = detector.update(column)
            if result is not None:
                out.append(("output_shape", name, name, result))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "canary": None if self.canary is None else self.canary.state_dict(),
            "trigger": None if self.trigger is None else self.trigger.state_dict(),
            "segments": None if self.segments is None else self.segments.state_dict(),
            "shape": {name: d.state_dict() for name, d in self.shape.items()},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if state["canary"] is not None:
            self.canary = CanaryProbes.from_state(state["canary"])
        if state["trigger"] is not None:
            self.trigger = TriggerActivation.from_state(state["trigger"])
        if state["segments"] is not None:
            self.segments = SegmentSuppression.from_state(state["segments"])
        self.shape = {name: SHAPE_DETECTORS[name].from_state(s) for name, s in state["shape"].items()}


def load_expectations(path) -> dict:
    """Canary expectations file: JSON ``{probe_id: {"label", "score", "tolerance"}}``."""
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object of probe id -> expectation")
    return data
