"""What a scrape sees: a read-only picture of the pipeline after a batch.

The pipeline publishes a :class:`PipelineSnapshot` at the end of every batch
(and after a restore or a rebalance), rebuilding the :class:`ModelView` of only
the models that batch touched. The Prometheus collector
(:mod:`monitor.export.metrics`) reads nothing else: it never takes the
pipeline's lock, never waits for a batch, and never reaches into a detector.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitor.engine.model_monitor import ModelMonitor
    from monitor.engine.pipeline import Pipeline


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The latest decision of one detector slot."""

    check: str
    subject: str
    statistic: float
    threshold: float
    detected: bool
    n_seen: int
    p_value: float | None


@dataclass(frozen=True, slots=True)
class ModelView:
    model: str
    reference_ready: bool
    features: tuple[str, ...]  # monitored features, in the model's order
    ignored_features: int
    last_event_time: float | None
    anomaly_ratio: float | None
    performance: dict[str, float]  # metric -> value (accuracy, reference_accuracy)
    labels: dict[str, int]  # outcome -> count (matched, unmatched, forgotten); empty without labels
    prediction_ratios: dict[str, float]
    results: tuple[CheckResult, ...]


def model_view(pipeline: Pipeline, model_id: str, monitor: ModelMonitor) -> ModelView:
    performance, labels = {}, {}
    tracker = monitor.performance
    if tracker is not None:
        if (accuracy := tracker.accuracy()) is not None:
            performance["accuracy"] = accuracy
        if tracker.reference_accuracy is not None:
            performance["reference_accuracy"] = tracker.reference_accuracy
        labels = {"matched": tracker.matched, "unmatched": tracker.unmatched, "forgotten": tracker.forgotten}
    results = tuple(
        CheckResult(check, subject, float(r.statistic), float(r.threshold), bool(r.detected), int(r.n_seen),
                    None if r.p_value is None else float(r.p_value))
        for (check, subject), r in monitor.latest.items()
    )
    return ModelView(
        model=model_id,
        reference_ready=monitor.reference_ready,
        features=tuple(monitor.kinds),
        ignored_features=len(monitor.ignored_features),
        last_event_time=monitor.last_event_time,
        anomaly_ratio=monitor.anomaly_ratio(),
        performance=performance,
        labels=labels,
        prediction_ratios=monitor.prediction_ratios(),
        results=results,
    )


@dataclass(frozen=True, slots=True)
class PipelineSnapshot:
    models: dict[str, ModelView] = field(default_factory=dict)
    records_total: dict[str, int] = field(default_factory=dict)
    rejected_total: dict[str, int] = field(default_factory=dict)
    model_errors: dict[str, int] = field(default_factory=dict)
    labels_unknown_model: int = 0
    artifacts: tuple[tuple[str, str, bool, str], ...] = ()  # (model, digest, approved, signer) serving now
    approvals_rejected: dict[str, int] = field(default_factory=dict)  # reason -> refused registry approvals
    open_rejections: tuple[tuple[str, str, str], ...] = ()  # (model, claimed digest, reason) not yet superseded
    alerts_firing: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (model, alert, severity)
    batch_duration_buckets: tuple[tuple[str, int], ...] = ()
    batch_duration_sum: float = 0.0

    @classmethod
    def build(cls, pipeline: Pipeline, views: dict[str, ModelView]) -> PipelineSnapshot:
        return cls(
            models=views,
            records_total=dict(pipeline.records_total),
            rejected_total=dict(pipeline.rejected_total),
            model_errors=dict(pipeline.model_errors),
            labels_unknown_model=pipeline.labels_unknown_model,
            artifacts=tuple((model, digest, approved, pipeline.integrity.signer(model, digest))
                            for model, digest, approved in pipeline.serving_artifacts()),
            approvals_rejected=pipeline.integrity.approvals_rejected_total(),
            open_rejections=tuple((r.model, r.digest, r.reason) for r in pipeline.integrity.open_rejections()),
            alerts_firing=pipeline.alerts.firing(),
            batch_duration_buckets=tuple(pipeline.batch_duration.cumulative()),
            batch_duration_sum=pipeline.batch_duration.total,
        )
