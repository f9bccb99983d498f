"""A fleet of models on the real broker, end to end (``make bench-fleet``).

For each fleet size (10, 100, 1,000 models by default; 16 numeric + 2
categorical features each), one topic is filled with every model's reference
plus ``--past-reference`` records, and then, in the same run, on the same
topic:

- the **ceiling**: a bare kafka-python consumer with ``orjson.loads`` per
  record, CPU time measured in its own process;
- **infersight** end to end: ``infersight run`` as a subprocess (default
  policy, checkpoints every 10 s) from the first record to the last; records
  per wall second, CPU seconds per million records (its own CPU time, from
  /proc), the share of its CPU spent checkpointing, bytes written per
  checkpoint interval, and resident memory per model;
- **recovery**: the daemon is killed with ``kill -9`` in the middle of a
  second run with static membership (``--instance-id``), restarted with the
  same id, and the seconds until it processes records again are measured.

Writes bench/FLEET.md. The machine is shared and noisy: the ratio of
infersight to the ceiling, measured side by side, is the figure to read.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parent.parent
NUMERIC = [f"x{i:02d}" for i in range(16)]
CATEGORIES = {"country": ["us", "de", "fr", "br", "in", "jp"], "device": ["ios", "android", "web"]}
CLASSES = ["approve", "review", "deny"]
TICKS = os.sysconf("SC_CLK_TCK")


def records(models: int, per_model: int, seed: int = 0):
    """``(key, value)`` for ``per_model`` records of each model, round-robin."""
    rng = np.random.default_rng(seed)
    names = [f"model-{i:04d}" for i in range(models)]
    start = 1_780_000_000.0
    chunk = 500
    for lo in range(0, per_model, chunk):
        n = min(chunk, per_model - lo)
        x = rng.normal(size=(models, n, len(NUMERIC))).round(4)
        country = rng.integers(0, len(CATEGORIES["country"]), size=(models, n))
        device = rng.integers(0, len(CATEGORIES["device"]), size=(models, n))
        logits = rng.normal(size=(models, n, len(CLASSES)))
        p = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
        latency = rng.lognormal(3.0, 0.3, size=(models, n)).round(2)
        for i in range(n):
            for m, name in enumerate(names):
                k = int(p[m, i].argmax())
                yield name.encode(), orjson.dumps({
                    "model_id": name,
                    "timestamp": start + (lo + i) * 0.05,
                    "request_id": f"{name}-{lo + i}",
                    "features": {**dict(zip(NUMERIC, x[m, i].tolist())),
                                 "country": CATEGORIES["country"][country[m, i]],
                                 "device": CATEGORIES["device"][device[m, i]]},
                    "prediction": {"label": CLASSES[k], "score": float(p[m, i, k]),
                                   "probabilities": dict(zip(CLASSES, p[m, i].round(4).tolist()))},
                    "latency_ms": float(latency[m, i]),
                })


def fill_topic(bootstrap: str, topic: str, partitions: int, items) -> int:
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, batch_size=512 * 1024, acks=1)
    count = 0
    for key, value in items:
        producer.send(topic, key=key, value=value)
        count += 1
    producer.flush(timeout=300)
    producer.close()
    return count


CEILING = """
import sys, time, orjson
from kafka import KafkaConsumer
bootstrap, topic, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                         enable_auto_commit=False, max_poll_records=5000)
seen, cpu0 = 0, time.process_time()
while seen < expected:
    for batch in consumer.poll(timeout_ms=1000).values():
        for message in batch:
            orjson.loads(message.value)
        seen += len(batch)
