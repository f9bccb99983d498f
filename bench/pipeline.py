"""Pipeline throughput, side by side with the decode ceiling (``make bench``).

One run, one process, the same records for every stage, best of ``--repeat``:

- ``orjson.loads`` per record: the floor any Python consumer pays to see the data;
- ``decode_batch``: parse + validate (wire schema v1);
- ``decode + route``: plus the columnar ModelBatch per model;
- ``Pipeline.process``: decode, route, every detector of the default policy, alerts.

Reported as records/s and as a ratio to ``orjson.loads``; absolute numbers move
with the machine, ratios much less. Records are the simulator's: ~560 bytes,
11 features (8 numeric, 3 categorical) and a probability vector.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import orjson

from monitor.config import Settings
from monitor.engine.pipeline import Pipeline
from monitor.wire.route import build_model_batch, group_by_model
from monitor.wire.schema import decode_batch
from monitor.tools.simulate import generate_records


def best_rate(fn, batches, n_records, repeat):
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for batch in batches:
            fn(batch)
        best = min(best, time.perf_counter() - started)
    return n_records / best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=60_000, help="records per model (3 models)")
    parser.add_argument("--batch", type=int, default=5000, help="records per poll batch")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-write", dest="write", action="store_false", help="do not update bench/PIPELINE.md")
    args = parser.parse_args(argv)

    raws = [v for _, v in generate_records(models=3, records_per_model=args.records // 3, seed=1)]
    batches = [raws[i : i + args.batch] for i in range(0, len(raws), args.batch)]
    n = len(raws)

    def route(batch):
        records, _, _ = decode_batch(batch)
        for model_id, group in group_by_model(records).items():
            build_model_batch(model_id, group)

    def pipeline_rate():
        # a fresh pipeline each repeat, warmed past the reference (2000 records/model)
        best = 0.0
        for _ in range(args.repeat):
            pipeline = Pipeline(Settings())
            pipeline.process(raws[:6000])
            started = time.perf_counter()
            for batch in batches:
                pipeline.process(batch)
            best = max(best, n / (time.perf_counter() - started))
        return best

    # memory: a fresh pipeline's traced allocations once every model is past
    # its reference, per model (default policy, reference 5000 records).  A
    # first pipeline runs untraced, so that one-off costs (numba loading its
    # compiled code, lazy imports) are not counted per model.
    import json
    import tracemalloc

    warm = Pipeline(Settings())  # loads compiled kernels and lazy imports outside the trace
    for batch in batches:
        warm.process(batch)
    del warm
    tracemalloc.start()
    memory_pipeline = Pipeline(Settings())
    for batch in batches:
        memory_pipeline.process(batch)
    per_model_mb = tracemalloc.get_traced_memory()[0] / len(memory_pipeline.monitors) / 1e6
    tracemalloc.stop()
    checkpoint_kb = max(len(json.dumps(m.state_dict())) for m in memory_pipeline.monitors.values()) / 1e3

    rows = [
        ("orjson.loads per record", best_rate(lambda b: [orjson.loads(r) for r in b], batches, n, args.repeat)),
        ("decode_batch (parse + validate)", best_rate(decode_batch, batches, n, args.repeat)),
        ("decode + route (columns per model)", best_rate(route, batches, n, args.repeat)),
        ("Pipeline.process (default policy)", pipeline_rate()),
    ]
    base = rows[0][1]
    lines = [
        "# Pipeline throughput",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; python {platform.python_version()}; "
        "one core of a 2-core machine",
        f"- {n} records of ~{sum(map(len, raws)) // n} bytes (3 models, 11 features + probabilities), "
        f"batches of {args.batch}, best of {args.repeat}",
        "- command: `make bench-pipeline` (= `.venv/bin/python -m bench.pipeline`)",
        "",
        "| stage | records/s | vs orjson.loads |",
        "|---|---:|---:|",
        *(f"| {name} | {rate:,.0f} | {rate / base:.2f} |" for name, rate in rows),
        "",
        f"Memory per monitored model (tracemalloc, default policy, past its reference): {per_model_mb:.1f} MB; "
        f"its checkpoint: {checkpoint_kb:,.0f} kB of JSON before gzip.",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.write:
        (Path(__file__).parent / "PIPELINE.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
