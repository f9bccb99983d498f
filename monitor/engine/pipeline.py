"""The pipeline: decode -> route -> monitor -> alert, one call per poll batch.

Shared by the Kafka daemon (``infersight run``) and the file replay
(``infersight replay``), so what a backtest shows is what production does.
Sources and sinks (Kafka, files) stay outside: ``process`` takes raw bytes and
returns what to dead-letter and which alert events to publish.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from detectors.base import DriftResult
from monitor.engine.alerts import AlertBook, AlertEvent
from monitor.config import Settings
from monitor.engine.approvals import Decision, rejection_findings
from monitor.engine.integrity import ArtifactIntegrity
from monitor.engine.model_monitor import Finding, ModelMonitor
from monitor.wire.route import build_model_batch, group_by_model
from monitor.wire.schema import Reject, decode_batch, decode_label_batch
from monitor.engine.tamper import TamperWatch, load_expectations

log = logging.getLogger("infersight.pipeline")


@dataclass(slots=True)
class BatchOutcome:
    n_records: int
    n_valid: int
    rejects: list[Reject] = field(default_factory=list)
    label_rejects: list[Reject] = field(default_factory=list)
    events: list[AlertEvent] = field(default_factory=list)
    seconds: float = 0.0


class Pipeline:
    """All per-model state of one daemon; thread-safe against scrapes."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.monitors: dict[str, ModelMonitor] = {}
        self.alerts = AlertBook(
            fire_after=settings.alerts.fire_after_windows,
            resolve_after=settings.alerts.resolve_after_windows,
            max_examples=settings.alerts.example_request_ids,
        )
        integrity = settings.integrity
        self.integrity = ArtifactIntegrity(
            integrity.approved,
            max_digests_per_model=integrity.max_digests_per_model,
            max_models=settings.limits.max_models,
            tofu_severity=integrity.tofu_severity,
            require_signed=integrity.require_signed_approvals,
        )
        expectations_file = settings.tamper.canary.expectations_file
        self.canary_expectations = load_expectations(expectations_file) if expectations_file else None
        self.records_total: Counter[str] = Counter()  # per model
        self.rejected_total: Counter[str] = Counter()  # per reason
        self.labels_unknown_model = 0  # labels for models this daemon has not seen
        self.model_errors: Counter[str] = Counter()  # records a model's detectors failed on
        # model -> digest -> the model's record count when the digest was last served
        self.digest_last_seen: dict[str, dict[str, int]] = {}
        self.model_partition: dict[str, int] = {}  # partition each model's records come from
        self.batch_duration = DurationHistogram()
        # Scrapes run on the HTTP server's thread; they read what process() writes.
        self.lock = threading.Lock()

    def process(
        self,
        raws: list[bytes],
        default_timestamps: list[float] | None = None,
        label_raws: list[bytes] = (),
        partitions: list[int] | None = None,
    ) -> BatchOutcome:
        """Run one batch of inference records (and label messages, if any).

        ``partitions[i]`` is the Kafka partition of ``raws[i]``; it tells the
        checkpointer which partition each model's state belongs to."""
        started = time.perf_counter()
        limits = self.settings.limits
        records, indices, rejects = decode_batch(
            raws,
            max_record_bytes=limits.max_record_bytes,
            max_features=limits.max_features_per_record,
            default_timestamps=default_timestamps,
        )
        labels, label_rejects = decode_label_batch(list(label_raws), max_record_bytes=limits.max_record_bytes)
        with self.lock:
            groups = group_by_model(records)
            rejects.extend(self._refuse_new_models(groups, records, indices, raws))
            if partitions is not None:
                last_index = {record.model_id: i for record, i in zip(records, indices)}
                for model_id in groups:
                    self.model_partition[model_id] = partitions[last_index[model_id]]
            findings = []
            complete: set[tuple[str, str]] = set()
            for model_id, model_records in groups.items():
                batch = build_model_batch(model_id, model_records)
                try:
                    findings.extend(self._check_integrity(batch))
                    findings.extend(self.monitors[model_id].update(batch))
                except Exception:  # a bug in one model's detectors must not stop the others
                    self.model_errors[model_id] += len(model_records)
                    log.exception("model %s: %d records not monitored after an internal error",
                                  model_id, len(model_records))
                complete.update((model_id, kind) for kind in ("artifact_unapproved", "approval_rejected",
                                                              *TamperWatch.COMPLETE_KINDS))
                self.records_total[model_id] += len(model_records)
            findings.extend(self._join_labels(labels))
            events = self.alerts.observe(findings, complete)
            for reject in rejects + label_rejects:
                self.rejected_total[reject.reason] += 1
            seconds = time.perf_counter() - started
            self.batch_duration.observe(seconds)
        rejects.sort(key=lambda r: r.index)
        return BatchOutcome(
            n_records=len(raws),
            n_valid=len(raws) - len(rejects),
            rejects=rejects,
            label_rejects=label_rejects,
            events=events,
            seconds=seconds,
        )

    def _refuse_new_models(self, groups, records, indices, raws) -> list[Reject]:
        """Create monitors for new models up to ``limits.max_models``; records of
        models beyond the limit become ``model_limit`` rejects (principle 5:
        random model ids must not blow up memory or Prometheus)."""
        limit = self.settings.limits.max_models
        refused_models = set()
        for model_id in list(groups):
            if model_id in self.monitors:
                continue
            if len(self.monitors) < limit:
                self.monitors[model_id] = self._new_monitor(model_id)
            else:
                refused_models.add(model_id)
                del groups[model_id]
        if not refused_models:
            return []
        return [
            Reject(
                raw=raws[index],
                reason="model_limit",
                detail=f"model limit {limit} reached; {record.model_id!r} is not monitored",
                index=index,
            )
            for record, index in zip(records, indices)
            if record.model_id in refused_models
        ]


    def serving_artifacts(self) -> list[tuple[str, str, bool]]:
        """``(model, digest, approved)`` for the digests each model served in its
        last ``policy.window_size`` records: what is serving now, so a rolled-back
        artifact drops out (and its alert resolves)."""
        window = self.settings.policy.window_size
        return [
            (model, digest, approved)
            for model, digest, approved in self.integrity.artifact_info()
            if self.digest_last_seen.get(model, {}).get(digest, -window) >= self.records_total[model] - window
        ]

    def set_approved(self, model_id: str, digests: list[str]) -> None:
        """Replace a model's approved digests (registry feed); none = trust on first use."""
        with self.lock:
            if digests:
                self.integrity.set_approved(model_id, digests)
            else:
                self.integrity.approved.pop(model_id, None)

    def apply_approval(self, decision: Decision) -> None:
        """Apply the registry gate's decision on one approval message."""
        with self.lock:
            decision.apply(self.integrity)

    def _check_integrity(self, batch) -> list[Finding]:
        """One decision per digest served in the batch: approved or not. The
        first sighting of a bad digest carries the integrity event's detail."""
        events = {e.digest: e for e in self.integrity.check(
            batch.model_id, batch.artifact_digests, batch.model_versions, batch.request_ids)}
        digests, counts = np.unique(batch.artifact_digests[batch.artifact_digests != None].astype(str),  # noqa: E711
                                    return_counts=True)
        event_time = float(np.max(batch.timestamps)) if batch.n else 0.0
        findings = []
        last_seen = self.digest_last_seen.setdefault(batch.model_id, {})
        for digest, count in zip(digests.tolist(), counts.tolist()):
            last_seen[digest] = self.records_total[batch.model_id] + batch.n
            approved = self.integrity.is_approved(batch.model_id, digest)
            event = events.get(digest)
            if approved and event is None:
                continue  # nothing to say; an open alert for it is cleared by `complete`
            detail = event.detail if event else f"unapproved artifact {digest} is still serving ({count} records)"
            examples = [event.request_id] if event and event.request_id else []
            result = DriftResult(statistic=float(not approved), threshold=0.5, detected=not approved, n_seen=count,
                                 detail=detail, extra={"kind": event.kind if event else "unapproved_digest"})
            findings.append(Finding(batch.model_id, "artifact_unapproved", digest, "integrity", result, examples,
                                    event_time, since_record=None))
        findings.extend(rejection_findings(self.integrity, batch.model_id, event_time))
        return findings

    # -- checkpoints ----------------------------------------------------------

    def checkpoint(self) -> dict[str, dict]:
        """Every model's state with the partition it belongs to."""
        with self.lock:
            return {
                model_id: {
                    "partition": self.model_partition.get(model_id, -1),
                    "model": monitor.state_dict(),
                    "alerts": self.alerts.state_dict(model_id),
                    "integrity": self.integrity.model_state(model_id),
                }
                for model_id, monitor in self.monitors.items()
            }

    def restore(self, model_id: str, checkpoint: dict) -> None:
        monitor = ModelMonitor.from_state(checkpoint["model"], self.settings)
        with self.lock:
            self.monitors[model_id] = monitor
            self.integrity.load_model_state(model_id, checkpoint["integrity"])
            self.model_partition[model_id] = checkpoint["partition"]
            self.alerts.forget(model_id)
            self.alerts.load_state(model_id, checkpoint["alerts"])

    def forget_partitions(self, partitions: set[int]) -> list[str]:
        """Drop the models of partitions this daemon no longer owns."""
        with self.lock:
            gone = [m for m, p in self.model_partition.items() if p in partitions]
            for model_id in gone:
                self.monitors.pop(model_id, None)
                self.digest_last_seen.pop(model_id, None)
                del self.model_partition[model_id]
                self.alerts.forget(model_id)
            return gone

    def _new_monitor(self, model_id: str) -> ModelMonitor:
        monitor = ModelMonitor(model_id, self.settings, self.canary_expectations)
        path = self.settings.policy.reference_files.get(model_id)
        if path is not None:
            with open(path, "rb") as f:
                raws = [line.rstrip(b"\r\n") for line in f if line.strip()]
            records, _, rejects = decode_batch(raws, max_record_bytes=self.settings.limits.max_record_bytes,
                                               max_features=self.settings.limits.max_features_per_record)
            records = [r for r in records if r.model_id == model_id]
            if rejects or not records:
                log.warning("reference file %s: %d usable records, %d rejected lines%s", path, len(records),
                            len(rejects), f" (first: {rejects[0].reason}: {rejects[0].detail})" if rejects else "")
            if records:
                monitor.set_reference(build_model_batch(model_id, records))
                log.info("model %s: reference of %d records from %s", model_id, len(records), path)
        return monitor

    def _join_labels(self, labels) -> list:
        by_model: dict[str, list[tuple[str, str]]] = {}
        for label in labels:
            by_model.setdefault(label.model_id, []).append((label.request_id, label.label))
        findings = []
        for model_id, pairs in by_model.items():
            monitor = self.monitors.get(model_id)
            if monitor is None:
                self.labels_unknown_model += len(pairs)
                continue
            findings.extend(monitor.join_labels(pairs, monitor.last_event_time or 0.0))
        return findings


class DurationHistogram:
    """Cumulative bucket counts for infersight_batch_duration_seconds, kept as
    plain numbers so the collector can read them at scrape time."""

    BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS) + 1)  # last bucket is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.BOUNDS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        running, out = 0, []
        for bound, count in zip((*map(str, self.BOUNDS), "+Inf"), self.counts):
            running += count
            out.append((bound, running))
        return out
