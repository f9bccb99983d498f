"""Export: a Prometheus collector that reads the pipeline's snapshot on scrape.

Nothing on the hot path touches a metric object: after each batch the
pipeline publishes a read-only snapshot (:mod:`monitor.engine.snapshot`), and
this collector turns it into metric families when Prometheus asks (the
pattern of prometheus/client_python's custom collectors). A scrape never
waits for a batch. Names and labels follow the metrics contract in
docs/architecture.md.

Cardinality is bounded: at most ``metrics.max_exported_features`` features per
model are exported one by one (in the model's feature order); the rest are
summarised in ``infersight_drift_detected_features`` and
``infersight_features_unexported``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from monitor.engine.pipeline import Pipeline
from monitor.wire.schema import REJECT_REASONS

VERSION = "0.1.0"


@dataclass
class RuntimeStatus:
    """What the Kafka loop knows about its connection, for the collector."""

    kafka_connected: bool = False
    consumer_lag: dict[tuple[str, int], int] = field(default_factory=dict)
    kserve_unmatched: dict[str, int] = field(default_factory=dict)  # side -> KServe halves never joined
    checkpoint_bytes: int = 0  # state written to the state topic
    checkpoint_cpu_seconds: float = 0.0  # CPU spent writing it (state, encoding, sending)


class InfersightCollector(Collector):
    def __init__(self, pipeline: Pipeline, runtime: RuntimeStatus | None = None):
        self.pipeline = pipeline
        self.runtime = runtime or RuntimeStatus()

    def describe(self):
        # Returning nothing makes the registry skip calling collect() at
        # registration time (state may not be ready yet).
        return []

    def collect(self):
        pipeline = self.pipeline
        cap = pipeline.settings.metrics.max_exported_features
        labels3 = ["model", "detector", "feature"]
        records = CounterMetricFamily("infersight_records", "Valid records processed per model", labels=["model"])
        rejected = CounterMetricFamily(
            "infersight_records_rejected", "Records rejected (dead-lettered) by reason", labels=["reason"]
        )
        errors = CounterMetricFamily(
            "infersight_model_errors",
            "Records a model's detectors failed on (an internal error, logged with its traceback)",
            labels=["model"],
        )
        score = GaugeMetricFamily("infersight_drift_score", "Latest drift test statistic", labels=labels3)
        threshold = GaugeMetricFamily(
            "infersight_drift_threshold", "Critical value of the statistic at the calibrated alpha", labels=labels3
        )
        p_value = GaugeMetricFamily("infersight_drift_p_value", "p-value of the latest drift test", labels=labels3)
        detected = GaugeMetricFamily(
            "infersight_drift_detected", "1 if the latest window's test detected drift", labels=labels3
        )
        seen = GaugeMetricFamily(
            "infersight_detector_records", "Values consumed by the detector since it was (re)set", labels=labels3
        )
        detected_features = GaugeMetricFamily(
            "infersight_drift_detected_features",
            "Features of the model whose latest test detected drift (all features, exported or not)",
            labels=["model", "detector"],
        )
        unexported = GaugeMetricFamily(
            "infersight_features_unexported",
            "Monitored features not exported one by one (over metrics.max_exported_features)",
            labels=["model"],
        )
        ignored = GaugeMetricFamily(
            "infersight_features_ignored",
            "Feature names seen but not monitored (absent from the reference or over the per-model cap)",
            labels=["model"],
        )
        ratio = GaugeMetricFamily(
            "infersight_prediction_ratio", "Share of each predicted class over the last window", labels=["model", "class"]
        )
        ready = GaugeMetricFamily(
            "infersight_reference_ready", "1 once the model's reference window is learned", labels=["model"]
        )
        last_ts = GaugeMetricFamily(
            "infersight_last_record_timestamp_seconds", "Event time of the newest record per model", labels=["model"]
        )
        performance = GaugeMetricFamily(
            "infersight_model_performance",
            "Model quality from delayed labels over the last window of labelled records",
            labels=["model", "metric"],
        )
        labels_joined = CounterMetricFamily(
            "infersight_labels",
            "Label messages by outcome: matched a remembered prediction, unmatched, or prediction forgotten first",
            labels=["model", "outcome"],
        )
        anomaly = GaugeMetricFamily(
            "infersight_anomaly_ratio",
            "Share of the last window's records that Half-Space Trees scored anomalous",
            labels=["model"],
        )
        artifact = GaugeMetricFamily(
            "infersight_model_artifact_info",
            "Model artifacts serving now (in the model's last window of records), whether each is approved, "
            "and the fingerprint of the key that signed its approval (none: unsigned)",
            labels=["model", "digest", "approved", "signer"],
        )
        active = GaugeMetricFamily(
            "infersight_alert_active", "1 while an alert of this kind is firing", labels=["model", "alert", "severity"]
        )
        snap = pipeline.snapshot()
        for model, count in snap.records_total.items():
            records.add_metric([model], count)
        for reason in REJECT_REASONS:
            rejected.add_metric([reason], snap.rejected_total.get(reason, 0))
        for model in snap.models.keys() | snap.model_errors.keys():
            # from 0, so that increase() sees the first error
            errors.add_metric([model], snap.model_errors.get(model, 0))
        for model, view in snap.models.items():
            ready.add_metric([model], float(view.reference_ready))
            ignored.add_metric([model], view.ignored_features)
            if view.last_event_time is not None:
                last_ts.add_metric([model], view.last_event_time)
            if view.anomaly_ratio is not None:
                anomaly.add_metric([model], view.anomaly_ratio)
            for metric, value in view.performance.items():
                performance.add_metric([model, metric], value)
            for outcome, count in view.labels.items():
                labels_joined.add_metric([model, outcome], count)
            for cls, share in view.prediction_ratios.items():
                ratio.add_metric([model, cls], share)
            features = set(view.features)
            exported = set(view.features[:cap])
            unexported.add_metric([model], max(0, len(view.features) - len(exported)))
            per_detector: dict[str, int] = {}
            for result in view.results:
                if result.subject in features:  # input features only (not latency_ms)
                    per_detector[result.check] = per_detector.get(result.check, 0) + int(result.detected)
                if result.subject and result.subject not in exported and result.subject in features:
                    continue
                labels = [model, result.check, result.subject]
                score.add_metric(labels, result.statistic)
                threshold.add_metric(labels, result.threshold)
                detected.add_metric(labels, float(result.detected))
                seen.add_metric(labels, result.n_seen)
                if result.p_value is not None:
                    p_value.add_metric(labels, result.p_value)
            for detector, count in per_detector.items():
                detected_features.add_metric([model, detector], count)
        for model, digest, approved, signer in snap.artifacts:
            artifact.add_metric([model, digest, "true" if approved else "false", signer], 1)
        approvals_rejected = CounterMetricFamily(
            "infersight_approvals_rejected",
            "Registry approvals refused (unsigned, untrusted key, bad signature, ...) by reason",
            labels=["reason"])
        for reason, count in snap.approvals_rejected.items():
            approvals_rejected.add_metric([reason], count)
        rejection_open = GaugeMetricFamily(
            "infersight_approval_rejected_info",
            "Refused registry approvals not yet superseded by a valid one, per model and claimed digest",
            labels=["model", "digest", "reason"])
        for model, digest, reason in snap.open_rejections:
            rejection_open.add_metric([model, digest, reason], 1)
        for (model, alert, severity), value in snap.alerts_firing.items():
            active.add_metric([model, alert, severity], value)
        buckets = list(snap.batch_duration_buckets)
        duration_sum = snap.batch_duration_sum
        unknown = CounterMetricFamily(
            "infersight_labels_unknown_model",
            "Label messages for models this daemon does not monitor (wrong model_id, or another daemon's partition)",
        )
        unknown.add_metric([], snap.labels_unknown_model)
        yield unknown
        yield from (records, rejected, errors, score, threshold, p_value, detected, seen, detected_features)
        yield from (unexported, ignored, ratio, ready, last_ts, performance, labels_joined, anomaly, artifact, active)
        yield from (approvals_rejected, rejection_open)
        yield HistogramMetricFamily(
            "infersight_batch_duration_seconds",
            "Time to decode, route, monitor and alert one poll batch",
            buckets=buckets,
            sum_value=duration_sum,
        )
        connected = GaugeMetricFamily("infersight_kafka_connected", "1 while the Kafka consumer is connected")
        connected.add_metric([], float(self.runtime.kafka_connected))
        yield connected
        lag = GaugeMetricFamily(
            "infersight_consumer_lag", "Records behind the log end, per assigned partition", labels=["topic", "partition"]
        )
        for (topic, partition), value in sorted(self.runtime.consumer_lag.items()):
            lag.add_metric([topic, str(partition)], value)
        yield lag
        if self.runtime.kserve_unmatched:
            unmatched = CounterMetricFamily(
                "infersight_kserve_unmatched",
                "KServe logger requests or responses never joined with their other half (window or bound passed)",
                labels=["side"])
            for side, count in sorted(self.runtime.kserve_unmatched.items()):
                unmatched.add_metric([side], count)
            yield unmatched
        written = CounterMetricFamily("infersight_checkpoint_bytes", "Bytes of model state written to the state topic")
        written.add_metric([], self.runtime.checkpoint_bytes)
        yield written
        spent = CounterMetricFamily("infersight_checkpoint_cpu_seconds",
                                    "CPU seconds spent writing checkpoints (state, encoding, sending)")
        spent.add_metric([], self.runtime.checkpoint_cpu_seconds)
        yield spent
        info = GaugeMetricFamily("infersight_build_info", "infersight version", labels=["version"])
        info.add_metric([VERSION], 1)
        yield info