print(seen, time.process_time() - cpu0)
"""


def ceiling(bootstrap: str, topic: str, expected: int) -> float:
    """Records per CPU second of a bare consume + ``orjson.loads``."""
    out = subprocess.run([sys.executable, "-c", CEILING, bootstrap, topic, str(expected)], capture_output=True,
                         text=True, check=True, timeout=3600).stdout.split()
    return int(out[0]) / float(out[1])


class Daemon:
    def __init__(self, workdir: Path, config: Path, *args: str):
        self.log_path = workdir / f"daemon-{uuid.uuid4().hex[:6]}.log"
        self._log = open(self.log_path, "wb")
        command = [sys.executable, "-m", "monitor.cli", "run", "--config", str(config),
                   "--metrics-port", "0", "--metrics-host", "127.0.0.1", *args]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)
        self.port = None
        deadline = time.monotonic() + 60
        while self.port is None:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"daemon did not start:\n{self.log_path.read_text()}")
            match = re.search(r"metrics on https?://[^:]+:(\d+)/metrics", self.log_path.read_text(errors="replace"))
            self.port = match and match.group(1)
            time.sleep(0.2)

    def metric_sum(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=30) as response:
            text = response.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") or line.startswith(name + " "))

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=120)
        self._log.close()


def run_fleet(args, models: int, workdir: Path) -> dict:
    topic = f"bench-fleet-{models}-{uuid.uuid4().hex[:6]}"
    per_model = args.reference_size + args.past_reference
    t0 = time.perf_counter()
    total = fill_topic(args.bootstrap_servers, topic, args.partitions, records(models, per_model))
    produce_seconds = time.perf_counter() - t0
    ceiling_rate = ceiling(args.bootstrap_servers, topic, total)

    config = workdir / f"fleet-{models}.yaml"
    config.write_text(
        f"kafka:\n  bootstrap_servers: {args.bootstrap_servers}\n  topic: {topic}\n  group_id: {topic}\n"
        f"  checkpoint_interval_seconds: 10\n"
        f"policy:\n  reference_size: {args.reference_size}\n"
        f"limits:\n  max_models: {max(models, 1000)}\nlog_level: WARNING\n"
    )
    daemon = Daemon(workdir, config)
    time.sleep(2)
    idle_rss = daemon.rss_bytes()
    cpu0, started = daemon.cpu_seconds(), time.perf_counter()
    while daemon.metric_sum("infersight_records_total") < total:
        if daemon.process.poll() is not None:
            raise RuntimeError(f"daemon exited:\n{daemon.log_path.read_text()[-3000:]}")
        time.sleep(0.5)
    seconds = time.perf_counter() - started
    cpu = daemon.cpu_seconds() - cpu0
    rss = daemon.rss_bytes()
    checkpoint_cpu = daemon.metric_sum("infersight_checkpoint_cpu_seconds_total")
    checkpoint_bytes = daemon.metric_sum("infersight_checkpoint_bytes_total")
    daemon.stop()
    intervals = max(1.0, seconds / 10.0)

    # recovery: kill -9 mid-stream under static membership, restart with the same id
    group = f"{topic}-recovery"
    config.write_text(config.read_text().replace(f"group_id: {topic}", f"group_id: {group}"))
    first = Daemon(workdir, config, "--instance-id", "bench-0")
    while first.metric_sum("infersight_records_total") < total * 0.3:
        time.sleep(0.5)
    time.sleep(args.kill_after_checkpoint)  # let a checkpoint land
    first.stop(signal.SIGKILL)
    killed = time.perf_counter()
    second = Daemon(workdir, config, "--instance-id", "bench-0")
    while second.metric_sum("infersight_records_total") == 0:
        if time.perf_counter() - killed > 300:
            break
        time.sleep(0.2)
    resume = time.perf_counter() - killed
    second.stop()
    return {
        "models": models, "records": total, "produce_s": produce_seconds, "ceiling": ceiling_rate,
        "rate": total / seconds, "cpu_per_m": cpu / total * 1e6, "rate_per_cpu": total / cpu,
        "checkpoint_share": checkpoint_cpu / cpu if cpu else 0.0, "bytes_per_interval": checkpoint_bytes / intervals,
        "rss_per_model": (rss - idle_rss) / models, "rss": rss, "resume_s": resume,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--models", default="10,100,1000", help="fleet sizes, comma-separated")
    parser.add_argument("--reference-size", type=int, default=1000, help="policy.reference_size (default 1000)")
    parser.add_argument("--past-reference", type=int, default=10_000, help="records per model after its reference")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--kill-after-checkpoint", type=float, default=12.0,
                        help="seconds between reaching 30%% of the stream and kill -9")
    parser.add_argument("--no-write", dest="write", action="store_false", help="do not update bench/FLEET.md")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for models in [int(m) for m in args.models.split(",")]:
            print(f"fleet of {models} models ...", flush=True)
            rows.append(run_fleet(args, models, Path(tmp)))
            print(rows[-1], flush=True)
    lines = [
        "# Fleet benchmark (bench/fleet.py)",
        "",
        f"{platform.python_implementation()} {platform.python_version()}, {time.strftime('%Y-%m-%d')}, the real local "
        f"broker; 16 numeric + 2 categorical features per model, `reference_size` {args.reference_size} "
        f"(a smaller reference than the default 5,000, to keep the run short) + {args.past_reference:,} records per "
        f"model, {args.partitions} partitions, default policy, checkpoints every 10 s. A noisy 2-core machine: "
        f"read the ratio, measured side by side.",
        "",
        "| models | records | ceiling (rec per CPU s) | infersight rec/s | infersight rec per CPU s | ratio | "
        "CPU s per M records | checkpoint share of CPU | bytes per checkpoint interval | RSS per model | "
        "resume after kill -9 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *[f"| {r['models']:,} | {r['records']:,} | {r['ceiling']:,.0f} | {r['rate']:,.0f} | {r['rate_per_cpu']:,.0f} | "
          f"{r['rate_per_cpu'] / r['ceiling']:.2f} | {r['cpu_per_m']:.1f} | {r['checkpoint_share']:.1%} | "
          f"{r['bytes_per_interval'] / 1e6:.2f} MB | {r['rss_per_model'] / 1024:.0f} kB | {r['resume_s']:.1f} s |"
          for r in rows],
        "",
        "Rerun: `make bench-fleet` (options: `python -m bench.fleet --help`).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        Path(__file__).with_name("FLEET.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
