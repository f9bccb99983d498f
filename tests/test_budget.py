"""One false-alarm budget per model: split once, kept in total."""

import pytest
from scipy import stats

from bench.budget import run
from monitor.config import Settings
from monitor.engine.budget import Budget
from monitor.engine.model_monitor import ModelMonitor
from monitor.engine.slots import enabled_checks


def test_every_check_draws_once_on_the_model_budget():
    settings = Settings.model_validate({"kafka": {"labels_topic": "labels"}})
    checks = enabled_checks(settings)
    assert len(checks) == len(set(checks))
    budget = Budget(settings.policy.expected_run_length, checks)
    # the rates of the checks add up to exactly the promise
    total_rate = sum(1 / run_length for run_length in budget.allocation().values())
    assert total_rate == pytest.approx(1 / settings.policy.expected_run_length)
    monitor = ModelMonitor("m", settings)
    # the tamper checks take their share from the same budget, per evaluation
    trigger = next(s for s in monitor.slots if s.check == "trigger_activation")
    assert trigger.detector.params["alpha"] == pytest.approx(monitor.step / (1e8 * len(checks)))
    assert monitor.performance.alpha == pytest.approx(settings.policy.window_size / (1e8 * len(checks)))
    with pytest.raises(KeyError):
        budget.alpha("not-a-check", 1000)


def test_stationary_traffic_stays_within_the_promise():
    # 2 models x 60k records at expected_run_length 2e4: at most ~5.5 false
    # alarms promised (the bound is conservative). More than 14 has probability
    # < 1e-3 even at exactly the promised rate (Poisson(5.5)).
    settings, detections, decisions, pages, monitored = run(2e4, models=2, records_per_model=60_000, seed=5)
    promised = monitored / 2e4
    limit = stats.poisson.ppf(1 - 1e-3, promised)
    assert sum(decisions.values()) > 1000  # every check decided many times
    assert sum(detections.values()) <= limit, detections
    assert pages <= sum(detections.values())
