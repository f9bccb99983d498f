"""Simulated inference traffic (``infersight simulate``), wire schema v1.

Each model is a small synthetic classifier (three classes: approve / review /
deny) over eight numeric and three categorical features. Scenarios change one
model (the *target*, the first one unless ``target_model`` says otherwise)
from record ``shift_at`` of that model on:

- ``stable``: nothing changes;
- ``covariate_shift``: one feature's mean jumps by ``magnitude`` standard
  deviations (the model's outputs move with it, as a real model's would);
- ``gradual_drift``: the same shift, ramped in linearly over ``ramp`` records;
- ``class_concentration``: inputs unchanged, predictions collapse towards one
  class (a broken or swapped model).

Everything is generated from ``seed``; the same arguments give the same bytes.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import orjson

SCENARIOS = ("stable", "covariate_shift", "gradual_drift", "class_concentration")
MODEL_NAMES = ("credit-risk", "fraud-scorer", "churn-predictor", "ranker", "support-router", "price-optimizer")
NUMERIC_FEATURES = tuple(f"f{i}" for i in range(8))
CLASSES = ("approve", "review", "deny")
COUNTRIES = (("us", 0.45), ("de", 0.2), ("fr", 0.15), ("in", 0.12), ("br", 0.08))
DEVICES = (("ios", 0.4), ("android", 0.45), ("web", 0.15))
START_TIME = 1_767_225_600.0  # 2026-01-01T00:00:00Z: fixed so output is reproducible


@dataclass(frozen=True)
class Scenario:
    name: str = "stable"
    feature: str = "f3"
    magnitude: float = 1.0  # in standard deviations of the feature
    shift_at: int = 5000
    ramp: int = 5000
    target_model: str | None = None

    def __post_init__(self) -> None:
        if self.name not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.name!r}; choose from {', '.join(SCENARIOS)}")
        if self.feature not in NUMERIC_FEATURES:
            raise ValueError(f"feature must be one of {', '.join(NUMERIC_FEATURES)}")


def model_names(count: int) -> list[str]:
    return [
        MODEL_NAMES[i % len(MODEL_NAMES)] + (f"-{i // len(MODEL_NAMES)}" if i >= len(MODEL_NAMES) else "")
        for i in range(count)
    ]


class _SyntheticModel:
    """Feature distributions and a fixed softmax classifier for one model."""

    def __init__(self, model_id: str, rng: np.random.Generator):
        self.model_id = model_id
        self.means = rng.normal(0, 20, len(NUMERIC_FEATURES)).round(1)
        self.scales = rng.uniform(0.5, 10, len(NUMERIC_FEATURES)).round(2)
        self.weights = rng.normal(0, 1, (len(NUMERIC_FEATURES), len(CLASSES)))
        self.digest = "sha256:" + "".join(rng.choice(list("0123456789abcdef"), 64))

    def generate(self, start: int, n: int, scenario: Scenario, is_target: bool, rng: np.random.Generator):
        z = rng.standard_normal((n, len(NUMERIC_FEATURES)))
        index = np.arange(start, start + n)
        if is_target and scenario.name in ("covariate_shift", "gradual_drift"):
            j = NUMERIC_FEATURES.index(scenario.feature)
            if scenario.name == "covariate_shift":
                amount = np.where(index >= scenario.shift_at, scenario.magnitude, 0.0)
            else:
                amount = np.clip((index - scenario.shift_at) / scenario.ramp, 0.0, 1.0) * scenario.magnitude
            z[:, j] += amount
        values = self.means + self.scales * z
        values[:, 1] = np.exp(z[:, 1] * 0.5 + 2)  # a skewed, positive feature (amounts)
        values[:, 4] = rng.poisson(3, n) + (z[:, 4] > 2)  # a count feature with ties
        logits = z @ self.weights
        if is_target and scenario.name == "class_concentration":
            logits[index >= scenario.shift_at, 2] += 4.0
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        labels = probs.argmax(axis=1)
        countries = rng.choice([c for c, _ in COUNTRIES], n, p=[p for _, p in COUNTRIES])
        devices = rng.choice([d for d, _ in DEVICES], n, p=[p for _, p in DEVICES])
        returning = rng.random(n) < 0.6
        latency = rng.gamma(4.0, 5.0, n)
        return values.round(4), probs.round(4), labels, countries, devices, returning, latency.round(2)


def generate_records(
    models: int = 3,
    records_per_model: int = 10_000,
    scenario: Scenario = Scenario(),
    seed: int = 0,
    start_time: float = START_TIME,
    records_per_second: float = 20.0,
) -> Iterator[tuple[str, bytes]]:
    """Yield ``(model_id, json_bytes)`` interleaving the models round-robin.

    Event times start at ``start_time`` and advance ``1 / records_per_second``
    per record of each model."""
    rng = np.random.default_rng(seed)
    names = model_names(models)
    target = scenario.target_model or names[0]
    synthetic = [_SyntheticModel(name, rng) for name in names]
    chunk = 1000
    for start in range(0, records_per_model, chunk):
        n = min(chunk, records_per_model - start)
        columns = [m.generate(start, n, scenario, m.model_id == target, rng) for m in synthetic]
        for i in range(n):
            for m, (values, probs, labels, countries, devices, returning, latency) in zip(synthetic, columns):
                position = start + i
                record = {
                    "model_id": m.model_id,
                    "model_version": "1.4.2",
                    "artifact_digest": m.digest,
                    "timestamp": start_time + position / records_per_second,
                    "request_id": f"{m.model_id}-{position:08d}",
                    "features": {
                        **dict(zip(NUMERIC_FEATURES, values[i].tolist())),
                        "country": str(countries[i]),
                        "device": str(devices[i]),
                        "is_returning": bool(returning[i]),
                    },
                    "prediction": {
                        "label": CLASSES[labels[i]],
                        "score": float(probs[i, labels[i]]),
                        "probabilities": dict(zip(CLASSES, probs[i].tolist())),
                    },
                    "latency_ms": float(latency[i]),
                    "tags": None,
                }
                yield m.model_id, orjson.dumps(record)


def label_for(record: dict, scenario: Scenario, target: str, accuracy: float = 0.9) -> bytes:
    """The delayed ground-truth message for a simulated record.

    The model is right with probability ``accuracy``; on the target model,
    after the shift of a drift scenario, it is right only 65% of the time (the
    world moved, the model did not). Deterministic per request id.
    """
    request_id = record["request_id"]
    position = int(request_id.rsplit("-", 1)[1])
    if record["model_id"] == target and scenario.name != "stable" and position >= scenario.shift_at:
        accuracy = 0.65
    u = hash_unit(request_id)
    predicted = record["prediction"]["label"]
    if u < accuracy:
        truth = predicted
    else:
        others = [c for c in CLASSES if c != predicted]
        truth = others[int(u * 1000) % len(others)]
    return orjson.dumps(
        {"model_id": record["model_id"], "request_id": request_id, "label": truth, "timestamp": record["timestamp"]}
    )


def hash_unit(text: str) -> float:
    """A uniform number in [0, 1) from a string, stable across processes."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


def with_labels(stream, scenario: Scenario, models: int, delay: int = 1000):
    """Wrap ``generate_records`` output: yields ``(topic_kind, model_id, bytes)``
    with each record's label ``delay`` records after it (labels arrive late)."""
    target = scenario.target_model or model_names(models)[0]
    backlog: deque[tuple[str, bytes]] = deque()
    for model_id, value in stream:
        yield "record", model_id, value
        backlog.append((model_id, label_for(orjson.loads(value), scenario, target)))
        if len(backlog) > delay:
            yield "label", *backlog.popleft()
    for model_id, label in backlog:
        yield "label", model_id, label
