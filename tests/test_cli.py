"""The command line: replay, simulate to a file, check-config, help."""

import json
import re

import pytest

from monitor.cli import main
from monitor.config import ConfigError, Settings, load_settings
from monitor.engine.pipeline import Pipeline
from monitor.tools.simulate import Scenario, generate_records


def test_simulate_then_replay_prints_the_alert_timeline(tmp_path, capsys):
    data = tmp_path / "drift.jsonl"
    assert main(["simulate", "--scenario", "covariate_shift", "--feature", "f6", "--shift-at", "3000",
                 "--records", "6000", "--models", "2", "--output", str(data), "--seed", "5"]) == 0
    assert len(data.read_text().splitlines()) == 12_000
    with data.open("ab") as f:
        f.write(b"this line is broken\n")
    config = tmp_path / "c.yaml"
    config.write_text("policy: {reference_size: 1000, window_size: 500}\n")
    dead = tmp_path / "dead.jsonl"
    capsys.readouterr()
    assert main(["replay", str(data), "--config", str(config), "--dead-letters", str(dead)]) == 0
    out = capsys.readouterr().out
    firing = [line for line in out.splitlines() if "FIRING" in line and "input_drift" in line]
    assert len(firing) == 1 and "credit-risk/f6" in firing[0]
    assert "fraud-scorer" not in out
    assert "12001 records (1 rejected: invalid_json=1), 2 models" in out
    [entry] = [json.loads(line) for line in dead.read_text().splitlines()]
    assert entry["line"] == 12_001 and entry["reason"] == "invalid_json"


def test_simulate_is_deterministic_for_a_seed():
    a = list(generate_records(2, 100, Scenario("gradual_drift"), seed=3))
    b = list(generate_records(2, 100, Scenario("gradual_drift"), seed=3))
    c = list(generate_records(2, 100, Scenario("gradual_drift"), seed=4))
    assert a == b and a != c


def test_check_config_explains_mistakes(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy:\n  window_size: -5\n  numeric_detector: [ks]\nkafka:\n  topic: t\n")
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "policy.window_size: Input should be greater than or equal to 20" in err
    assert "policy.numeric_detector: unknown setting" in err
    good = tmp_path / "good.yaml"
    good.write_text("kafka: {topic: prod}\npolicy: {numeric_detectors: [ks, psi]}\n")
    assert main(["check-config", str(good), "--show"]) == 0
    assert "topic: prod" in capsys.readouterr().out


@pytest.mark.parametrize("text, message", [
    ("- a\n- b\n", "top level must be a mapping"),
    ("policy: {numeric_detectors: [nope]}", "unknown detector(s) ['nope']"),
    ("policy: {reference_size: 100, window_size: 500}", "window_size must not exceed reference_size"),
    ("metrics: {tls_cert_file: a.pem}", "tls_cert_file and tls_key_file must be set together"),
    ("kafka: [", "is not valid YAML"),
])
def test_config_errors(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(path)


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("kafka: {topic: from-file, group_id: g}\n")
    settings = load_settings(path, {"kafka": {"topic": "from-flag", "group_id": None}})
    assert (settings.kafka.topic, settings.kafka.group_id) == ("from-flag", "g")
    assert settings.kafka.dead_letter_topic == "from-flag.dlq" and settings.kafka.alerts_topic == "from-flag.alerts"


def test_new_models_beyond_the_limit_are_rejected_not_monitored():
    pipeline = Pipeline(Settings.model_validate({"limits": {"max_models": 2}}))
    raws = [v for _, v in generate_records(models=4, records_per_model=10)]
    outcome = pipeline.process(raws)
    assert set(pipeline.monitors) == {"credit-risk", "fraud-scorer"}
    assert len(outcome.rejects) == 20 and {r.reason for r in outcome.rejects} == {"model_limit"}
    assert pipeline.rejected_total["model_limit"] == 20


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("run", "replay", "simulate", "check-config", "score-series"):
        assert command in out


def test_readme_config_reference_is_exactly_the_defaults():
    import yaml
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Configuration reference", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert Settings.model_validate(yaml.safe_load(block)) == Settings()
    assert yaml.safe_load(block) == Settings().model_dump(mode="json")


def test_an_internal_error_in_one_model_does_not_stop_the_others(monkeypatch):
    from monitor.engine.model_monitor import ModelMonitor

    pipeline = Pipeline(Settings())
    original = ModelMonitor.update

    def fragile(self, batch):
        if self.model_id == "fraud-scorer":
            raise RuntimeError("detector bug")
        return original(self, batch)

    monkeypatch.setattr(ModelMonitor, "update", fragile)
    outcome = pipeline.process([v for _, v in generate_records(models=3, records_per_model=10)])
    assert pipeline.model_errors == {"fraud-scorer": 10}
    assert pipeline.records_total["credit-risk"] == 10 and pipeline.records_total["churn-predictor"] == 10
    assert outcome.n_valid == 30
