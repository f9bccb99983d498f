"""Signed approvals (issue 15): the digest definition, model-signing interop,
every refusal reason, and what the pipeline and the metrics make of them."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from monitor.cli import main
from monitor.config import ConfigError, Settings, load_settings
from monitor.engine.approvals import (
    MAX_SIGNATURES,
    REASONS,
    ApprovalGate,
    TrustedKeys,
    artifact_digest,
    bundle_statement,
    encode_bundle_payload,
    key_fingerprint,
    sign_approval,
)
from monitor.engine.integrity import MAX_OPEN_REJECTIONS, ArtifactIntegrity
from monitor.engine.pipeline import Pipeline
from monitor.export.metrics import InfersightCollector
from tests.approval_kit import make_key, model_file


@pytest.fixture
def kit(tmp_path):
    release_key, release_pub = make_key(tmp_path, "release")
    attacker_key, attacker_pub = make_key(tmp_path, "attacker")
    return {
        "dir": tmp_path,
        "release_key": release_key, "release_pub": release_pub,
        "attacker_key": attacker_key, "attacker_pub": attacker_pub,
        "good": model_file(tmp_path, "good.bin", b"approved weights " * 100),
        "trojan": model_file(tmp_path, "trojan.bin", b"trojaned weights " * 100),
    }


def gate(kit, require_signed=True) -> ApprovalGate:
    return ApprovalGate(TrustedKeys.load([kit["release_pub"]]), require_signed=require_signed)


def fingerprint(pub_path) -> str:
    from cryptography.hazmat.primitives import serialization

    return key_fingerprint(serialization.load_pem_public_key(pub_path.read_bytes()))


# --------------------------------------------------------------------------- the digest
def test_digest_of_a_model_file_is_the_sha256_of_its_bytes(kit):
    content = kit["good"].read_bytes()
    assert artifact_digest(kit["good"]) == "sha256:" + hashlib.sha256(content).hexdigest()
    approval = sign_approval("fraud", [kit["good"]], kit["release_key"])
    [resource] = bundle_statement(approval["signatures"][0])["predicate"]["resources"]
    assert approval["digests"] == [artifact_digest(kit["good"])]
    assert "sha256:" + resource["digest"] == approval["digests"][0]


def test_digest_of_a_model_directory_is_the_subject_digest_model_signing_signs(kit, tmp_path):
    from model_signing import signing

    model = tmp_path / "fraud"
    (model / "weights").mkdir(parents=True)
    (model / "config.json").write_bytes(b'{"layers": 3}')
    (model / "weights" / "a.safetensors").write_bytes(b"\x00\x01" * 500)
    (model / ".git").mkdir()
    (model / ".git" / "HEAD").write_bytes(b"ref: main")
    signature = tmp_path / "fraud.sig"
    signing.Config().use_elliptic_key_signer(private_key=kit["release_key"]).sign(model, signature)
    subject = bundle_statement(json.loads(signature.read_text()))["subject"][0]
    assert artifact_digest(model) == "sha256:" + subject["digest"]["sha256"]
    # by hand, as a serving process without model-signing computes it
    per_file = [hashlib.sha256(p.read_bytes()).digest()
                for p in (model / "config.json", model / "weights" / "a.safetensors")]
    assert artifact_digest(model) == "sha256:" + hashlib.sha256(b"".join(per_file)).hexdigest()
    (model / ".git" / "HEAD").write_bytes(b"ref: other")  # ignored
    before = artifact_digest(model)
    assert artifact_digest(model) == before
    (model / "weights" / "a.safetensors").write_bytes(b"\x00\x02" * 500)
    assert artifact_digest(model) != before


def test_our_approvals_verify_with_model_signing_and_its_signatures_with_us(kit, tmp_path):
    from model_signing import signing, verifying

    # an approval written by `infersight approve` is a model-signing signature of the files
    approval = sign_approval("fraud", [kit["good"]], kit["release_key"])
    signature = tmp_path / "approval.sig"
    signature.write_text(json.dumps(approval["signatures"][0]))
    verifying.Config().use_elliptic_key_verifier(public_key=kit["release_pub"]).verify(kit["good"], signature)
    with pytest.raises(ValueError):
        verifying.Config().use_elliptic_key_verifier(public_key=kit["release_pub"]).verify(kit["trojan"], signature)
    # a signature made with model-signing's own CLI/API, of a directory named after the model
    model = tmp_path / "fraud"
    model.mkdir()
    (model / "model.onnx").write_bytes(b"onnx" * 64)
    upstream = tmp_path / "upstream.sig"
    signing.Config().use_elliptic_key_signer(private_key=kit["release_key"]).sign(model, upstream)
    message = orjson.dumps({"digests": [artifact_digest(model)], "signatures": [json.loads(upstream.read_text())]})
    decision = gate(kit).review("fraud", message)
    assert decision.rejection is None and decision.digests == [artifact_digest(model)]
    assert gate(kit).review("other", message).rejection.reason == "model_mismatch"


# --------------------------------------------------------------------------- refusals
def test_a_valid_signed_approval_counts_and_names_its_signer(kit):
    approval = sign_approval("fraud", [kit["good"], kit["trojan"]], kit["release_key"])
    decision = gate(kit).review("fraud", orjson.dumps(approval))
    assert decision.rejection is None and decision.signed
    assert decision.digests == [artifact_digest(kit["good"]), artifact_digest(kit["trojan"])]
    assert set(decision.signers.values()) == {fingerprint(kit["release_pub"])}
    assert len(fingerprint(kit["release_pub"])) == 16


def test_unsigned_approvals_are_refused_only_when_signatures_are_required(kit):
    plain = orjson.dumps({"digests": [artifact_digest(kit["trojan"])]})
    refused = gate(kit, require_signed=True).review("fraud", plain)
    assert refused.rejection.reason == "unsigned"
    assert refused.rejection.digests == [artifact_digest(kit["trojan"])]
    accepted = gate(kit, require_signed=False).review("fraud", plain)
    assert accepted.rejection is None and not accepted.signed and accepted.signers == {}
    # withdrawing approvals needs no signature: it cannot approve anything
    for withdrawal in (None, orjson.dumps({"digests": []})):
        decision = gate(kit, require_signed=True).review("fraud", withdrawal)
        assert decision.rejection is None and decision.digests == []


def test_untrusted_key_and_altered_signatures_are_refused(kit):
    trojan = artifact_digest(kit["trojan"])
    by_attacker = sign_approval("fraud", [kit["trojan"]], kit["attacker_key"])
    refused = gate(kit).review("fraud", orjson.dumps(by_attacker))
    assert refused.rejection.reason == "untrusted_key" and refused.rejection.digests == [trojan]
    assert fingerprint(kit["attacker_pub"]) in refused.rejection.detail

    # the release team's approval of the good model, with the statement edited to name the trojan
    genuine = sign_approval("fraud", [kit["good"]], kit["release_key"])
    statement = bundle_statement(genuine["signatures"][0])
    statement["subject"][0]["digest"]["sha256"] = trojan.removeprefix("sha256:")
    statement["predicate"]["resources"][0]["digest"] = trojan.removeprefix("sha256:")
    edited = {"digests": [trojan], "signatures": [encode_bundle_payload(genuine["signatures"][0], statement)]}
    assert gate(kit).review("fraud", orjson.dumps(edited)).rejection.reason == "bad_signature"

    # the signature bytes themselves flipped
    flipped = copy.deepcopy(genuine)
    sig = flipped["signatures"][0]["dsseEnvelope"]["signatures"][0]
    sig["sig"] = ("A" if sig["sig"][0] != "A" else "B") + sig["sig"][1:]
    assert gate(kit).review("fraud", orjson.dumps(flipped)).rejection.reason == "bad_signature"


def test_a_signature_over_other_digests_is_refused(kit):
    genuine = sign_approval("fraud", [kit["good"]], kit["release_key"])
    swapped_claim = dict(genuine, digests=[artifact_digest(kit["trojan"])])
    refused = gate(kit).review("fraud", orjson.dumps(swapped_claim))
    assert refused.rejection.reason == "digest_mismatch"
    assert refused.rejection.digests == [artifact_digest(kit["trojan"])]
    extra_claim = dict(genuine, digests=genuine["digests"] + [artifact_digest(kit["trojan"])])
    assert gate(kit).review("fraud", orjson.dumps(extra_claim)).rejection.reason == "digest_mismatch"


def test_an_approval_signed_for_another_model_is_refused(kit):
    for_other = sign_approval("ranker", [kit["good"]], kit["release_key"])
    assert gate(kit).review("fraud", orjson.dumps(for_other)).rejection.reason == "model_mismatch"


def test_an_older_approval_replayed_after_a_newer_one_is_refused(kit):
    now = datetime(2026, 12, 1, tzinfo=UTC)
    old = sign_approval("fraud", [kit["trojan"]], kit["release_key"], issued_at=now - timedelta(days=30))
    new = sign_approval("fraud", [kit["good"]], kit["release_key"], issued_at=now)
    g = gate(kit)
    assert g.review("fraud", orjson.dumps(old)).rejection is None
    assert g.review("fraud", orjson.dumps(new)).rejection is None
    assert g.review("fraud", orjson.dumps(new)).rejection is None  # the same one again is fine
    assert g.review("fraud", orjson.dumps(old)).rejection.reason == "stale"
    assert g.review("ranker", orjson.dumps(sign_approval("ranker", [kit["trojan"]], kit["release_key"],
                                                         issued_at=now - timedelta(days=60)))).rejection is None


@pytest.mark.parametrize("value", [
    b"{not json",
    b"[1, 2]",
    b'{"digests": "sha256:abc"}',
    b'{"digests": ["sha256:ABC"]}',
    b'{"digests": ["sha256:' + b"a" * 64 + b'"], "signatures": [{"mediaType": "text/plain"}]}',
    b'{"digests": ["sha256:' + b"a" * 64 + b'"], "signatures": ["not a bundle"]}',
    b'{"digests": ["sha256:' + b"a" * 64 + b'"], "signatures": [{"mediaType": '
    b'"application/vnd.dev.sigstore.bundle.v0.3+json", "dsseEnvelope": 5}]}',
])
def test_malformed_messages_are_refused_with_a_reason(kit, value):
    assert gate(kit).review("fraud", value).rejection.reason == "malformed"


def test_hostile_keys_and_claims_do_not_reach_metric_labels_as_they_are(kit):
    decision = gate(kit).review("fraud\n{evil=\"1\"}" + "x" * 500, orjson.dumps({"digests": []}))
    assert decision.rejection.reason == "malformed"
    assert len(decision.model_id) == 128 and set(decision.model_id) <= set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-")
    good = artifact_digest(kit["good"])
    junk = gate(kit).review("fraud", orjson.dumps({"digests": [good, "sha256:" + "Z" * 5000]}))
    assert junk.rejection.reason == "malformed" and junk.rejection.digests == [good]


def test_too_many_signatures_are_refused_before_any_is_checked(kit):
    approval = sign_approval("fraud", [kit["good"]], kit["release_key"])
    flood = dict(approval, signatures=approval["signatures"] * (MAX_SIGNATURES + 1))
    assert gate(kit).review("fraud", orjson.dumps(flood)).rejection.reason == "malformed"


def test_mutated_approvals_never_crash_the_gate_and_never_approve_anything_else(kit):
    """Seeded byte flips and structural edits of a genuine approval: each is
    either refused with a declared reason, or approves exactly the genuine digest."""
    import random

    genuine = sign_approval("fraud", [kit["good"]], kit["release_key"])
    body = orjson.dumps(genuine)
    rng = random.Random(15)
    outcomes = {}
    for i in range(400):
        if i % 2:
            raw = bytearray(body)
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            value = bytes(raw)
        else:
            edited = copy.deepcopy(genuine)
            bundle = edited["signatures"][0]
            victim = rng.choice([bundle, bundle["dsseEnvelope"], bundle["verificationMaterial"],
                                 bundle["verificationMaterial"]["publicKey"], bundle["dsseEnvelope"]["signatures"][0],
                                 edited])
            key = rng.choice(sorted(victim))
            victim[key] = rng.choice([None, 0, "", [], {}, "x" * 10, victim[key]])
            value = orjson.dumps(edited)
        decision = gate(kit).review("fraud", value)
        if decision.rejection is None:
            assert decision.digests == genuine["digests"], value
            outcome = "accepted"
        else:
            assert decision.rejection.reason in REASONS
            outcome = decision.rejection.reason
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes.get("malformed", 0) > 50 and outcomes.get("accepted", 0) > 10, outcomes


def test_every_reason_is_a_declared_label():
    assert len(set(REASONS)) == len(REASONS) == 7


# --------------------------------------------------------------------------- integrity state
def test_require_signed_trusts_no_first_digest():
    import numpy as np

    obj = lambda *v: np.array(v, dtype=object)  # noqa: E731
    digest = "sha256:" + "c" * 64
    strict = ArtifactIntegrity(require_signed=True)
    [event] = strict.check("m", obj(digest), obj("1"), obj("r1"))
    assert event.kind == "unapproved_digest" and event.severity == "critical"
    assert not strict.is_approved("m", digest) and strict.signer("m", digest) == "none"
    strict.set_approved("m", [digest], signers={digest: "0123456789abcdef"})
    assert strict.is_approved("m", digest) and strict.signer("m", digest) == "0123456789abcdef"
    strict.withdraw("m")
    assert not strict.is_approved("m", digest)
    tofu = ArtifactIntegrity()
    assert tofu.check("m", obj(digest), obj("1"), obj("r1")) == [] and tofu.is_approved("m", digest)
    assert ArtifactIntegrity.from_state(strict.state_dict()).require_signed


def test_refused_approvals_stay_open_until_a_valid_approval_and_are_bounded(kit):
    strict = ArtifactIntegrity(require_signed=True)
    g = gate(kit)
    g.review("fraud", orjson.dumps({"digests": [artifact_digest(kit["trojan"])]})).apply(strict)
    [open_] = strict.open_rejections("fraud")
    assert (open_.digest, open_.reason) == (artifact_digest(kit["trojan"]), "unsigned")
    g.review("fraud", None).apply(strict)  # an unsigned withdrawal does not clear it
    assert strict.open_rejections("fraud")
    g.review("fraud", orjson.dumps(sign_approval("fraud", [kit["good"]], kit["release_key"]))).apply(strict)
    assert strict.open_rejections() == []
    assert strict.is_approved("fraud", artifact_digest(kit["good"]))
    assert not strict.is_approved("fraud", artifact_digest(kit["trojan"]))
    assert strict.approvals_rejected_total() == {r: int(r == "unsigned") for r in REASONS}
    for i in range(MAX_OPEN_REJECTIONS + 50):
        strict.reject_approval(f"random-{i}", "malformed", [], "junk")
    assert len(strict.open_rejections()) == MAX_OPEN_REJECTIONS
    assert strict.open_rejections("random-0") == []  # the oldest went first


# --------------------------------------------------------------------------- pipeline, alerts, metrics
def _records(model, digest, n, start=0):
    return [orjson.dumps({"model_id": model, "timestamp": 1.8e9 + i, "request_id": f"{model}-{i}",
                          "features": {"x": float(i % 7)}, "prediction": "yes" if i % 3 else "no",
                          "artifact_digest": digest}) for i in range(start, start + n)]


def _exposition(pipeline) -> str:
    registry = CollectorRegistry()
    registry.register(InfersightCollector(pipeline))
    return generate_latest(registry).decode()


def test_pipeline_pages_a_refused_approval_and_a_signed_one_clears_it(kit):
    settings = Settings.model_validate({
        "integrity": {"trusted_keys": [str(kit["release_pub"])], "require_signed_approvals": True},
        "alerts": {"resolve_after_windows": 2},
    })
    pipeline = Pipeline(settings)
    g = ApprovalGate(TrustedKeys.load(settings.integrity.trusted_keys), require_signed=True)
    good, trojan = artifact_digest(kit["good"]), artifact_digest(kit["trojan"])
    pipeline.apply_approval(g.review("fraud", orjson.dumps(sign_approval("fraud", [kit["good"]],
                                                                          kit["release_key"]))))
    assert pipeline.process(_records("fraud", good, 50)).events == []
    # the compromised registry approves its trojan, unsigned, and swaps it in
    pipeline.apply_approval(g.review("fraud", orjson.dumps({"digests": [trojan]})))
    events = pipeline.process(_records("fraud", trojan, 50, start=50)).events
    firing = {(e.alert, e.feature, e.severity) for e in events if e.status == "firing"}
    assert firing == {("approval_rejected", trojan, "critical"), ("artifact_unapproved", trojan, "critical")}
    rejected = next(e for e in events if e.alert == "approval_rejected")
    assert "unsigned" in rejected.detail and "fraud" in rejected.detail
    text = _exposition(pipeline)
    assert 'infersight_approvals_rejected_total{reason="unsigned"} 1.0' in text
    assert 'infersight_approvals_rejected_total{reason="bad_signature"} 0.0' in text
    assert f'infersight_approval_rejected_info{{digest="{trojan}",model="fraud",reason="unsigned"}} 1.0' in text
    signer = fingerprint(kit["release_pub"])
    assert f'infersight_model_artifact_info{{approved="true",digest="{good}",model="fraud",signer="{signer}"}}' in text
    assert f'infersight_model_artifact_info{{approved="false",digest="{trojan}",model="fraud",signer="none"}}' in text

    # the release team rolls back and restates its approval: the refused one is superseded
    pipeline.apply_approval(g.review("fraud", orjson.dumps(sign_approval("fraud", [kit["good"]],
                                                                          kit["release_key"]))))
    resolved = []
    for k in range(3):
        resolved += [(e.alert, e.feature) for e in pipeline.process(_records("fraud", good, 50, 100 + 50 * k)).events
                     if e.status == "resolved"]
    assert ("approval_rejected", trojan) in resolved
    assert "infersight_approval_rejected_info{" not in _exposition(pipeline)


def test_without_required_signatures_the_old_registry_format_still_works(kit):
    pipeline = Pipeline(Settings())
    g = ApprovalGate(TrustedKeys(), require_signed=False)
    good = artifact_digest(kit["good"])
    pipeline.apply_approval(g.review("fraud", orjson.dumps({"digests": [good]})))
    assert pipeline.process(_records("fraud", good, 20)).events == []
    assert f'approved="true",digest="{good}",model="fraud",signer="none"' in _exposition(pipeline)
    # a signature is still checked when present: no trusted key, so it is refused
    signed = sign_approval("fraud", [kit["trojan"]], kit["attacker_key"])
    assert g.review("fraud", orjson.dumps(signed)).rejection.reason == "untrusted_key"


# --------------------------------------------------------------------------- config and CLI
def test_config_checks_keys_at_start(kit, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("integrity: {require_signed_approvals: true}\n")
    with pytest.raises(ConfigError, match="trusted_keys"):
        load_settings(config)
    config.write_text(f"integrity: {{trusted_keys: [{tmp_path / 'missing.pub'}]}}\n")
    with pytest.raises(ConfigError, match="missing.pub"):
        load_settings(config)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_pub = tmp_path / "rsa.pub"
    rsa_pub.write_bytes(rsa.generate_private_key(65537, 2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    config.write_text(f"integrity: {{trusted_keys: [{rsa_pub}]}}\n")
    with pytest.raises(ConfigError, match="rsa.pub"):
        load_settings(config)
    config.write_text(f"integrity: {{trusted_keys: [{kit['release_pub']}], require_signed_approvals: true}}\n")
    assert load_settings(config).integrity.require_signed_approvals


def test_cli_digest_approve_and_verify_approval(kit, tmp_path, capsys):
    assert main(["digest", str(kit["good"])]) == 0
    assert capsys.readouterr().out.strip() == artifact_digest(kit["good"])
    assert main(["digest", str(tmp_path / "nope")]) == 2

    approval = tmp_path / "approval.json"
    assert main(["approve", "fraud", "--model-path", str(kit["good"]), "--key", str(kit["release_key"]),
                 "--output", str(approval)]) == 0
    assert fingerprint(kit["release_pub"]) in capsys.readouterr().err
    verify = ["verify-approval", str(approval), "--trusted-key", str(kit["release_pub"])]
    assert main(verify + ["--model-path", str(kit["good"])]) == 0
    out = capsys.readouterr().out
    assert f"may serve {artifact_digest(kit['good'])}, signed by key {fingerprint(kit['release_pub'])}" in out
    assert main(verify + ["--model-path", str(kit["trojan"])]) == 1
    assert "MISMATCH" in capsys.readouterr().out
    assert main(["verify-approval", str(approval), "--trusted-key", str(kit["attacker_pub"])]) == 1
    assert "REJECTED (untrusted_key)" in capsys.readouterr().out

    tampered = json.loads(approval.read_text())
    tampered["digests"] = [artifact_digest(kit["trojan"])]
    approval.write_text(json.dumps(tampered))
    assert main(verify) == 1
    assert "REJECTED (digest_mismatch)" in capsys.readouterr().out
    assert main(["verify-approval", str(approval)]) == 2  # no trusted key given
