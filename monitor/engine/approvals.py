"""Signed approvals: an artifact counts as approved only if a trusted key signed it.

Whoever can write to the registry topic (typically the registry itself) could
approve any digest with a plain ``{"digests": [...]}`` message, including a
trojan it swapped in. A signed approval closes that hole: the release team signs
the model's files with a private key that the registry never holds, and the
daemon checks the signature against ``integrity.trusted_keys`` before the
approval counts.

**Signature format.** Each signature is an OpenSSF model-signing signature
(``model-signing`` on PyPI, its key-based, offline method): a Sigstore bundle
holding a DSSE envelope whose payload is an in-toto statement with predicate
``https://model_signing/signature/v1.0``. The statement's subject is named
after the ``model_id`` (that binds the approval to one model) and its digest is
the sha256 over the per-file digests; the predicate lists every file with its
sha256. ``predicate.infersight.issued_at`` (RFC 3339) orders approvals of a
model. A bundle written by :func:`sign_approval` also verifies with
model-signing's own ``verify key`` against the model's files. The daemon has
no model files, only digests; model-signing's public API verifies against
files, so this module uses its key-based ``Signer``/``Verifier`` classes
(``model_signing._signing``), with the dependency pinned to a minor release.

**The approval message** (registry topic, key ``model_id``)::

    {"model_id": "fraud", "digests": ["sha256:..."], "signatures": [<bundle>, ...]}

one bundle per approved artifact; the signed digests must be exactly the
claimed ``digests``. A tombstone or an empty ``digests`` list withdraws the
model's approvals and needs no signature (withdrawing trust cannot approve
anything).

**The artifact digest** a serving process logs in ``artifact_digest``
(:func:`artifact_digest`, ``infersight digest PATH``):

- a model that is one file: ``sha256:`` + the sha256 of the file's bytes;
- a model that is a directory: ``sha256:`` + the model-signing manifest digest,
  the sha256 over the concatenated raw sha256 digests of its files in sorted
  path order (``.git``, ``.gitattributes``, ``.github``, ``.gitignore``
  ignored; symlinks refused), i.e. the subject digest of the signature.

>>> import tempfile, pathlib
>>> from cryptography.hazmat.primitives import serialization
>>> from cryptography.hazmat.primitives.asymmetric import ec
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> key = ec.generate_private_key(ec.SECP256R1())
>>> _ = (tmp / "release.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
...     serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
>>> _ = (tmp / "release.pub").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
...     serialization.PublicFormat.SubjectPublicKeyInfo))
>>> _ = (tmp / "model.bin").write_bytes(b"weights")
>>> approval = sign_approval("fraud", [tmp / "model.bin"], tmp / "release.pem")
>>> approval["digests"] == [artifact_digest(tmp / "model.bin")]
True
>>> gate = ApprovalGate(TrustedKeys.load([tmp / "release.pub"]), require_signed=True)
>>> decision = gate.review("fraud", orjson.dumps(approval))
>>> decision.rejection is None, decision.signers[approval["digests"][0]] == key_fingerprint(key.public_key())
(True, True)
>>> gate.review("fraud", orjson.dumps({"digests": approval["digests"]})).rejection.reason
'unsigned'
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

#: why an approval was refused (the ``reason`` label of
#: ``infersight_approvals_rejected_total``; a bounded set)
REASONS = (
    "unsigned",         # no signature while integrity.require_signed_approvals is on
    "malformed",        # not an approval message, or a signature that cannot be read
    "untrusted_key",    # signed by a key that is not in integrity.trusted_keys
    "bad_signature",    # the signature does not verify: payload or signature altered
    "digest_mismatch",  # a valid signature, but over other digests than the message claims
    "model_mismatch",   # a valid signature for another model
    "stale",            # older than an approval of the model already accepted (a replay)
)

DIGEST_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")
#: the wire schema's model_id (monitor/wire/schema.py): a registry key outside
#: it can name no served model, and must not reach a metric label as it is
MODEL_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: signatures (approved artifacts) one message may carry: bounds the work a
#: hostile registry can ask of the daemon per message
MAX_SIGNATURES = 64
_BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"


# --------------------------------------------------------------------------- digests and keys
def artifact_digest(path: str | Path) -> str:
    """The ``artifact_digest`` a serving process logs for the model at ``path``
    (a file or a directory); the digest a signed approval names."""
    from model_signing import hashing

    return _manifest_digest(hashing.Config().hash(Path(path)))


def _manifest_digest(manifest) -> str:
    resources = list(manifest.resource_descriptors())
    if len(resources) == 1 and resources[0].identifier == ".":
        # a single-file model: the file's own sha256, what `sha256sum` prints
        return "sha256:" + resources[0].digest.digest_hex
    root = hashlib.sha256()
    for resource in resources:
        root.update(resource.digest.digest_value)
    return "sha256:" + root.hexdigest()


def key_fingerprint(public_key) -> str:
    """First 16 hex digits of the sha256 of the key's PEM (SubjectPublicKeyInfo):
    the prefix of the key hint model-signing writes into its bundles."""
    return _key_hint(public_key)[:16]


def _key_hint(public_key) -> str:
    from cryptography.hazmat.primitives import serialization

    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


class TrustedKeys:
    """The public keys whose signatures count, by key hint (see :func:`key_fingerprint`)."""

    def __init__(self, verifiers: dict[str, Any] | None = None):
        self.verifiers = dict(verifiers or {})  # full hint -> model-signing key verifier

    @classmethod
    def load(cls, paths) -> TrustedKeys:
        """Read PEM public keys (ECDSA P-256/384/521, model-signing's key method);
        a missing or unsupported file raises ``ValueError`` naming it."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from model_signing._signing import sign_ec_key

        verifiers = {}
        for path in paths:
            path = Path(path)
            try:
                key = serialization.load_pem_public_key(path.read_bytes())
                if not isinstance(key, ec.EllipticCurvePublicKey):
                    raise ValueError(f"a {type(key).__name__}; model-signing's key method takes EC keys "
                                     "(P-256, P-384, P-521)")
                verifier = sign_ec_key.Verifier(path)
            except (OSError, ValueError, TypeError) as exc:
                raise ValueError(f"trusted key {path}: {exc}") from None
            verifiers[_key_hint(verifier._public_key)] = verifier
        return cls(verifiers)

    def fingerprints(self) -> list[str]:
        return sorted(hint[:16] for hint in self.verifiers)


# --------------------------------------------------------------------------- signing
def sign_approval(
    model_id: str,
    model_paths,
    private_key: str | Path,
    password: str | None = None,
    issued_at: datetime | None = None,
) -> dict[str, Any]:
    """An approval of the artifacts at ``model_paths`` for ``model_id``, signed
    with the PEM EC ``private_key`` (model-signing's key signer)."""
    from model_signing import hashing
    from model_signing._signing import sign_ec_key
    from model_signing._signing import signing as ms_signing

    signer = sign_ec_key.Signer(Path(private_key), password)
    stamp = (issued_at or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")
    digests, bundles = [], []
    for path in model_paths:
        manifest = hashing.Config().hash(Path(path))
        payload = ms_signing.Payload(manifest)
        # model-signing names the subject after the model's directory; naming it
        # after the model id puts the binding to one model under the signature
        payload.statement.pb.subject[0].name = model_id
        payload.statement.pb.predicate["infersight"] = {"issued_at": stamp}
        bundles.append(json.loads(signer.sign(payload).bundle.to_json()))
        digests.append(_manifest_digest(manifest))
    return {"model_id": model_id, "digests": digests, "signatures": bundles}


# --------------------------------------------------------------------------- verification
class ApprovalRejected(Exception):
    """An approval that does not count; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str, digests: list[str] | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.digests = list(digests or [])


@dataclass(frozen=True, slots=True)
class SignedArtifact:
    """What one verified signature approves."""

    digest: str
    signer: str  # key fingerprint
    issued_at: float | None


def verify_signature(model_id: str, bundle: Any, trusted: TrustedKeys) -> SignedArtifact:
    """Verify one model-signing bundle (a dict) for ``model_id``; raise
    :class:`ApprovalRejected` if it does not approve anything for that model."""
    from cryptography.exceptions import InvalidSignature
    from model_signing._signing import sign_sigstore_pb

    parsed = _parse_bundle(bundle)
    hint = parsed.verification_material.public_key.hint if parsed.verification_material.public_key else None
    if hint:
        candidates = [hint] if hint in trusted.verifiers else []
    else:  # older bundles carry no hint: any trusted key may have made it
        candidates = list(trusted.verifiers)
    if not candidates:
        raise ApprovalRejected("untrusted_key", f"signed by key {str(hint)[:16]}, which is not a trusted key "
                               f"(trusted: {', '.join(trusted.fingerprints()) or 'none configured'})")
    for candidate in candidates:
        try:
            # model-signing prints a warning to stdout for bundles without a key
            # hint; a hostile registry must not be able to write to our stdout
            with contextlib.redirect_stdout(io.StringIO()):
                manifest = trusted.verifiers[candidate].verify(sign_sigstore_pb.Signature(parsed))
        except InvalidSignature:
            continue  # another trusted key may have made it (bundles without a key hint)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ApprovalRejected("malformed", f"signed statement not understood: {exc}") from None
        break
    else:
        if hint:
            raise ApprovalRejected("bad_signature", f"signature by trusted key {hint[:16]} does not verify: "
                                   "the statement or the signature was altered")
        raise ApprovalRejected("untrusted_key", "signature verifies with no trusted key")
    if manifest.model_name != model_id:
        raise ApprovalRejected("model_mismatch", f"signed for model {manifest.model_name!r}, "
                               f"published as an approval of {model_id!r}")
    serialization = manifest.serialization_type
    if serialization.get("method") != "files" or serialization.get("hash_type") != "sha256":
        raise ApprovalRejected("malformed", f"serialization {serialization.get('method')}/"
                               f"{serialization.get('hash_type')} not supported (sign whole files with sha256)")
    # the verified bytes: read what model-signing's manifest leaves out
    statement = orjson.loads(parsed.dsse_envelope.payload)
    issued = ((statement.get("predicate") or {}).get("infersight") or {}).get("issued_at")
    try:
        issued_at = datetime.fromisoformat(issued).timestamp() if isinstance(issued, str) else None
    except ValueError:
        raise ApprovalRejected("malformed", f"issued_at {issued!r} is not an RFC 3339 time") from None
    return SignedArtifact(_manifest_digest(manifest), candidate[:16], issued_at)


def _parse_bundle(bundle: Any):
    from sigstore_models.bundle import v1 as bundle_pb

    if not isinstance(bundle, dict):
        raise ApprovalRejected("malformed", "a signature must be a model-signing bundle (JSON object)")
    if bundle.get("mediaType") != _BUNDLE_MEDIA_TYPE:
        raise ApprovalRejected("malformed", f"bundle media type {bundle.get('mediaType')!r}, "
                               f"expected {_BUNDLE_MEDIA_TYPE}")
    # the same normalisation as model-signing's Signature.read (bundles from older releases)
    bundle = json.loads(json.dumps(bundle))
    material = bundle.get("verificationMaterial")
    if isinstance(material, dict):
        material.setdefault("tlogEntries", [])
        if isinstance(material.get("publicKey"), dict):
            material["publicKey"].setdefault("hint", None)
            for k in ("rawBytes", "keyDetails"):
                material["publicKey"].pop(k, None)
    try:
        parsed = bundle_pb.Bundle.from_dict(bundle)
    except (ValueError, TypeError, KeyError) as exc:
        raise ApprovalRejected("malformed", f"not a model-signing bundle: {str(exc).splitlines()[0]}") from None
    if parsed.dsse_envelope is None or not parsed.dsse_envelope.signatures:
        raise ApprovalRejected("malformed", "bundle without a DSSE envelope signature")
    return parsed


# --------------------------------------------------------------------------- the registry's messages
@dataclass(slots=True)
class Decision:
    """What one registry message does to a model's approvals."""

    model_id: str
    digests: list[str] = field(default_factory=list)  # the approved list now (empty: withdrawn)
    signers: dict[str, str] = field(default_factory=dict)  # digest -> key fingerprint
    signed: bool = False
    rejection: ApprovalRejected | None = None

    def describe(self) -> str:
        if self.rejection is not None:
            claimed = ", ".join(self.rejection.digests) or "no readable digest"
            return f"approval of {claimed} REJECTED ({self.rejection.reason}): {self.rejection.detail}"
        if not self.digests:
            return "approvals withdrawn"
        signed = ", ".join(f"{d} signed by {self.signers[d]}" for d in self.digests) if self.signed else None
        return f"approved {signed or ', '.join(self.digests) + ' (unsigned)'}"

    def apply(self, integrity) -> None:
        """Apply to an :class:`~monitor.engine.integrity.ArtifactIntegrity`."""
        if self.rejection is not None:
            integrity.reject_approval(self.model_id, self.rejection.reason, self.rejection.digests,
                                      self.rejection.detail)
            return
        if self.digests:
            integrity.set_approved(self.model_id, self.digests, signers=self.signers)
        else:
            integrity.withdraw(self.model_id)
        if self.digests and (self.signed or not integrity.require_signed):
            # the release team (or, without signatures required, the registry)
            # restated the model's approvals: the refused attempts are superseded
            integrity.clear_rejections(self.model_id)


class ApprovalGate:
    """Decides what each registry message may approve.

    ``require_signed``: unsigned approvals are refused (``unsigned``); without
    it they count as before (compatibility), but a signature that is present is
    always checked. Approvals of a model must not go back in time: one whose
    ``issued_at`` is older than an approval already accepted for the model is
    a replay (``stale``).
    """

    def __init__(self, trusted: TrustedKeys, require_signed: bool = False):
        self.trusted = trusted
        self.require_signed = require_signed
        self.newest: dict[str, float] = {}  # model -> issued_at of its newest accepted signed approval

    def review(self, model_id: str, value: bytes | None) -> Decision:
        if not MODEL_ID_PATTERN.fullmatch(model_id):
            shown = re.sub(r"[^A-Za-z0-9._:-]", "_", model_id[:128]) or "_"
            return Decision(shown, rejection=ApprovalRejected(
                "malformed", f"registry key {model_id[:64]!r} is not a model id (1-128 of [A-Za-z0-9._:-])"))
        if value is None:
            return Decision(model_id)  # tombstone: approvals withdrawn
        claimed: list[str] = []
        try:
            message = orjson.loads(value)
            if not isinstance(message, dict):
                raise ApprovalRejected("malformed", "an approval must be a JSON object")
            claimed = message.get("digests")
            if not isinstance(claimed, list) or not all(isinstance(d, str) for d in claimed):
                claimed = []
                raise ApprovalRejected("malformed", '"digests" must be a list of strings')
            bad = [d for d in claimed if not DIGEST_PATTERN.fullmatch(d)]
            if bad:
                raise ApprovalRejected("malformed", f"not sha256:<64 lowercase hex>: {bad[:3]}")
            if message.get("model_id", model_id) != model_id:
                raise ApprovalRejected("model_mismatch", f"message names model {message.get('model_id')!r}, "
                                       f"published under key {model_id!r}")
            signatures = message.get("signatures") or []
            if not isinstance(signatures, list) or len(signatures) > MAX_SIGNATURES:
                raise ApprovalRejected("malformed", f'"signatures" must be a list of at most {MAX_SIGNATURES}')
            if not signatures:
                if claimed and self.require_signed:
                    raise ApprovalRejected("unsigned", "an unsigned approval, and integrity.require_signed_approvals "
                                           "is on")
                return Decision(model_id, list(dict.fromkeys(claimed)))
            artifacts = [verify_signature(model_id, bundle, self.trusted) for bundle in signatures]
            signed = {a.digest for a in artifacts}
            if signed != set(claimed):
                raise ApprovalRejected("digest_mismatch", f"the signatures approve {sorted(signed)}, the message "
                                       f"claims {sorted(set(claimed))}")
            issued = [a.issued_at for a in artifacts]
            newest = self.newest.get(model_id)
            if newest is not None and any(t is None or t < newest for t in issued):
                raise ApprovalRejected("stale", "signed before the approval of this model already accepted "
                                       f"(issued {_iso(newest)}): a replayed approval")
        except orjson.JSONDecodeError as exc:
            return Decision(model_id, rejection=ApprovalRejected("malformed", f"not JSON: {exc}"))
        except Exception as exc:  # noqa: BLE001 - whatever a hostile message trips in parsing is a refusal
            rejected = exc if isinstance(exc, ApprovalRejected) else ApprovalRejected(
                "malformed", f"unreadable approval ({type(exc).__name__}: {exc})")
            # only well-formed claims become metric labels; bounded like everything else
            rejected.digests = list(dict.fromkeys(
                d for d in (rejected.digests or claimed) if isinstance(d, str) and DIGEST_PATTERN.fullmatch(d)
            ))[:MAX_SIGNATURES]
            return Decision(model_id, rejection=rejected)
        if all(t is not None for t in issued):
            self.newest[model_id] = max(issued)
        return Decision(model_id, list(dict.fromkeys(a.digest for a in artifacts)),
                        {a.digest: a.signer for a in artifacts}, signed=True)


def rejection_findings(integrity, model_id: str, event_time: float) -> list:
    """One ``approval_rejected`` finding per refused approval of the model still
    open: the alert fires on the model's next batch and resolves once a valid
    approval supersedes the refused ones."""
    rejections = integrity.open_rejections(model_id)
    if not rejections:
        return []
    from detectors.base import DriftResult
    from monitor.engine.findings import APPROVAL_REJECTED, Finding

    return [
        Finding(model_id, APPROVAL_REJECTED, r.digest, "approvals",
                DriftResult(statistic=1.0, threshold=0.5, detected=True, n_seen=0,
                            detail=f"A registry approval of {r.digest or 'an unreadable digest'} for model "
                                   f"{model_id} was refused ({r.reason}): {r.detail}",
                            extra={"reason": r.reason}),
                [], event_time, since_record=None)
        for r in rejections
    ]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def encode_bundle_payload(bundle: dict, statement: dict) -> dict:
    """``bundle`` with its DSSE payload replaced by ``statement`` (the signature
    kept): what an attacker who edits a signed approval produces. For tests and
    drills."""
    altered = json.loads(json.dumps(bundle))
    altered["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    return altered


def bundle_statement(bundle: dict) -> dict:
    """The in-toto statement inside a bundle, unverified (for display and drills)."""
    return json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
