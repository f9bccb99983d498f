"""The pipeline: decode -> route -> monitor -> alert, one call per poll batch.

Shared by the Kafka daemon (``infersight run``) and the file replay
(``infersight replay``), so what a backtest shows is what production does.
Sources and sinks (Kafka, files) stay outside: ``process`` takes raw bytes and
returns what to dead-letter and which alert events to publish.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from detectors.base import DriftResult
from monitor.config import Settings
from monitor.engine.alerts import AlertBook, AlertEvent
from monitor.engine.approvals import Decision, rejection_findings
from monitor.engine.findings import APPROVAL_REJECTED, ARTIFACT_UNAPPROVED, CLEAN, Finding
from monitor.engine.integrity import ArtifactIntegrity
from monitor.engine.model_monitor import ModelMonitor, load_expectations
from monitor.engine.slots import SWEEP
from monitor.engine.snapshot import PipelineSnapshot, model_view
from monitor.wire.batch import ModelBatch
from monitor.wire.route import build_model_batch, group_by_model
from monitor.wire.schema import Reject, decode_batch, decode_label_batch

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
        # process() and the state calls run one at a time (the poll loop and
        # the registry feed); scrapes never take this lock: they read the
        # snapshot published after each batch.
        self.lock = threading.Lock()
        self._snapshot = PipelineSnapshot.build(self, {})
        # models whose state changed since their last saved checkpoint
        self._dirty: set[str] = set()

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
            for model_id, model_records in groups.items():
                batch = build_model_batch(model_id, model_records)
                try:
                    findings.extend(self._check_integrity(batch))
                    findings.extend(self.monitors[model_id].update(batch))
                except Exception:  # a bug in one model's detectors must not stop the others
                    self.model_errors[model_id] += len(model_records)
                    log.exception("model %s: %d records not monitored after an internal error",
                                  model_id, len(model_records))
                self.records_total[model_id] += len(model_records)
            label_findings, label_models = self._join_labels(labels)
            findings.extend(label_findings)
            events = self.alerts.observe(findings)
            for reject in rejects + label_rejects:
                self.rejected_total[reject.reason] += 1
            seconds = time.perf_counter() - started
            self.batch_duration.observe(seconds)
            self._publish(groups.keys() | label_models)
            self._dirty |= groups.keys() | label_models
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


    def count_rejects(self, rejects: list[Reject]) -> None:
        """Count records rejected before the pipeline saw them (e.g. malformed
        KServe events), and show them in the snapshot at once."""
        with self.lock:
            self.rejected_total.update(r.reason for r in rejects)
            self._snapshot = dataclasses.replace(self._snapshot, rejected_total=dict(self.rejected_total))

    def serving_artifacts(self) -> list[tuple[str, str, bool]]:
        """``(model, digest, approved)`` for the digests each model served in its
        last ``policy.window_size`` records: what is serving now, so a rolled-back
        artifact drops out (and its alert resolves)."""
        window = self.settings.policy.window_size
        return [
            (model, digest, approved)
            for model, digest, approved in self.integrity.artifact_info()
            if model in self.monitors
            and self.digest_last_seen.get(model, {}).get(digest, -window) >= self.monitors[model].records_seen - window
        ]

    def apply_approval(self, decision: Decision) -> None:
        """Apply the registry gate's decision on one approval message."""
        with self.lock:
            decision.apply(self.integrity)
            self._publish({decision.model_id} & self.monitors.keys())
            self._dirty |= {decision.model_id} & self.monitors.keys()

    def _check_integrity(self, batch: ModelBatch) -> list[Finding]:
        """Integrity decisions, taken at records, not at poll batches: a bad
        digest is found at the first record that serves it (its event time is
        the alert's ``since``); then at every ``policy.window_size``-th record of
        the model, each digest it served lately is decided again: unapproved
        and still serving, or approved (since) or gone and clean."""
        model = batch.model_id
        before = self.monitors[model].records_seen  # the model's records before this batch (restored too)
        findings = []
        for event in self.integrity.check(model, batch.artifact_digests, batch.model_versions, batch.request_ids):
            if event.digest is None:
                continue  # records without a digest: nothing to name (the event is logged by its kind)
            approved = self.integrity.is_approved(model, event.digest)
            result = DriftResult(statistic=float(not approved), threshold=0.5, detected=not approved,
                                 n_seen=event.count, detail=event.detail, extra={"kind": event.kind})
            at = float(batch.timestamps[event.index])
            findings.append(Finding(model, ARTIFACT_UNAPPROVED, event.digest, "integrity", result,
                                    [event.request_id] if event.request_id else [], at, since=at,
                                    window=before + event.index + 1))
        last_seen = self.digest_last_seen.setdefault(model, {})
        window = self.settings.policy.window_size
        served = batch.artifact_digests != None  # noqa: E711
        # the model's record count after each record that carries a digest
        positions = before + 1 + np.flatnonzero(served)
        digests = batch.artifact_digests[served].astype(str) if served.any() else np.empty(0, dtype=str)
        done = before
        for end in range((before // window + 1) * window, before + batch.n + 1, window):
            _note_served(last_seen, digests, positions, done, end)
            done = end
            end_time = float(batch.timestamps[end - before - 1])
            for digest, seen_at in last_seen.items():
                serving = seen_at > end - window
                # approved now (a registry approval may come later) or no longer
                # served: a clean window, which resolves an open alert
                detected = serving and not self.integrity.is_approved(model, digest)
                detail = (f"unapproved artifact {digest} is still serving" if detected
                          else f"artifact {digest} is approved" if serving else f"artifact {digest} is no longer served")
                result = DriftResult(statistic=float(detected), threshold=0.5, detected=detected, n_seen=window,
                                     detail=detail, extra={"kind": "unapproved_digest"})
                findings.append(Finding(model, ARTIFACT_UNAPPROVED, digest, "integrity", result, [], end_time,
                                        window=end))
            # long gone: decided clean often enough to resolve; dropping it keeps this bounded
            gone = end - (self.settings.alerts.resolve_after_windows + 1) * window
            for digest in [d for d, seen_at in last_seen.items() if seen_at <= gone]:
                del last_seen[digest]
        _note_served(last_seen, digests, positions, done, before + batch.n)
        # Refused registry approvals are open until a valid approval supersedes
        # them: decided on each batch of the model, cleared by the sweep.
        first_time = float(batch.timestamps[0])
        findings.extend(dataclasses.replace(f, window=before + 1, since=first_time)
                        for f in rejection_findings(self.integrity, model, first_time))
        findings.append(Finding(model, APPROVAL_REJECTED, SWEEP, "approvals", CLEAN, [], first_time,
                                window=before + 1))
        return findings

    # -- checkpoints ----------------------------------------------------------

    def checkpoint(self) -> dict[str, dict]:
        """The state of every model that changed since its last saved
        checkpoint, with the partition it belongs to. A model that saw nothing
        costs nothing; call :meth:`saved` once these are stored."""
        with self.lock:
            return {
                model_id: {
                    "partition": self.model_partition.get(model_id, -1),
                    "model": monitor.state_dict(),
                    "alerts": self.alerts.state_dict(model_id),
                    "integrity": self.integrity.model_state(model_id),
                    "digests_last_seen": self.digest_last_seen.get(model_id, {}),
                }
                for model_id, monitor in self.monitors.items()
                if model_id in self._dirty
            }

    def saved(self, models) -> None:
        """These models' checkpoints are stored."""
        with self.lock:
            self._dirty.difference_update(models)

    def restore(self, model_id: str, checkpoint: dict) -> None:
        monitor = ModelMonitor.from_state(checkpoint["model"], self.settings)
        with self.lock:
            self.monitors[model_id] = monitor
            self.integrity.load_model_state(model_id, checkpoint["integrity"])
            self.model_partition[model_id] = checkpoint["partition"]
            self.digest_last_seen[model_id] = dict(checkpoint["digests_last_seen"])
            self.alerts.forget(model_id)
            self.alerts.load_state(model_id, checkpoint["alerts"])
            self._publish({model_id})

    def forget_partitions(self, partitions: set[int]) -> list[str]:
        """Drop the models of partitions this daemon no longer owns."""
        with self.lock:
            gone = [m for m, p in self.model_partition.items() if p in partitions]
            for model_id in gone:
                self.monitors.pop(model_id, None)
                self.digest_last_seen.pop(model_id, None)
                del self.model_partition[model_id]
                self.alerts.forget(model_id)
                self._dirty.discard(model_id)
            self._publish(gone)
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

    def _join_labels(self, labels) -> tuple[list[Finding], set[str]]:
        by_model: dict[str, list[tuple[str, str]]] = {}
        for label in labels:
            by_model.setdefault(label.model_id, []).append((label.request_id, label.label))
        findings = []
        for model_id, pairs in by_model.items():
            monitor = self.monitors.get(model_id)
            if monitor is None:
                self.labels_unknown_model += len(pairs)
                continue
            findings.extend(monitor.join_labels(pairs))
        return findings, by_model.keys() & self.monitors.keys()

    # -- what scrapes read ------------------------------------------------------

    def snapshot(self) -> PipelineSnapshot:
        """The state as of the end of the last batch (never blocks)."""
        return self._snapshot

    def _publish(self, changed) -> None:
        """Rebuild the views of the models this batch touched and swap in a new
        snapshot: a scrape reads one consistent state without waiting."""
        views = dict(self._snapshot.models)
        for model_id in changed:
            monitor = self.monitors.get(model_id)
            if monitor is None:
                views.pop(model_id, None)
            else:
                views[model_id] = model_view(self, model_id, monitor)
        for model_id in [m for m in views if m not in self.monitors]:
            del views[model_id]
        self._snapshot = PipelineSnapshot.build(self, views)


def _note_served(last_seen: dict[str, int], digests: np.ndarray, positions: np.ndarray, after: int, upto: int) -> None:
    """Record the last position (record count) at which each digest served,
    for the records in ``(after, upto]``."""
    rows = (positions > after) & (positions <= upto)
    if not rows.any():
        return
    names, inverse = np.unique(digests[rows], return_inverse=True)
    latest = np.zeros(len(names), dtype=np.int64)
    np.maximum.at(latest, inverse, positions[rows])
    for name, position in zip(names.tolist(), latest.tolist()):
        last_seen[name] = position


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
