"""Artifact integrity: is the model file that answered a request one we approved?

Every inference record may carry ``artifact_digest`` (``sha256:<hex>`` of the
served model file) and ``model_version``.  A registry-poisoning or swap attack
changes the digest; this module turns that into an event on the *first* record
that shows it, naming the model, the digest and the request id.

Two modes per model:

- **approved list** (``approved[model]`` given, or fed by :meth:`approve` from
  the registry): any digest not on the list is a ``critical`` event at once.
- **trust on first use** (no list for the model): the first digest seen is
  trusted; any other digest afterwards is an event (``tofu_severity``,
  default ``critical``: without a registry feed a change of the served file is
  exactly what an attacker's swap looks like).

A ``model_version`` change is checked too: with a list, a new version whose
digest is not approved (or is approved for a *different* version) is an event;
a version served without any digest while a list exists cannot be verified and
is an event; under trust-on-first-use a version bump that keeps the trusted
digest (or carries none) is a ``warning`` (the label changed, the file did not or
cannot be verified).  Each ``(model, kind, digest, version)`` is reported once;
:meth:`artifact_info` keeps the state visible for the
``infersight_model_artifact_info{model,digest,approved}`` gauge so a
Prometheus rule can keep the alert firing.

Pure logic, no I/O; state is plain data (:meth:`state_dict` / :meth:`from_state`).

>>> import numpy as np
>>> obj = lambda *v: np.array(v, dtype=object)
>>> good, bad = "sha256:" + "a" * 64, "sha256:" + "b" * 64
>>> ai = ArtifactIntegrity({"fraud": [good]})
>>> ai.check("fraud", obj(good, good), obj("3", "3"), obj("r1", "r2"))
[]
>>> [(e.kind, e.severity, e.digest == bad, e.request_id) for e in
...  ai.check("fraud", obj(good, bad, bad), obj("3", "3", "3"), obj("r3", "r4", "r5"))]
[('unapproved_digest', 'critical', True, 'r4')]
>>> ai.check("fraud", obj(bad), obj("3"), obj("r6"))    # reported once
[]
>>> sorted((m, d == bad, a) for m, d, a in ai.artifact_info())
[('fraud', False, True), ('fraud', True, False)]
>>> tofu = ArtifactIntegrity()
>>> tofu.check("m", obj(good), obj("1"), obj("x1"))
[]
>>> [e.kind for e in tofu.check("m", obj(bad), obj("2"), obj("x2"))]
['digest_changed']
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class IntegrityEvent:
    """One integrity finding.

    ``kind``: ``unapproved_digest`` (list mode), ``digest_changed``
    (trust-on-first-use), ``version_unapproved`` (new version without a
    matching approval), ``digest_missing`` (list mode, records without a
    digest).  ``index`` is the position in the checked batch of the first
    record that showed it; ``count`` how many records of the batch did.
    """

    model: str
    kind: str
    severity: str
    digest: str | None
    version: str | None
    request_id: str | None
    index: int
    count: int
    previous_digest: str | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ArtifactIntegrity:
    """Check served artifact digests and versions against approvals.

    Parameters
    ----------
    approved
        ``{model_id: [digest, ...]}``; models absent from it run in
        trust-on-first-use mode.  ``None``: every model trust-on-first-use.
    max_digests_per_model
        Digests remembered per model for :meth:`artifact_info` (most recent
        kept), so a model cycling random digests cannot blow up the metric.
    max_models
        Models tracked; beyond it checks are skipped and counted in ``refused``.
    tofu_severity
        Severity of a digest change under trust-on-first-use.
    """

    def __init__(
        self,
        approved: dict[str, list[str]] | None = None,
        max_digests_per_model: int = 8,
        max_models: int = 10_000,
        tofu_severity: str = "critical",
        max_approvals_per_model: int = 1024,
    ):
        self.max_digests = int(max_digests_per_model)
        self.max_models = int(max_models)
        self.max_approvals = int(max_approvals_per_model)
        self.tofu_severity = tofu_severity
        # model -> {digest: version or None (approved for any version)}
        self.approved: dict[str, dict[str, str | None]] = {}
        for model, digests in (approved or {}).items():
            for d in digests:
                self.approve(model, d)
        self.trusted: dict[str, str] = {}            # TOFU: first digest per model
        self.versions: dict[str, str] = {}           # last version seen per model
        self.seen: dict[str, list[str]] = {}         # model -> recent digests (LRU order)
        self.reported: dict[str, list[str]] = {}     # model -> keys already reported
        self.refused = 0

    # ---------------------------------------------------------------- approvals
    def approve(self, model: str, digest: str, version: str | None = None) -> None:
        """Mark ``digest`` approved for ``model`` (optionally only for ``version``).

        Called from the registry feed; the first approval switches the model
        from trust-on-first-use to list mode.
        """
        entry = self.approved.setdefault(model, {})
        if digest not in entry and len(entry) >= self.max_approvals:
            entry.pop(next(iter(entry)))             # oldest approval goes first
        entry[digest] = version

    def revoke(self, model: str, digest: str) -> None:
        """Withdraw an approval (the next record served from it is an event)."""
        self.approved.get(model, {}).pop(digest, None)
        done = self.reported.get(model, [])
        done[:] = [k for k in done if f"|{digest}|" not in k]

    def set_approved(self, model: str, digests: list[str]) -> None:
        """Replace a model's approved list (a compacted registry topic's latest value)."""
        self.approved[model] = {}
        for d in digests:
            self.approve(model, d)

    def is_approved(self, model: str, digest: str | None) -> bool:
        if digest is None:
            return False
        if model in self.approved:
            return digest in self.approved[model]
        return self.trusted.get(model) == digest

    # ---------------------------------------------------------------- checking
    def check(
        self,
        model_id: str,
        digests: np.ndarray,
        versions: np.ndarray | None = None,
        request_ids: np.ndarray | None = None,
    ) -> list[IntegrityEvent]:
        """Check one model's batch; return the new events (each reported once)."""
        digests = np.asarray(digests, dtype=object)
        n = len(digests)
        if n == 0:
            return []
        if model_id not in self.seen and len(self.seen) >= self.max_models:
            self.refused += n
            return []
        versions = np.full(n, None, dtype=object) if versions is None else np.asarray(versions, dtype=object)
        rid = np.full(n, None, dtype=object) if request_ids is None else np.asarray(request_ids, dtype=object)
        events: list[IntegrityEvent] = []
        list_mode = model_id in self.approved
        # group the batch by (digest, version): one pass over distinct values, in
        # order of first appearance so the TOFU "first digest" is really the first
        if (digests == digests[0]).all() and (versions == versions[0]).all():
            # the usual batch: one artifact, one version; no per-record work
            first, counts = np.array([0]), np.array([n])
        else:
            key = np.array([f"{d}\x00{v}" for d, v in zip(digests, versions)], dtype=object)
            _, first, counts = np.unique(key, return_index=True, return_counts=True)
        for g in np.argsort(first, kind="stable"):
            i = int(first[g])
            d, v, cnt = digests[i], versions[i], int(counts[g])
            r = rid[i]
            if d is not None:
                self._remember(model_id, d)
            if list_mode:
                if d is None:
                    events += self._event(model_id, "digest_missing", "warning", None, v, r, i, cnt, None,
                                          f"Model {model_id} served {cnt} record(s) without an artifact digest "
                                          f"(version {v}); its approved list cannot be checked.")
                elif d not in self.approved[model_id]:
                    events += self._event(model_id, "unapproved_digest", "critical", d, v, r, i, cnt, None,
                                          f"Model {model_id} is serving unapproved artifact {d} "
                                          f"(version {v}), first seen on request {r}.")
                else:
                    bound = self.approved[model_id][d]
                    if bound is not None and v is not None and v != bound:
                        events += self._event(model_id, "version_unapproved", "critical", d, v, r, i, cnt, None,
                                              f"Model {model_id} reports version {v} for artifact {d}, "
                                              f"which was approved as version {bound} (request {r}).")
            else:
                trusted = self.trusted.get(model_id)
                if d is not None and trusted is None:
                    self.trusted[model_id] = d
                elif d is not None and d != trusted:
                    events += self._event(model_id, "digest_changed", self.tofu_severity, d, v, r, i, cnt, trusted,
                                          f"Model {model_id} changed artifact from {trusted} to {d} "
                                          f"(version {v}) without an approval, first seen on request {r}.")
                # a version bump with the same digest (or no digest): label changed, file not verified
                last_v = self.versions.get(model_id)
                if (v is not None and last_v is not None and v != last_v
                        and (d is None or d == trusted)):
                    events += self._event(model_id, "version_unapproved", "warning", d, v, r, i, cnt, trusted,
                                          f"Model {model_id} now reports version {v} (was {last_v}) with no "
                                          f"approval naming it (request {r}).")
            if v is not None:
                self.versions[model_id] = v
        return events

    def _event(self, model, kind, severity, digest, version, rid, index, count, previous, detail):
        key = f"{kind}|{digest}|{version}"
        done = self.reported.setdefault(model, [])
        if key in done:
            return []
        done.append(key)
        del done[: max(0, len(done) - 4 * self.max_digests)]     # bounded memory
        return [IntegrityEvent(model=model, kind=kind, severity=severity, digest=digest,
                               version=version, request_id=rid, index=index, count=count,
                               previous_digest=previous, detail=detail)]

    def _remember(self, model: str, digest: str) -> None:
        recent = self.seen.setdefault(model, [])
        if digest in recent:
            recent.remove(digest)
        recent.append(digest)
        del recent[: max(0, len(recent) - self.max_digests)]

    def artifact_info(self) -> list[tuple[str, str, bool]]:
        """``(model, digest, approved)`` for the recently served digests of every model."""
        return [(m, d, self.is_approved(m, d)) for m, ds in self.seen.items() for d in ds]

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "max_digests": self.max_digests, "max_models": self.max_models,
            "max_approvals": self.max_approvals, "tofu_severity": self.tofu_severity,
            "approved": {m: dict(a) for m, a in self.approved.items()},
            "trusted": dict(self.trusted), "versions": dict(self.versions),
            "seen": {m: list(d) for m, d in self.seen.items()},
            "reported": {m: list(k) for m, k in self.reported.items()},
            "refused": self.refused,
        }

    def model_state(self, model: str) -> dict[str, Any]:
        """One model's share of the state (checkpoints are per model)."""
        return {
            "trusted": self.trusted.get(model),
            "version": self.versions.get(model),
            "seen": list(self.seen.get(model, [])),
            "reported": list(self.reported.get(model, [])),
        }

    def load_model_state(self, model: str, state: dict[str, Any]) -> None:
        for table, value in ((self.trusted, state["trusted"]), (self.versions, state["version"])):
            if value is None:
                table.pop(model, None)
            else:
                table[model] = value
        self.seen[model] = list(state["seen"])
        self.reported[model] = list(state["reported"])

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ArtifactIntegrity:
        ai = cls(None, state["max_digests"], state["max_models"], state["tofu_severity"], state["max_approvals"])
        ai.approved = {m: dict(a) for m, a in state["approved"].items()}
        ai.trusted = dict(state["trusted"])
        ai.versions = dict(state["versions"])
        ai.seen = {m: list(d) for m, d in state["seen"].items()}
        ai.reported = {m: list(k) for m, k in state["reported"].items()}
        ai.refused = int(state["refused"])
        return ai
