"""KServe logger conversion, side by side with its parse floor (``make bench-kserve``).

One process, the same events for every stage, best of ``--repeat``:

- ``orjson.loads`` of the request and response bodies: the floor of any
  converter that looks at the data;
- ``KServeJoin``: envelope, body parse, join by id, one wire-schema record per
  row (what ``infersight ingest`` and ``kafka.input_format: kserve`` do);
- ``decode_batch`` of those records: what the daemon pays for them afterwards.

Two shapes: v1 single-row requests (4 features, the sklearn-iris example of
KServe's docs) and OIP v2 batches of 10 rows (an FP64 [10, 16] tensor and a
BYTES column; outputs INT64 and FP32 [10, 2]). Reported as rows/s and as a
ratio to ``orjson.loads``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import orjson

from monitor.wire.kserve import REQUEST_TYPE, RESPONSE_TYPE, KServeJoin, event_from_kafka
from monitor.wire.schema import decode_batch


def headers(ce_id: str, side: str, isvc: str) -> list[tuple[str, bytes]]:
    return [("ce_id", ce_id.encode()), ("ce_type", (REQUEST_TYPE if side == "request" else RESPONSE_TYPE).encode()),
            ("ce_source", b"http://localhost:9081/"), ("ce_time", b"2026-12-01T10:00:00.123456789Z"),
            ("ce_inferenceservicename", isvc.encode()), ("ce_namespace", b"default"),
            ("ce_component", b"predictor"), ("ce_endpoint", b"default"), ("content-type", b"application/json")]


def v1_events(n: int, rng) -> list[tuple[list, bytes]]:
    events = []
    for i in range(n):
        x = np.round(rng.normal(5, 1, size=4), 1).tolist()
        events.append((headers(f"v1-{i}", "request", "sklearn-iris"), orjson.dumps({"instances": [x]})))
        events.append((headers(f"v1-{i}", "response", "sklearn-iris"), orjson.dumps({"predictions": [int(i % 3)]})))
    return events


def v2_events(n: int, rng, rows: int = 10, width: int = 16) -> list[tuple[list, bytes]]:
    events = []
    for i in range(n):
        p1 = rng.uniform(size=rows)
        request = {"inputs": [
            {"name": "x", "shape": [rows, width], "datatype": "FP64", "data": rng.normal(size=rows * width).tolist()},
            {"name": "segment", "shape": [rows], "datatype": "BYTES",
             "data": rng.choice(["a", "b", "c"], size=rows).tolist()}]}
        response = {"model_name": "income", "outputs": [
            {"name": "predict", "shape": [rows], "datatype": "INT64", "data": (p1 > 0.5).astype(int).tolist()},
            {"name": "predict_proba", "shape": [rows, 2], "datatype": "FP32",
             "data": np.column_stack([1 - p1, p1]).ravel().tolist()}]}
        events.append((headers(f"v2-{i}", "request", "income"), orjson.dumps(request)))
        events.append((headers(f"v2-{i}", "response", "income"), orjson.dumps(response)))
    return events


def best_seconds(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def measure(name: str, events: list[tuple[list, bytes]], repeat: int) -> None:
    def floor():
        for _, value in events:
            orjson.loads(value)

    produced: list[bytes] = []

    def convert():
        join = KServeJoin()
        produced.clear()
        for event_headers, value in events:
            produced.extend(join.add(event_from_kafka(event_headers, value)))

    convert()
    rows = len(produced)
    floor_s, convert_s = best_seconds(floor, repeat), best_seconds(convert, repeat)
    decode_s = best_seconds(lambda: decode_batch(produced), repeat)
    print(f"{name}: {len(events):,} events, {rows:,} rows")
    print(f"  orjson.loads of the bodies  {rows / floor_s:>12,.0f} rows/s  1.00x")
    print(f"  KServeJoin -> records       {rows / convert_s:>12,.0f} rows/s  {floor_s / convert_s:.2f}x")
    print(f"  decode_batch of the records {rows / decode_s:>12,.0f} rows/s  {floor_s / decode_s:.2f}x")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="request/response pairs per shape")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(1)
    measure("v1, 1 row x 4 features per request", v1_events(args.requests, rng), args.repeat)
    measure("v2, 10 rows x 17 features per request", v2_events(args.requests // 10, rng), args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
