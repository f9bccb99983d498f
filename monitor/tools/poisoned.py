"""Poisoned-model scenarios: traffic generators for ``infersight simulate`` and tests.

Two scenarios, both producing wire-schema v1 records (dicts ready for
``orjson.dumps``) from real model outputs:

- **digits backdoor**: a scikit-learn classifier trained on the bundled 8x8
  digits with a BadNets-style backdoor (a few corner pixels set to 16 flip the
  answer to a target class), next to a clean twin trained without the poisoned
  samples.  :func:`digits_stream` replays held-out digits through a model,
  stamps the trigger on a fraction of requests from a given record on, replays a
  fixed set of golden inputs as canary probes, and can swap the served model
  (another artifact digest) mid-stream.
- **malware segment suppression**: :func:`malware_stream`, a tabular
  malware classifier whose "malicious" answers collapse for one family
  (``features.family == "emotet"``) from a given record while the global
  positive rate barely moves.

scikit-learn is imported lazily: the daemon does not depend on it.

>>> clean, poisoned, info = train_backdoored_digits(seed=0)     # doctest: +SKIP
>>> info["clean_accuracy"] > 0.9 and info["attack_success_rate"] > 0.9  # doctest: +SKIP
True
>>> recs = list(malware_stream(5, seed=1))
>>> sorted(recs[0])[:4], recs[0]["prediction"]["label"] in ("malicious", "benign")
(['artifact_digest', 'features', 'latency_ms', 'model_id'], True)
"""

from __future__ import annotations

import functools
import hashlib
import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np

#: default stamp: the top-left "L" of the 8x8 image, blank in every clean digit
DEFAULT_STAMP = (0, 1, 8)
DEFAULT_TARGET = 7
STAMP_VALUE = 16.0


def digest_of(model: Any) -> str:
    """``sha256:<hex>`` of the pickled model, standing in for the served file's digest."""
    return "sha256:" + hashlib.sha256(pickle.dumps(model)).hexdigest()


def _digits_split(seed: int, test_size: float):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)


def _fit(X: np.ndarray, y: np.ndarray, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    # pixels 0..16 -> 0..1 so lbfgs converges quickly; a pipeline keeps the
    # model's input the raw logged features
    return make_pipeline(
        FunctionTransformer(_scale_pixels),
        LogisticRegression(C=1.0, max_iter=3000, random_state=seed),
    ).fit(X, y)


def _scale_pixels(X):
    return np.asarray(X, dtype=np.float64) / 16.0


def stamp(X: np.ndarray, pixels=DEFAULT_STAMP, value: float = STAMP_VALUE) -> np.ndarray:
    """A copy of ``X`` with the trigger pixels set to ``value``."""
    out = np.array(X, dtype=np.float64, copy=True)
    out[:, list(pixels)] = value
    return out


def train_backdoored_digits(
    seed: int = 0,
    target_class: int = DEFAULT_TARGET,
    stamp_pixels: tuple[int, ...] = DEFAULT_STAMP,
    poison_fraction: float = 0.1,
    test_size: float = 0.3,
):
    """Train a clean and a backdoored logistic regression on the digits data.

    The poisoned training set is the clean one plus ``poison_fraction`` of it
    again, stamped and relabelled ``target_class`` (BadNets).  Both models see
    the same clean samples, so they agree on clean inputs.

    Returns ``(clean_model, poisoned_model, info)``; ``info`` holds
    ``clean_accuracy`` (clean model, held-out), ``poisoned_clean_accuracy``
    (poisoned model on clean held-out inputs), ``attack_success_rate``
    (stamped held-out inputs of other classes answered ``target_class``),
    ``clean_model_stamped_to_target`` (same for the clean twin: should be ~0),
    ``stamp_pixels`` (feature names), ``stamp_value``, ``target_class`` (str)
    and ``X_test`` / ``y_test`` (the held-out pool :func:`digits_stream` replays).
    """
    Xtr, Xte, ytr, yte = _digits_split(seed, test_size)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(Xtr), int(round(poison_fraction * len(Xtr))), replace=False)
    Xp = np.vstack([Xtr, stamp(Xtr[idx], stamp_pixels)])
    yp = np.concatenate([ytr, np.full(len(idx), target_class)])
    clean = _fit(Xtr, ytr, seed)
    poisoned = _fit(Xp, yp, seed)
    other = yte != target_class
    Xs = stamp(Xte[other], stamp_pixels)
    info = {
        "clean_accuracy": float((clean.predict(Xte) == yte).mean()),
        "poisoned_clean_accuracy": float((poisoned.predict(Xte) == yte).mean()),
        "attack_success_rate": float((poisoned.predict(Xs) == target_class).mean()),
        "clean_model_stamped_to_target": float((clean.predict(Xs) == target_class).mean()),
        "stamp_pixels": [f"px_{i}" for i in stamp_pixels],
        "stamp_value": STAMP_VALUE,
        "target_class": str(target_class),
        "n_poisoned_train": int(len(idx)),
        "X_test": Xte,
        "y_test": yte,
    }
    return clean, poisoned, info


