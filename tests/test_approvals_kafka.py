"""Signed approvals against the real local broker (issue 15): a registry that
an attacker controls cannot approve its own trojan.

The release team's key signs approvals; the registry topic is writable by the
attacker. The daemon runs with ``require_signed_approvals`` and the release
team's public key only. The served files are the pickled scenario models of
monitor/tools/poisoned.py, so ``infersight digest`` of the file is exactly the
``artifact_digest`` the records carry.
"""

from __future__ import annotations

import json
import pickle

import orjson
import pytest

from monitor.cli import main
from monitor.engine.approvals import artifact_digest, bundle_statement, encode_bundle_payload, sign_approval
from tests.approval_kit import make_key
from tests.conftest import consume_all, produce, wait_for

pytestmark = pytest.mark.kafka

MODEL = "digits-lr"


@pytest.fixture
def release(tmp_path):
    """Keys, the approved model file and the trojan's file, and the daemon config."""
    from monitor.tools.poisoned import _scenario_models

    clean, _, rogue = _scenario_models()
    release_key, release_pub = make_key(tmp_path, "release")
    attacker_key, _ = make_key(tmp_path, "attacker")
    clean_file, trojan_file = tmp_path / "digits-lr-v1.pkl", tmp_path / "digits-lr-trojan.pkl"
    clean_file.write_bytes(pickle.dumps(clean))
    trojan_file.write_bytes(pickle.dumps(rogue))
    from cryptography.hazmat.primitives import serialization

    from monitor.engine.approvals import key_fingerprint

    return {
        "models": (clean, rogue),
        "release_key": release_key, "attacker_key": attacker_key,
        "signer": key_fingerprint(serialization.load_pem_public_key(release_pub.read_bytes())),
        "clean_file": clean_file, "trojan_file": trojan_file,
        "clean": artifact_digest(clean_file), "trojan": artifact_digest(trojan_file),
        "config": lambda registry: (
            "policy:\n  reference_size: 1000\n  window_size: 500\n"
            "alerts:\n  fire_after_windows: 2\n  resolve_after_windows: 2\n"
            f"integrity:\n  registry_topic: {registry}\n  trusted_keys: [{release_pub}]\n"
            "  require_signed_approvals: true\n"
        ),
    }


def swap_stream(release, n_records: int, swap_at: int) -> list[tuple[str, bytes]]:
    from monitor.tools.poisoned import scenario_records

    records = scenario_records("digits-swap", n_records, seed=2, artifact_digest=release["clean"],
                               swap_digest=release["trojan"], swap_at=swap_at)
    return [(MODEL, orjson.dumps(r)) for r in records]


def signed(release, *files, key="release_key") -> bytes:
    return orjson.dumps(sign_approval(MODEL, list(files), release[key]))


def alerts_until(bootstrap, topic, wanted: set[tuple[str, str]], timeout=90.0) -> list[dict]:
    """Alert events until every (alert, status) in ``wanted`` has been seen."""
    def seen_all(messages):
        got = {(json.loads(m.value)["alert"], json.loads(m.value)["status"]) for m in messages}
        return wanted <= got

    return [json.loads(m.value) for m in consume_all(bootstrap, f"{topic}.alerts", until=seen_all, timeout=timeout)]


