"""``infersight``: the command line.

Subcommands: ``run`` (the Kafka daemon), ``replay`` (the same pipeline over a
JSONL, Parquet or CSV file), ``ingest`` (KServe logger CloudEvents over HTTP to
Kafka), ``simulate`` (traffic to Kafka or a file), ``check-config``,
``score-series`` (the standalone anomaly / change-point scorer), and for signed
approvals ``digest``, ``approve`` and ``verify-approval``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from monitor.config import ConfigError, Settings, load_settings

EXIT_USAGE = 2

log = logging.getLogger("infersight")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stderr,
    )
    # kafka-python logs every reconnect attempt at WARNING/ERROR with a
    # traceback; the daemon reports connection state itself, once per attempt.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


def _load(args: argparse.Namespace, overrides: dict) -> Settings:
    try:
        return load_settings(args.config, overrides)
    except ConfigError as exc:
        print(f"infersight: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


# -- run ----------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from monitor.source.daemon import Daemon
    from monitor.export.metrics import InfersightCollector, RuntimeStatus
    from monitor.export.metrics_server import start_metrics_server
    from monitor.engine.pipeline import Pipeline

    settings = _load(
        args,
        {
            "kafka": {"bootstrap_servers": args.bootstrap_servers, "topic": args.topic, "group_id": args.group_id,
                      "group_instance_id": args.instance_id, "input_format": args.input_format},
            "metrics": {"port": args.metrics_port, "host": args.metrics_host},
        },
    )
    _setup_logging(args.log_level or settings.log_level)
    pipeline = Pipeline(settings)
    runtime = RuntimeStatus()
    registry = CollectorRegistry()
    registry.register(InfersightCollector(pipeline, runtime))
    m = settings.metrics
    try:
        server = start_metrics_server(
            registry,
            m.host,
            m.port,
            tls_cert_file=m.tls_cert_file,
            tls_key_file=m.tls_key_file,
            basic_auth_users=m.basic_auth_users,
        )
    except OSError as exc:
        print(f"infersight: cannot serve metrics on {m.host}:{m.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    log.info("metrics on %s://%s:%d/metrics", "https" if m.tls_cert_file else "http", m.host, server.port)
    daemon = Daemon(settings, pipeline, runtime)
    daemon.install_signal_handlers()
    try:
        return daemon.run()
    finally:
        server.shutdown()


# -- replay -------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    from collections import Counter

    import orjson

    from monitor.engine.pipeline import Pipeline
    from monitor.source.files import LabelSchedule, Progress, RecordFile

    # labels are tracked when a labels topic is configured; replay's is the file
    settings = _load(args, {"kafka": {"labels_topic": "replay-labels" if args.labels else None}})
    _setup_logging(args.log_level or "ERROR")
    path = Path(args.file)
    for given in (path, Path(args.labels) if args.labels else None):
        if given is not None and not given.is_file():
            print(f"infersight: no such file: {given}", file=sys.stderr)
            return EXIT_USAGE
    records = RecordFile(path, args.batch_size, args.format)
    labels = LabelSchedule.from_file(Path(args.labels)) if args.labels else None
    pipeline = Pipeline(settings)
    # --json: stdout is only the timeline, one alert event per line
    human = sys.stderr if args.json else sys.stdout
    progress = Progress(records.total)
    n_labels = len(labels) if labels is not None else 0
    record_reasons, label_reasons = Counter(), Counter()
    n_read = n_events = 0
    started = time.perf_counter()
    print(f"replaying {path} ({records.format}, batches of {args.batch_size}"
          + (f", {n_labels} labels from {args.labels})" if labels else ")"), file=human)

    def run(raws: list[bytes], first_position: int, label_batch: list) -> None:
        nonlocal n_events
        outcome = pipeline.process(raws, label_raws=[label.raw for label in label_batch])
        record_reasons.update(reject.reason for reject in outcome.rejects)
        label_reasons.update(reject.reason for reject in outcome.label_rejects)
        for reject in outcome.rejects:
            dead_letter({records.position_name: first_position + reject.index}, reject)
        for reject in outcome.label_rejects:
            dead_letter({"labels_line": label_batch[reject.index].line}, reject)
        if outcome.events:
            progress.clear()
        for event in outcome.events:
            n_events += 1
            print(orjson.dumps(event.to_dict()).decode() if args.json else format_event(event), flush=args.json)

    def dead_letter(where: dict, reject) -> None:
        entry = {**where, "reason": reject.reason, "detail": reject.detail, "raw": reject.raw.decode("utf-8", "replace")}
        dead_letters.write(orjson.dumps(entry) + b"\n")

    try:
        with open(args.dead_letters or "/dev/null", "wb") as dead_letters:
            if labels is not None and (invalid := labels.first()):
                run([], 0, invalid)
            batches = iter(records)
            raws = next(batches, None)
            while raws is not None:
                following = next(batches, None)  # one batch ahead: labels are due once the next batch is later
                run(raws, n_read + 1, labels.after(raws, following) if labels is not None else [])
                n_read += len(raws)
                progress.update(records.done, n_read, records.total)
                raws = following
            if labels is not None and (rest := labels.after([], None)):  # an empty records file
                run([], n_read + 1, rest)
    except (OSError, ValueError) as exc:  # an unreadable Parquet/CSV file (pyarrow's errors are ValueErrors)
        progress.clear()
        print(f"infersight: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    progress.clear()
    seconds = time.perf_counter() - started
    def rejected(reasons: Counter) -> str:
        return f"{sum(reasons.values())} rejected: " + (", ".join(f"{r}={c}" for r, c in sorted(reasons.items())) or "none")

    label_summary = f"{n_labels} labels ({rejected(label_reasons)}), " if labels is not None else ""
    print(
        f"{n_read} records ({rejected(record_reasons)}), {len(pipeline.monitors)} models, {label_summary}"
        f"{n_events} alert events, {n_read / max(seconds, 1e-9):,.0f} records/s",
        file=human,
    )
    return 0


def format_event(event) -> str:
    """One timeline line for an alert event."""
    where = f"{event.model}/{event.feature}" if event.feature else event.model
    examples = f"  e.g. {', '.join(event.example_request_ids[:3])}" if event.example_request_ids else ""
    return (
        f"{event.at}  {event.status.upper():8s} {event.alert:13s} {where:28s} "
        f"{event.detector} {event.statistic:.4g} (threshold {event.threshold:.4g})  since {event.since}"
        f"  {event.detail}{examples}"
    )


# -- ingest -------------------------------------------------------------------


def cmd_ingest(args: argparse.Namespace) -> int:
    import signal
    import threading

    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from monitor.source.ingest import IngestServer, KafkaSink
    from monitor.wire.kserve import KServeJoin

    settings = _load(args, {"kafka": {"bootstrap_servers": args.bootstrap_servers, "topic": args.topic}})
    _setup_logging(args.log_level or settings.log_level)
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit() or args.buffer < 1:
        print(f"infersight ingest: --listen must be HOST:PORT and --buffer >= 1 (got {args.listen!r}, {args.buffer})",
              file=sys.stderr)
        return EXIT_USAGE
    kafka = settings.kafka
    try:
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, client_id="infersight-ingest", acks="all",
                                 linger_ms=20, max_block_ms=5000, bootstrap_timeout_ms=10000)
    except KafkaError as exc:
        print(f"infersight ingest: Kafka at {kafka.bootstrap_servers} unreachable ({type(exc).__name__})", file=sys.stderr)
        return 1
    stopping = threading.Event()
    sink = KafkaSink(producer, kafka.topic, kafka.dead_letter_topic, stopping)
    try:
        server = IngestServer(KServeJoin.from_settings(settings), sink, host.strip("[]"), int(port), args.buffer)
    except OSError as exc:
        sink.close()
        print(f"infersight ingest: cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    server.start()
    bound_host, bound_port = server.address
    log.info("listening on http://%s:%d for KServe logger CloudEvents; records -> %s, dead letters -> %s",
             bound_host, bound_port, kafka.topic, kafka.dead_letter_topic)
    stopping.wait()
    log.info("stopping: draining %d buffered events", server.stats()["buffered"])
    server.stop()
    stats = server.stats()
    log.info("stopped: %d events, %d records, %d malformed, %d refused (503), unmatched %s, %d sends failed",
             stats.get("events", 0), stats.get("records", 0), stats.get("malformed", 0), stats.get("busy", 0),
             stats["unmatched"], sink.failed)
    return 0


# -- simulate -----------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace) -> int:
    from monitor.tools.simulate import START_TIME, Scenario, generate_records, with_labels

    if args.scenario in TAMPER_SCENARIOS:
        return _simulate_tamper(args)
    try:
        scenario = Scenario(
            name=args.scenario,
            feature=args.feature,
            magnitude=args.magnitude,
            shift_at=args.shift_at,
            ramp=args.ramp,
            target_model=args.target_model,
        )
    except ValueError as exc:
        print(f"infersight simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # live traffic carries the current time; a file is reproducible byte for byte
    start_time = args.start_time if args.start_time is not None else (START_TIME if args.output else time.time())
    stream = with_labels(
        generate_records(args.models, args.records, scenario, args.seed, start_time=start_time,
                         records_per_second=args.rate / args.models if args.rate else 20.0),
        scenario,
        args.models,
    )
    if args.output:
        counts = {"record": 0, "label": 0}
        with open(args.output, "wb") as out, open(args.labels_output or "/dev/null", "wb") as labels_out:
            for kind, _, value in stream:
                (out if kind == "record" else labels_out).write(value + b"\n")
                counts[kind] += 1
        print(f"wrote {counts['record']} records to {args.output}"
              + (f" and {counts['label']} labels to {args.labels_output}" if args.labels_output else ""))
        return 0
    return _produce(args, stream)


#: scenarios built from real (scikit-learn) models, in monitor/tools/poisoned.py
TAMPER_SCENARIOS = ("digits-backdoor", "digits-clean", "digits-swap", "malware-suppression")


def _simulate_tamper(args: argparse.Namespace) -> int:
    import orjson

    try:
        from monitor.tools.poisoned import scenario_records
        records = scenario_records(args.scenario, args.records, seed=args.seed)
    except ImportError as exc:
        print(f"infersight simulate: {args.scenario} trains a real model and needs scikit-learn "
              f"(pip install 'infersight[scenarios]'): {exc}", file=sys.stderr)
        return 1
    stream = (("record", r["model_id"], orjson.dumps(r)) for r in records)
    if args.output:
        with open(args.output, "wb") as out:
            count = sum(out.write(value + b"\n") > 0 for _, _, value in stream)
        print(f"wrote {count} records to {args.output}")
        return 0
    return _produce(args, stream)


def _produce(args: argparse.Namespace, stream) -> int:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    _setup_logging("WARNING")
    try:
        producer = KafkaProducer(
            bootstrap_servers=args.bootstrap_servers, linger_ms=20, acks="all", bootstrap_timeout_ms=10000
        )
    except KafkaError as exc:
        print(f"infersight simulate: Kafka at {args.bootstrap_servers} unreachable ({type(exc).__name__})", file=sys.stderr)
        return 1
    started = time.monotonic()
    count = 0
    for kind, model_id, value in stream:
        if kind == "label":
            if args.labels_topic:
                producer.send(args.labels_topic, value=value, key=model_id.encode())
            continue
        producer.send(args.topic, value=value, key=model_id.encode())
        count += 1
        if args.rate and count % 100 == 0:
            ahead = count / args.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    producer.flush(timeout=60)
    producer.close()
    print(f"produced {count} records to {args.topic} in {time.monotonic() - started:.1f} s")
    return 0


# -- check-config, score-series -----------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.file)
    except ConfigError as exc:
        print(f"infersight: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.show:
        import yaml

        print(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False), end="")
    print(f"{args.file}: OK", file=sys.stderr)
    return 0


def cmd_score_series(args: argparse.Namespace) -> int:
    from monitor.tools.score_series import run

    return run(args)


# -- digest, approve, verify-approval -------------------------------------------


def cmd_digest(args: argparse.Namespace) -> int:
    from monitor.engine.approvals import artifact_digest

    status = 0
    for path in args.paths:
        if not Path(path).exists():
            print(f"infersight: no such file or directory: {path}", file=sys.stderr)
            status = EXIT_USAGE
            continue
        try:
            print(f"{artifact_digest(path)}  {path}" if len(args.paths) > 1 else artifact_digest(path))
        except (OSError, ValueError) as exc:
            print(f"infersight: {path}: {exc}", file=sys.stderr)
            status = 1
    return status


def cmd_approve(args: argparse.Namespace) -> int:
    import os

    import orjson

    from monitor.engine.approvals import sign_approval

    for path in args.model_path:
        if not Path(path).exists():
            print(f"infersight: no such file or directory: {path}", file=sys.stderr)
            return EXIT_USAGE
    if args.publish and not args.topic:
        print("infersight: --publish needs --topic (the daemon's integrity.registry_topic)", file=sys.stderr)
        return EXIT_USAGE
    password = os.environ.get(args.password_env) if args.password_env else None
    try:
        approval = sign_approval(args.model_id, args.model_path, args.key, password=password)
    except (OSError, ValueError, TypeError) as exc:
        print(f"infersight: cannot sign with {args.key}: {exc}", file=sys.stderr)
        return 1
    body = orjson.dumps(approval, option=orjson.OPT_INDENT_2)
    if args.output:
        Path(args.output).write_bytes(body + b"\n")
    elif not args.publish:
        sys.stdout.write(body.decode() + "\n")
    signer = approval["signatures"][0]["verificationMaterial"]["publicKey"]["hint"][:16]
    for digest, path in zip(approval["digests"], args.model_path):
        print(f"approved {digest} ({path}) for model {args.model_id}, signed by key {signer}", file=sys.stderr)
    if args.publish:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        try:
            producer = KafkaProducer(bootstrap_servers=args.bootstrap_servers, acks="all", bootstrap_timeout_ms=10000,
                                     max_request_size=4 * 1024 * 1024)
            producer.send(args.topic, key=args.model_id.encode(), value=orjson.dumps(approval)).get(timeout=30)
            producer.close()
        except KafkaError as exc:
            print(f"infersight: not published to {args.topic}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(f"published to {args.topic} (key {args.model_id})", file=sys.stderr)
    return 0


def cmd_verify_approval(args: argparse.Namespace) -> int:
    import orjson

    from monitor.engine.approvals import ApprovalGate, TrustedKeys, artifact_digest

    key_paths = list(args.trusted_key or [])
    if args.config:
        key_paths += _load(args, {}).integrity.trusted_keys
    if not key_paths:
        print("infersight: no trusted key: give --trusted-key PEM or --config with integrity.trusted_keys",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        trusted = TrustedKeys.load(key_paths)
        raw = Path(args.file).read_bytes()
    except (OSError, ValueError) as exc:
        print(f"infersight: {exc}", file=sys.stderr)
        return EXIT_USAGE
    model_id = args.model_id
    if model_id is None:
        try:
            model_id = orjson.loads(raw).get("model_id")
        except (orjson.JSONDecodeError, AttributeError):
            model_id = None
    if not isinstance(model_id, str):
        print("infersight: the approval names no model_id; give --model-id", file=sys.stderr)
        return EXIT_USAGE
    decision = ApprovalGate(trusted, require_signed=True).review(model_id, raw)
    if decision.rejection is not None:
        print(f"REJECTED ({decision.rejection.reason}): model {model_id}: {decision.rejection.detail}")
        return 1
    for digest in decision.digests:
        print(f"OK: model {model_id} may serve {digest}, signed by key {decision.signers[digest]}")
    if args.model_path:
        served = artifact_digest(args.model_path)
        if served not in decision.digests:
            print(f"MISMATCH: {args.model_path} has digest {served}, which this approval does not approve")
            return 1
        print(f"OK: {args.model_path} is {served}")
    return 0


# -- parser -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infersight",
        description="Behavioral monitoring for deployed ML models: reads inference logs from Kafka, "
        "runs drift, anomaly and tamper detectors per model, exports Prometheus metrics and alerts.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the monitoring daemon on a Kafka topic",
                         description="Consume inference logs from Kafka and monitor every model in them. "
                         "Flags override the config file; the config file overrides the defaults.")
    run.add_argument("--config", metavar="FILE", help="YAML config file (see README: config reference)")
    run.add_argument("--bootstrap-servers", metavar="HOST:PORT[,...]", help="Kafka brokers (default localhost:9092)")
    run.add_argument("--topic", help="inference-log topic (default inference-logs)")
    run.add_argument("--group-id", help="consumer group (default infersight)")
    run.add_argument("--instance-id", metavar="ID",
                     help="static group membership, unique per daemon and stable across restarts (e.g. the pod "
                     "name): a restarted daemon gets its partitions back at once, not after the session timeout")
    run.add_argument("--metrics-port", type=int, metavar="PORT", help="Prometheus /metrics port (default 9108; 0 = any free)")
    run.add_argument("--metrics-host", metavar="ADDR", help="address to serve /metrics on (default 0.0.0.0)")
    run.add_argument("--input-format", choices=["infersight", "kserve"],
                     help="infersight: wire schema v1 (default); kserve: KServe logger CloudEvents (README: KServe)")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.set_defaults(func=cmd_run)

    replay = sub.add_parser("replay", help="run the pipeline over a JSONL, Parquet or CSV file and print the alert timeline",
                            description="Backtest: feed a file of inference records through the same "
                            "decode/route/detect/alert pipeline as the daemon (README: Replay a file).")
    replay.add_argument("file", help="wire-schema v1 records: JSONL (one object per line), .parquet or .csv")
    replay.add_argument("--format", choices=["jsonl", "parquet", "csv"], help="default: from the file name's extension")
    replay.add_argument("--labels", metavar="FILE", help="JSONL label messages {model_id, request_id, label, timestamp}, "
                        "each delivered after the records whose event time is <= its timestamp")
    replay.add_argument("--json", action="store_true", help="print the timeline as one JSON alert event per line "
                        "(the summary goes to stderr)")
    replay.add_argument("--config", metavar="FILE", help="YAML config file")
    replay.add_argument("--batch-size", type=int, default=1000, help="records per batch (default 1000)")
    replay.add_argument("--dead-letters", metavar="FILE", help="write rejected lines with their reason to this JSONL file")
    replay.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    replay.set_defaults(func=cmd_replay)

    ingest = sub.add_parser("ingest", help="receive KServe logger CloudEvents over HTTP and produce records to Kafka",
                            description="An HTTP CloudEvents receiver (what an InferenceService's logger.url points "
                            "at): joins each request with its response and produces one wire-schema record per row "
                            "to Kafka, keyed by model id. 503 when its buffer is full.")
    ingest.add_argument("--listen", required=True, metavar="HOST:PORT", help="address to serve on (port 0 = any free)")
    ingest.add_argument("--topic", help="Kafka topic for the records (default: kafka.topic); dead letters go to <topic>.dlq")
    ingest.add_argument("--bootstrap-servers", metavar="HOST:PORT[,...]", help="Kafka brokers (default localhost:9092)")
    ingest.add_argument("--buffer", type=int, default=1000, metavar="EVENTS",
                        help="events held between HTTP and Kafka; beyond, POSTs get 503 (default 1000)")
    ingest.add_argument("--config", metavar="FILE", help="YAML config file (kafka, kserve and limits sections)")
    ingest.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    ingest.set_defaults(func=cmd_ingest)

    sim = sub.add_parser("simulate", help="produce simulated inference traffic to Kafka or a file",
                         description="Realistic inference traffic for several models, seedable. "
                         "Scenarios change the first model (or --target-model) from record --shift-at on.")
    sim.add_argument("--scenario", default="stable",
                     help="synthetic models: stable | covariate_shift | gradual_drift | class_concentration; "
                     "real scikit-learn models (docs/threats.md): digits-backdoor (trigger on 3%% of requests "
                     "from record 3000) | digits-clean | digits-swap (unapproved model from 4000) | "
                     "malware-suppression (family=emotet stops being flagged from 4000)")
    sim.add_argument("--models", type=int, default=3, help="number of synthetic models (default 3)")
    sim.add_argument("--records", type=int, default=10_000, help="records per model (default 10000)")
    sim.add_argument("--shift-at", type=int, default=5000, help="record of the target model where the change starts")
    sim.add_argument("--feature", default="f3", help="feature that shifts (f0..f7, default f3)")
    sim.add_argument("--magnitude", type=float, default=1.0, help="shift in standard deviations (default 1.0)")
    sim.add_argument("--ramp", type=int, default=5000, help="records over which gradual_drift ramps in")
    sim.add_argument("--target-model", help="model that changes (default: the first)")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--start-time", type=float, metavar="EPOCH",
                     help="event time of the first record (default: now for Kafka, 2026-01-01 for --output)")
    sim.add_argument("--output", metavar="FILE", help="write JSONL here instead of producing to Kafka")
    sim.add_argument("--bootstrap-servers", default="localhost:9092")
    sim.add_argument("--topic", default="inference-logs")
    sim.add_argument("--labels-topic", metavar="TOPIC", help="also produce delayed ground-truth labels to this topic")
    sim.add_argument("--labels-output", metavar="FILE", help="with --output: write the labels to this JSONL file")
    sim.add_argument("--rate", type=float, default=0, help="records per second (default 0 = as fast as possible)")
    sim.set_defaults(func=cmd_simulate)

    check = sub.add_parser("check-config", help="validate a config file and explain what is wrong")
    check.add_argument("file")
    check.add_argument("--show", action="store_true", help="print the effective configuration")
    check.set_defaults(func=cmd_check_config)

    score = sub.add_parser("score-series", help="online anomaly score and change points for a timestamp,value CSV",
                           description="Reads IN.csv (timestamp,value rows), writes OUT.csv with anomaly_score "
                           "in [0, 1] and change_point (0/1), each computed only from the rows up to it.")
    from monitor.tools.score_series import add_arguments as score_series_arguments

    score_series_arguments(score)
    score.set_defaults(func=cmd_score_series)

    digest = sub.add_parser("digest", help="print the artifact_digest a serving process logs for a model",
                            description="sha256:<hex> of a model file, or for a model directory the model-signing "
                            "manifest digest (sha256 over its files' sha256 digests in path order): the digest a "
                            "signed approval names and a serving process must put in artifact_digest.")
    digest.add_argument("paths", nargs="+", metavar="PATH", help="model file or directory")
    digest.set_defaults(func=cmd_digest)

    approve = sub.add_parser("approve", help="sign an approval of a model's artifact (release team)",
                             description="Sign the model files at --model-path with a private key (model-signing, "
                             "ECDSA PEM) as an approval for MODEL_ID; write it (stdout or --output) and optionally "
                             "publish it to the daemon's registry topic.")
    approve.add_argument("model_id")
    approve.add_argument("--model-path", action="append", required=True, metavar="PATH",
                         help="model file or directory to approve (repeat for several artifacts)")
    approve.add_argument("--key", required=True, metavar="PEM", help="private key (EC P-256/384/521, PEM)")
    approve.add_argument("--password-env", metavar="VAR", help="environment variable holding the key's password")
    approve.add_argument("--output", metavar="FILE", help="write the approval here (default: stdout)")
    approve.add_argument("--publish", action="store_true", help="also publish it to --topic, key MODEL_ID")
    approve.add_argument("--topic", help="the registry topic (integrity.registry_topic)")
    approve.add_argument("--bootstrap-servers", default="localhost:9092")
    approve.set_defaults(func=cmd_approve)

    verify = sub.add_parser("verify-approval", help="check a signed approval offline",
                            description="Verify an approval file against trusted public keys, as the daemon does "
                            "with require_signed_approvals on. Exit 0 if it counts, 1 if refused (with the reason).")
    verify.add_argument("file", help="approval JSON (as written by `infersight approve`)")
    verify.add_argument("--trusted-key", action="append", metavar="PEM", help="trusted public key (repeatable)")
    verify.add_argument("--config", metavar="FILE", help="take integrity.trusted_keys from this config")
    verify.add_argument("--model-id", help="the model it must approve (default: the file's model_id)")
    verify.add_argument("--model-path", metavar="PATH", help="also check these model files are what it approves")
    verify.set_defaults(func=cmd_verify_approval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
