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
  exactly what an attacker's swap looks like).  With ``require_signed`` there
  is no trust on first use: a model without a list has nothing approved (the
  first digest may already be the attacker's).

Approvals fed from the registry are checked first (signed approvals,
:mod:`monitor.engine.approvals`); :meth:`signer` names the key that signed an
approved digest, and refused approvals stay open per ``(model, claimed
digest)`` (:meth:`open_rejections`) until a valid approval of the model
supersedes them.

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

from collections import Counter
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


@dataclass(frozen=True, slots=True)
class ApprovalRejection:
    """A registry approval that was refused, still open (see :data:`monitor.engine.approvals.REASONS`)."""

    model: str
    digest: str  # the digest the approval claimed ("" if none could be read)
    reason: str
    detail: str


#: refused approvals kept open across all models: a hostile registry publishing
#: under random model ids must not grow memory or the metric without bound
MAX_OPEN_REJECTIONS = 256


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
    require_signed
        No trust on first use: only a model's list approves its digests
        (``integrity.require_signed_approvals``).
    """

    def __init__(
        self,
        approved: dict[str, list[str]] | None = None,
        max_digests_per_model: int = 8,
        max_models: int = 10_000,
        tofu_severity: str = "critical",
        max_approvals_per_model: int = 1024,
        require_signed: bool = False,
    ):
        self.require_signed = bool(require_signed)
        self.max_digests = int(max_digests_per_model)
        self.max_models = int(max_models)
        self.max_approvals = int(max_approvals_per_model)
        self.tofu_severity = tofu_severity
        # model -> {digest: version or None (approved for any version)}
        self.approved: dict[str, dict[str, str | None]] = {}
        self.signers: dict[str, dict[str, str]] = {}  # model -> digest -> key fingerprint of its approval
        self.rejections: dict[tuple[str, str], ApprovalRejection] = {}  # (model, claimed digest), oldest first
        self.rejected_total: Counter[str] = Counter()  # refused approvals by reason
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
        self.signers.get(model, {}).pop(digest, None)
        done = self.reported.get(model, [])
        done[:] = [k for k in done if f"|{digest}|" not in k]

    def set_approved(self, model: str, digests: list[str], signers: dict[str, str] | None = None) -> None:
        """Replace a model's approved list (a compacted registry topic's latest
        value); ``signers``: digest -> fingerprint of the key that signed it."""
        self.approved[model] = {}
        for d in digests:
            self.approve(model, d)
        self.signers[model] = {d: s for d, s in (signers or {}).items() if d in self.approved[model]}

    def withdraw(self, model: str) -> None:
        """Drop a model's list: back to trust on first use, or, with
        ``require_signed``, nothing approved."""
        self.approved.pop(model, None)
        self.signers.pop(model, None)

    def is_approved(self, model: str, digest: str | None) -> bool:
        if digest is None:
            return False
        if model in self.approved or self.require_signed:
            return digest in self.approved.get(model, ())
        return self.trusted.get(model) == digest

    def signer(self, model: str, digest: str) -> str:
        """Fingerprint of the key whose approval lets ``digest`` serve, or ``none``."""
        if not self.is_approved(model, digest):
            return "none"
        return self.signers.get(model, {}).get(digest, "none")

    # ---------------------------------------------------------------- refused approvals
    def reject_approval(self, model: str, reason: str, digests: list[str], detail: str) -> None:
        """Count a refused approval and keep it open for each digest it claimed."""
        self.rejected_total[reason] += 1
        for digest in digests or [""]:
            self.rejections.pop((model, digest), None)
            self.rejections[(model, digest)] = ApprovalRejection(model, digest, reason, detail)
        while len(self.rejections) > MAX_OPEN_REJECTIONS:
            self.rejections.pop(next(iter(self.rejections)))

    def clear_rejections(self, model: str) -> None:
        for key in [k for k in self.rejections if k[0] == model]:
            del self.rejections[key]

    def open_rejections(self, model: str | None = None) -> list[ApprovalRejection]:
        """Refused approvals not yet superseded (of one model, or all)."""
        if not self.rejections:
            return []  # the usual case, checked on every model batch
        return [r for (m, _), r in self.rejections.items() if model is None or m == model]

    def approvals_rejected_total(self) -> dict[str, int]:
        """Refused approvals by reason, every reason present (for a counter from 0)."""
        from monitor.engine.approvals import REASONS

        return {reason: self.rejected_total.get(reason, 0) for reason in REASONS}

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
        list_mode = model_id in self.approved or self.require_signed
        allowed = self.approved.get(model_id, {})
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
                elif d not in allowed:
                    events += self._event(model_id, "unapproved_digest", "critical", d, v, r, i, cnt, None,
                                          f"Model {model_id} is serving unapproved artifact {d} "
                                          f"(version {v}), first seen on request {r}.")
                else:
                    bound = allowed[d]
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
            "require_signed": self.require_signed,
            "approved": {m: dict(a) for m, a in self.approved.items()},
            "signers": {m: dict(s) for m, s in self.signers.items()},
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
        ai = cls(None, state["max_digests"], state["max_models"], state["tofu_severity"], state["max_approvals"],
                 require_signed=state.get("require_signed", False))
        ai.approved = {m: dict(a) for m, a in state["approved"].items()}
        ai.signers = {m: dict(s) for m, s in state.get("signers", {}).items()}
        ai.trusted = dict(state["trusted"])
        ai.versions = dict(state["versions"])
        ai.seen = {m: list(d) for m, d in state["seen"].items()}
        ai.reported = {m: list(k) for m, k in state["reported"].items()}
        ai.refused = int(state["refused"])
        return ai