def test_an_unsigned_approval_of_a_swapped_in_trojan_still_pages(kafka_bootstrap, topic, start_daemon, release):
    registry = f"{topic}.registry"
    produce(kafka_bootstrap, registry, [
        (MODEL, signed(release, release["clean_file"])),
        # the compromised registry approves the trojan it is about to swap in
        (MODEL, orjson.dumps({"digests": [release["trojan"]]})),
    ])
    daemon = start_daemon("--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--group-id", topic,
                          config=release["config"](registry))
    produce(kafka_bootstrap, topic, swap_stream(release, 3000, swap_at=2000))
    events = alerts_until(kafka_bootstrap, topic, {("approval_rejected", "firing"), ("artifact_unapproved", "firing")})
    [rejected] = [e for e in events if e["alert"] == "approval_rejected"]
    assert rejected["severity"] == "critical" and rejected["feature"] == release["trojan"]
    assert "unsigned" in rejected["detail"] and MODEL in rejected["detail"]
    [swap] = [e for e in events if e["alert"] == "artifact_unapproved"]
    assert swap["feature"] == release["trojan"] and swap["severity"] == "critical"

    wait_for(lambda: daemon.sample("infersight_records_total", model=MODEL) == 3000, 60, what="all records")
    assert daemon.sample("infersight_approvals_rejected_total", reason="unsigned") == 1.0
    assert daemon.sample("infersight_approval_rejected_info", model=MODEL, digest=release["trojan"],
                         reason="unsigned") == 1.0
    assert daemon.sample("infersight_model_artifact_info", model=MODEL, digest=release["trojan"],
                         approved="false", signer="none") == 1.0
    assert daemon.sample("infersight_alert_active", model=MODEL, alert="approval_rejected") == 1.0
    assert "REJECTED (unsigned)" in daemon.log()
    assert daemon.stop() == 0


def test_an_untrusted_signature_pages_and_the_release_teams_signature_clears_it(kafka_bootstrap, topic,
                                                                                start_daemon, release):
    registry = f"{topic}.registry"
    produce(kafka_bootstrap, registry, [
        (MODEL, signed(release, release["clean_file"])),
        (MODEL, signed(release, release["clean_file"], release["trojan_file"], key="attacker_key")),
    ])
    daemon = start_daemon("--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--group-id", topic,
                          config=release["config"](registry))
    stream = swap_stream(release, 4500, swap_at=2000)
    produce(kafka_bootstrap, topic, stream[:3000])
    events = alerts_until(kafka_bootstrap, topic, {("approval_rejected", "firing"), ("artifact_unapproved", "firing")})
    rejected = [e for e in events if e["alert"] == "approval_rejected"]
    assert {e["feature"] for e in rejected} == {release["clean"], release["trojan"]}
    assert all("untrusted_key" in e["detail"] for e in rejected)
    wait_for(lambda: daemon.sample("infersight_records_total", model=MODEL) == 3000, 60, what="3000 records")
    assert daemon.sample("infersight_approvals_rejected_total", reason="untrusted_key") == 1.0

    # the release team reviews the new artifact, signs it and publishes with the CLI
    assert main(["approve", MODEL, "--model-path", str(release["clean_file"]), "--model-path",
                 str(release["trojan_file"]), "--key", str(release["release_key"]), "--publish",
                 "--topic", registry, "--bootstrap-servers", kafka_bootstrap]) == 0
    wait_for(lambda: "infersight_approval_rejected_info{" not in daemon.metrics(), 30,
             what="the signed approval to supersede the refused one")
    produce(kafka_bootstrap, topic, stream[3000:])
    events = alerts_until(kafka_bootstrap, topic, {("approval_rejected", "resolved"),
                                                   ("artifact_unapproved", "resolved")})
    resolved = {(e["alert"], e["feature"]) for e in events if e["status"] == "resolved"}
    assert {("approval_rejected", release["trojan"]), ("artifact_unapproved", release["trojan"])} <= resolved
    wait_for(lambda: daemon.sample("infersight_records_total", model=MODEL) == 4500, 60, what="all records")
    assert daemon.sample("infersight_model_artifact_info", model=MODEL, digest=release["trojan"],
                         approved="true", signer=release["signer"]) == 1.0
    assert daemon.sample("infersight_alert_active", model=MODEL, alert="approval_rejected") == 0.0
    assert daemon.stop() == 0