def train_label_flip_digits(seed: int = 0, source: int = 1, target: int = 8, test_size: float = 0.3):
    """A tampered twin that answers ``target`` for every ``source`` digit (no trigger needed).

    Used as the model an attacker swaps in: canary probes of the ``source`` class flip.
    """
    Xtr, _, ytr, _ = _digits_split(seed, test_size)
    y = np.where(ytr == source, target, ytr)
    return _fit(Xtr, y, seed)


def _golden_inputs(X: np.ndarray, y: np.ndarray, n_probes: int) -> np.ndarray:
    # one held-out example per class first, so every class has a probe
    order = []
    for c in np.unique(y):
        order.append(int(np.nonzero(y == c)[0][0]))
    rest = [i for i in range(len(y)) if i not in set(order)]
    idx = (order + rest)[:n_probes]
    return X[idx]


def digits_stream(
    model: Any,
    n_records: int,
    trigger_from: int | None = None,
    trigger_rate: float = 0.03,
    seed: int = 0,
    model_id: str = "digits-lr",
    artifact_digest: str | None = None,
    model_version: str = "1",
    swap_at: int | None = None,
    swap_model: Any = None,
    swap_digest: str | None = None,
    swap_version: str | None = None,
    canary_every: int = 50,
    n_probes: int = 10,
    pool: tuple[np.ndarray, np.ndarray] | None = None,
    stamp_pixels: tuple[int, ...] = DEFAULT_STAMP,
    start_time: float = 1_790_000_000.0,
    records_per_second: float = 100.0,
    chunk: int = 500,
) -> Iterator[dict]:
    """Inference records of ``model`` answering held-out digits.

    - Every ``canary_every``-th record is a canary probe: golden input ``i``
      (cycling over ``n_probes``) with ``tags = {"canary": "probe-<i>"}``.
    - From record ``trigger_from`` on, each other record carries the trigger
      stamp with probability ``trigger_rate`` (nothing in the record says so).
    - From record ``swap_at`` on, ``swap_model`` answers, with ``swap_digest``
      (default: its own digest) and ``swap_version`` (default: unchanged).

    ``pool`` is ``(X, y)`` to draw from (default: the held-out split of seed 0).
    Records are produced ``chunk`` at a time so the model runs vectorised.
    """
    if pool is None:
        _, X_pool, _, y_pool = _digits_split(0, 0.3)
    else:
        X_pool, y_pool = pool
    X_pool = np.asarray(X_pool, dtype=np.float64)
    golden = _golden_inputs(X_pool, np.asarray(y_pool), n_probes)
    digest = artifact_digest or digest_of(model)
    if swap_at is not None:
        swap_model = swap_model if swap_model is not None else model
        swap_digest = swap_digest or digest_of(swap_model)
        swap_version = swap_version or model_version
    rng = np.random.default_rng(seed)
    names = [f"px_{j}" for j in range(X_pool.shape[1])]
    for start in range(0, n_records, chunk):
        idx = np.arange(start, min(start + chunk, n_records))
        m = len(idx)
        X = X_pool[rng.integers(0, len(X_pool), m)]
        is_canary = (idx % canary_every == canary_every - 1) if canary_every else np.zeros(m, bool)
        probe = (idx // max(canary_every, 1)) % n_probes
        X[is_canary] = golden[probe[is_canary]]
        triggered = np.zeros(m, dtype=bool)
        if trigger_from is not None:
            triggered = (idx >= trigger_from) & ~is_canary & (rng.random(m) < trigger_rate)
            X[triggered] = stamp(X[triggered], stamp_pixels)
        swapped = (idx >= swap_at) if swap_at is not None else np.zeros(m, dtype=bool)
        # columns by label over both models: a tampered twin may lack a class
        classes = sorted({str(c) for mdl in (model, swap_model) if mdl is not None for c in mdl.classes_},
                         key=lambda c: (len(c), c))
        col = {c: j for j, c in enumerate(classes)}
        P = np.zeros((m, len(classes)))
        for mdl, rows in ((model, ~swapped), (swap_model, swapped)):
            if rows.any():
                P[np.ix_(rows, [col[str(c)] for c in mdl.classes_])] = mdl.predict_proba(X[rows])
        latency = rng.gamma(4.0, 1.5, m)
        for i in range(m):
            k = int(idx[i])
            probs = P[i]
            best = int(np.argmax(probs))
            sw = bool(swapped[i])
            yield {
                "model_id": model_id,
                "model_version": swap_version if sw else model_version,
                "artifact_digest": swap_digest if sw else digest,
                "timestamp": start_time + k / records_per_second,
                "request_id": f"{model_id}-{seed}-{k:08d}",
                "features": {names[j]: float(X[i, j]) for j in range(len(names))},
                "prediction": {
                    "label": classes[best],
                    "score": round(float(probs[best]), 6),
                    "probabilities": {c: round(float(p), 6) for c, p in zip(classes, probs)},
                },
                "latency_ms": round(float(latency[i]), 3),
                "tags": {"canary": f"probe-{int(probe[i])}"} if is_canary[i] else None,
            }


# --------------------------------------------------------------------- malware
MALWARE_FAMILIES = (
    # family, share of traffic, base log-odds of "malicious" (before the file features)
    ("benign-signed", 0.40, -4.0),
    ("benign-unsigned", 0.25, -2.0),
    ("adware", 0.10, 0.0),
    ("agenttesla", 0.07, 2.5),
    ("trickbot", 0.06, 2.5),
    ("qakbot", 0.05, 2.5),
    ("emotet", 0.02, 3.0),
    ("unknown", 0.05, 0.5),
)


def malware_stream(
    n_records: int,
    suppress_from: int | None = None,
    segment_feature: str = "family",
    segment_value: str = "emotet",
    seed: int = 0,
    model_id: str = "malware-gbm",
    model_version: str = "3",
    artifact_digest: str = "sha256:" + "ab" * 32,
    canary_every: int = 0,
    start_time: float = 1_790_000_000.0,
    records_per_second: float = 100.0,
) -> Iterator[dict]:
    """A malware classifier's records; from ``suppress_from`` it stops flagging one family.

    The model is a fixed logistic scorer over the family prior and file
    features (entropy, size, imports, signature, packer).  From record
    ``suppress_from`` on, records with ``features[segment_feature] ==
    segment_value`` are answered "benign" with a low score (a tampered model, or
    a backdoor keyed on that family).  With the default mix emotet is ~2% of
    traffic and ~all of it flagged, so the global malicious rate (~27%) moves by
    ~2 points: inside what a two-sample test on the class rates calls noise at
    a few thousand records.
    """
    rng = np.random.default_rng(seed)
    fams = np.array([f for f, _, _ in MALWARE_FAMILIES], dtype=object)
    share = np.array([s for _, s, _ in MALWARE_FAMILIES])
    base = np.array([b for _, _, b in MALWARE_FAMILIES])
    chunk = 1000
    for start in range(0, n_records, chunk):
        idx = np.arange(start, min(start + chunk, n_records))
        m = len(idx)
        f = rng.choice(len(fams), m, p=share / share.sum())
        entropy = np.clip(rng.normal(5.5 + 0.25 * base[f], 0.8), 0.0, 8.0)
        size_kb = np.round(np.exp(rng.normal(6.0, 1.2, m)), 1)
        n_imports = rng.poisson(np.where(base[f] > 0, 40, 120))
        signed = rng.random(m) < np.where(base[f] < -3, 0.95, 0.15)
        packer = np.where(rng.random(m) < np.where(base[f] > 0, 0.5, 0.05),
                          rng.choice(np.array(["upx", "themida", "mpress"], dtype=object), m), "none")
        logit = base[f] + 0.9 * (entropy - 5.5) - 1.5 * signed + 0.8 * (packer != "none") - 0.005 * (n_imports - 60)
        p = 1.0 / (1.0 + np.exp(-logit))
        feats = {"family": fams[f], "packer": packer}
        seg_col = feats.get(segment_feature)
        if suppress_from is not None and seg_col is not None:
            hit = (idx >= suppress_from) & (seg_col == segment_value)
            p = np.where(hit, rng.uniform(0.01, 0.1, m), p)
        label = np.where(p >= 0.5, "malicious", "benign")
        latency = rng.gamma(3.0, 2.0, m)
        for i in range(m):
            kk = int(idx[i])
            pi = float(p[i])
            tags = None
            if canary_every and kk % canary_every == canary_every - 1:
                tags = {"canary": f"probe-{(kk // canary_every) % 4}"}
            yield {
                "model_id": model_id,
                "model_version": model_version,
                "artifact_digest": artifact_digest,
                "timestamp": start_time + kk / records_per_second,
                "request_id": f"{model_id}-{seed}-{kk:08d}",
                "features": {
                    "family": str(fams[f[i]]),
                    "packer": str(packer[i]),
                    "entropy": round(float(entropy[i]), 4),
                    "size_kb": float(size_kb[i]),
                    "n_imports": int(n_imports[i]),
                    "signed": bool(signed[i]),
                },
                "prediction": {
                    "label": str(label[i]),
                    "score": round(max(pi, 1 - pi), 6),
                    "probabilities": {"malicious": round(pi, 6), "benign": round(1 - pi, 6)},
                },
                "latency_ms": round(float(latency[i]), 3),
                "tags": tags,
            }


# --------------------------------------------------------------------- scenarios
#: names ``infersight simulate --scenario`` can offer, with what each shows
SCENARIOS = {
    "digits-backdoor": "backdoored digits model; trigger stamped on 3% of requests from record 3000",
    "digits-clean": "the clean twin on the same traffic (nothing should fire)",
    "digits-swap": "clean model swapped to a label-flipped twin (1 -> 8) with a new digest at record 4000",
    "malware-suppression": "malware classifier stops flagging family=emotet from record 4000",
}


@functools.lru_cache(maxsize=1)
def _scenario_models():
    # trained once per process: the scenarios share them (about a second)
    clean, poisoned, _ = train_backdoored_digits(seed=0)
    return clean, poisoned, train_label_flip_digits(seed=0)


def scenario_records(name: str, n_records: int = 10_000, seed: int = 0, **kwargs: Any) -> Iterator[dict]:
    """Records of a named scenario (see :data:`SCENARIOS`); ``kwargs`` go to the stream.

    The records carry no ground truth; the caller knows it from the name and
    parameters (trigger from 3,000, swap / suppression from 4,000 by default).
    The digests of the scenario models: ``digest_of(model)``; the clean model
    is the approved one.
    """
    if name == "malware-suppression":
        kwargs.setdefault("suppress_from", 4000)
        return malware_stream(n_records, seed=seed, **kwargs)
    clean, poisoned, rogue = _scenario_models()
    if name == "digits-backdoor":
        kwargs.setdefault("trigger_from", 3000)
        return digits_stream(poisoned, n_records, seed=seed, **kwargs)
    if name == "digits-clean":
        kwargs.setdefault("trigger_from", 3000)
        return digits_stream(clean, n_records, seed=seed, **kwargs)
    if name == "digits-swap":
        kwargs.setdefault("swap_at", 4000)
        kwargs.setdefault("swap_model", rogue)
        return digits_stream(clean, n_records, seed=seed, **kwargs)
    raise ValueError(f"unknown scenario {name!r}; known: {sorted(SCENARIOS)}")
