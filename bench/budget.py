"""The false-alarm budget, measured (``make bench-budget``).

``policy.expected_run_length`` promises, per model, at most one false alarm
(a detected window on unchanged traffic) per that many records, every check
together (monitor/engine/budget.py). This benchmark runs every check of the
default policy, delayed labels included, over long stationary streams and
counts detected decisions: the observed rate, with an exact Poisson 95%
confidence interval, against the promise. It also counts pages (alerts that
fired), which hysteresis makes rarer still.

A small ``expected_run_length`` makes false alarms frequent enough to count
in minutes; the split across checks does not depend on its value. Writes
bench/BUDGET.md.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections import Counter
from pathlib import Path

import orjson
from scipy import stats

from monitor.config import Settings
from monitor.engine.alerts import AlertBook
from monitor.engine.model_monitor import ModelMonitor
from monitor.engine.slots import enabled_checks
from monitor.tools.simulate import Scenario, generate_records, label_for, model_names
from monitor.wire.route import build_model_batch, group_by_model
from monitor.wire.schema import decode_batch, decode_label_batch


def poisson_interval(count: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) interval for a Poisson mean."""
    a = (1 - level) / 2
    lo = 0.0 if count == 0 else stats.chi2.ppf(a, 2 * count) / 2
    return lo, stats.chi2.ppf(1 - a, 2 * count + 2) / 2


def run(expected_run_length: float, models: int, records_per_model: int, seed: int, batch: int = 2000):
    """Detected decisions per check and pages, over stationary streams."""
    settings = Settings.model_validate({
        "kafka": {"labels_topic": "labels"},
        "policy": {"expected_run_length": expected_run_length},
    })
    monitors = {name: ModelMonitor(name, settings) for name in model_names(models)}
    book = AlertBook(settings.alerts.fire_after_windows, settings.alerts.resolve_after_windows)
    detections: Counter[str] = Counter()
    decisions: Counter[str] = Counter()
    pages = 0
    stable = Scenario()
    raws = []
    monitored = 0
    for _, value in generate_records(models, records_per_model, stable, seed=seed):
        raws.append(value)
        if len(raws) == batch:
            findings, new = _feed(raws, monitors, stable)
            raws, monitored = [], monitored + new
            pages += _count(findings, book, detections, decisions)
    if raws:
        findings, new = _feed(raws, monitors, stable)
        monitored += new
        pages += _count(findings, book, detections, decisions)
    return settings, detections, decisions, pages, monitored


def _feed(raws, monitors, scenario):
    """Findings of one batch, and how many monitored records it added."""
    records, _, _ = decode_batch(raws)
    findings = []
    before = sum(m.live_done - m.live_reference_records for m in monitors.values())
    for model_id, group in group_by_model(records).items():
        findings += monitors[model_id].update(build_model_batch(model_id, group))
    # every record's label, at once (labels arrive after their predictions)
    labels, _ = decode_label_batch([label_for(orjson.loads(raw), scenario, "") for raw in raws])
    by_model: dict[str, list] = {}
    for label in labels:
        by_model.setdefault(label.model_id, []).append((label.request_id, label.label))
    for model_id, pairs in by_model.items():
        findings += monitors[model_id].join_labels(pairs)
    return findings, sum(m.live_done - m.live_reference_records for m in monitors.values()) - before


def _count(findings, book, detections, decisions) -> int:
    """Tally decisions per check; return the pages they caused."""
    for f in findings:
        if f.feature == "*":  # a search check's sweep, not a decision
            continue
        decisions[f.detector] += 1
        detections[f.detector] += int(f.result.detected)
    return sum(e.status == "firing" for e in book.observe(findings))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expected-run-length", type=float, default=2e4)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--records", type=int, default=250_000, help="records per model")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--no-write", dest="write", action="store_false", help="do not update bench/BUDGET.md")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    settings, detections, decisions, pages, monitored = run(args.expected_run_length, args.models, args.records,
                                                            args.seed)
    seconds = time.perf_counter() - started
    total = sum(detections.values())
    lo, hi = poisson_interval(total)
    promise = monitored / args.expected_run_length
    checks = enabled_checks(settings)
    lines = [
        "# False-alarm budget (bench/budget.py)",
        "",
        f"{platform.python_implementation()} {platform.python_version()}, {time.strftime('%Y-%m-%d')}; "
        f"{args.models} stationary models x {args.records:,} records, default policy with delayed labels, "
        f"`expected_run_length` {args.expected_run_length:g}; {seconds:.0f} s.",
        "",
        f"The budget is split across {len(checks)} checks: {', '.join(checks)}.",
        "",
        "| what | count | per million monitored records | 95% interval |",
        "|---|---|---|---|",
        f"| promised (at most) | {promise:.1f} | {1e6 / args.expected_run_length:.2f} | |",
        f"| detected windows (false alarms) | {total} | {total / monitored * 1e6:.2f} | "
        f"{lo / monitored * 1e6:.2f} to {hi / monitored * 1e6:.2f} |",
        f"| pages (alerts fired) | {pages} | {pages / monitored * 1e6:.2f} | |",
        "",
        f"Monitored records (after each model's reference): {monitored:,}. "
        f"Ratio observed / promised: {total / promise:.2f} (95% interval {lo / promise:.2f} to {hi / promise:.2f}).",
        "",
        "| check | decisions | detected |",
        "|---|---|---|",
        *[f"| {check} | {decisions[check]:,} | {detections[check]} |" for check in sorted(decisions)],
        "",
        "Rerun: `make bench-budget` (options: `python -m bench.budget --help`).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        Path(__file__).with_name("BUDGET.md").write_text(text)
    return 0 if hi >= 0 and lo <= promise else 1


if __name__ == "__main__":
    raise SystemExit(main())