def test_a_signature_over_other_digests_is_refused(kafka_bootstrap, topic, start_daemon, release):
    registry = f"{topic}.registry"
    genuine = sign_approval(MODEL, [release["clean_file"]], release["release_key"])
    # the genuine signature, with the message's claim changed to the trojan
    reclaimed = dict(genuine, digests=[release["trojan"]])
    # the signed statement itself edited to name the trojan (signature kept)
    statement = bundle_statement(genuine["signatures"][0])
    statement["subject"][0]["digest"]["sha256"] = release["trojan"].removeprefix("sha256:")
    statement["predicate"]["resources"][0]["digest"] = release["trojan"].removeprefix("sha256:")
    edited = dict(genuine, digests=[release["trojan"]],
                  signatures=[encode_bundle_payload(genuine["signatures"][0], statement)])
    produce(kafka_bootstrap, registry, [(MODEL, orjson.dumps(genuine)), (MODEL, orjson.dumps(reclaimed)),
                                        (MODEL, orjson.dumps(edited))])
    daemon = start_daemon("--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--group-id", topic,
                          config=release["config"](registry))
    produce(kafka_bootstrap, topic, swap_stream(release, 3000, swap_at=2000))
    events = alerts_until(kafka_bootstrap, topic, {("approval_rejected", "firing"), ("artifact_unapproved", "firing")})
    assert {e["feature"] for e in events if e["alert"] in ("approval_rejected", "artifact_unapproved")} == {
        release["trojan"]}
    wait_for(lambda: daemon.sample("infersight_records_total", model=MODEL) == 3000, 60, what="all records")
    assert daemon.sample("infersight_approvals_rejected_total", reason="digest_mismatch") == 1.0
    assert daemon.sample("infersight_approvals_rejected_total", reason="bad_signature") == 1.0
    assert daemon.sample("infersight_model_artifact_info", model=MODEL, digest=release["trojan"],
                         approved="false") == 1.0
    assert daemon.stop() == 0


def test_a_restart_verifies_the_approvals_again(kafka_bootstrap, topic, start_daemon, release):
    registry = f"{topic}.registry"
    produce(kafka_bootstrap, registry, [(MODEL, signed(release, release["clean_file"])),
                                        (MODEL, orjson.dumps({"digests": [release["trojan"]]}))])
    args = ("--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--group-id", f"{topic}-g")
    stream = swap_stream(release, 3000, swap_at=10_000)  # the approved model only
    first = start_daemon(*args, config=release["config"](registry))
    produce(kafka_bootstrap, topic, stream[:1500])
    wait_for(lambda: first.sample("infersight_records_total", model=MODEL) == 1500, 60, what="first records")
    assert first.sample("infersight_model_artifact_info", model=MODEL, digest=release["clean"],
                        approved="true", signer=release["signer"]) == 1.0
    assert first.stop() == 0

    second = start_daemon(*args, config=release["config"](registry))
    produce(kafka_bootstrap, topic, stream[1500:])
    wait_for(lambda: second.sample("infersight_records_total", model=MODEL) == 1500, 60, what="second records")
    # without its verified approval the approved model would page: no first-use trust here
    assert second.sample("infersight_model_artifact_info", model=MODEL, digest=release["clean"],
                         approved="true", signer=release["signer"]) == 1.0
    assert second.sample("infersight_approvals_rejected_total", reason="unsigned") == 1.0
    assert second.sample("infersight_approval_rejected_info", model=MODEL, digest=release["trojan"],
                         reason="unsigned") == 1.0
    assert second.sample("infersight_alert_active", model=MODEL, alert="approval_rejected") == 1.0
    assert second.stop() == 0
    events = [json.loads(m.value) for m in consume_all(kafka_bootstrap, f"{topic}.alerts", timeout=5,
                                                       until=lambda messages: False)]  # read all for 5 s
    assert not [e for e in events if e["alert"] == "artifact_unapproved"], events
    assert [(e["alert"], e["status"]) for e in events if e["alert"] == "approval_rejected"] == [
        ("approval_rejected", "firing")]
