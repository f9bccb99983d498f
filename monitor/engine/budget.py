"""One false-alarm budget per model, split once across all of its checks.

The user says: "for this model, I accept one false alarm per
``policy.expected_run_length`` records, all its checks together". A false
alarm is a detected window on traffic where nothing changed. The budget is a
rate, ``1 / expected_run_length`` false alarms per record, and is split into
equal shares, one per *check* the policy enables (``ks``, ``chi2``,
``prediction_class``, ``hst``, ``cusum``, ``trigger_activation``, ...), known
from the configuration before any record arrives. A check that runs on several
subjects (``ks`` on every numeric feature) splits its share again across them
(Bonferroni). Rates add, so the total stays within the promise whatever the
dependence between checks. Exact checks (artifact integrity, canary probes)
have no false-alarm rate and take no share.

Each check spends its share the way its statistics need it:

- a test run every ``every`` records gets ``alpha = share * every`` per test
  (:func:`detectors.calibration.per_test_alpha`);
- a sequential detector gets an expected run length ``1 / share``.

A share a model never uses (no latency logged, no categorical feature) is
simply not spent: the real rate is then below the promise.

>>> budget = Budget(1e6, ["ks", "chi2", "cusum", "trigger_activation"])
>>> budget.run_length("cusum")
4000000.0
>>> budget.alpha("ks", every=1000, n_subjects=10)
2.5e-05
"""

from __future__ import annotations

from collections.abc import Sequence

from detectors.calibration import per_test_alpha


class Budget:
    def __init__(self, expected_run_length: float, checks: Sequence[str]):
        self.expected_run_length = float(expected_run_length)
        self.checks = tuple(dict.fromkeys(checks))
        if not self.checks:
            self.checks = ("none",)

    def _share_run_length(self, check: str, n_subjects: int) -> float:
        if check not in self.checks:
            raise KeyError(f"check {check!r} has no share of the budget (enabled: {', '.join(self.checks)})")
        return self.expected_run_length * len(self.checks) * max(int(n_subjects), 1)

    def alpha(self, check: str, every: int, n_subjects: int = 1) -> float:
        """Per-test significance of a check tested every ``every`` records on
        each of ``n_subjects`` subjects."""
        return per_test_alpha(self._share_run_length(check, 1), every, max(int(n_subjects), 1))

    def run_length(self, check: str, n_subjects: int = 1) -> float:
        """Expected records between false alarms for one subject of a sequential check."""
        return self._share_run_length(check, n_subjects)

    def allocation(self) -> dict[str, float]:
        """Check -> its expected records between false alarms (all its subjects together)."""
        return {check: self.expected_run_length * len(self.checks) for check in self.checks}
