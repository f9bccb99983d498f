"""``infersight replay``: Parquet and CSV inputs, delayed labels, the --json
timeline and the progress bar (monitor/source/files.py, monitor/cli.py)."""

from __future__ import annotations

import io
import json

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from monitor.cli import main
from monitor.source.files import LabelSchedule, Progress, RecordFile

SMALL = "policy: {reference_size: 1000, window_size: 500}\n"


@pytest.fixture(scope="module")
def drift_files(tmp_path_factory):
    """One simulated drift scenario as JSONL, nested Parquet and flat CSV, with its labels."""
    folder = tmp_path_factory.mktemp("replay")
    jsonl, labels = folder / "drift.jsonl", folder / "labels.jsonl"
    assert main(["simulate", "--scenario", "covariate_shift", "--feature", "f3", "--shift-at", "3000",
                 "--records", "6000", "--models", "2", "--output", str(jsonl), "--labels-output", str(labels),
                 "--seed", "11"]) == 0
    records = [orjson.loads(line) for line in jsonl.read_bytes().splitlines()]
    table = pa.Table.from_pylist(records)  # features and prediction become struct columns
    assert pa.types.is_struct(table.schema.field("features").type)
    pq.write_table(table, folder / "drift.parquet")
    flat = table
    while any(pa.types.is_struct(f.type) for f in flat.schema):
        flat = flat.flatten()  # features.f0, prediction.probabilities.deny, ... as pandas.json_normalize names them
    flat = flat.drop_columns([name for name in flat.column_names if pa.types.is_null(flat.schema.field(name).type)])
    pa_csv.write_csv(flat, folder / "drift.csv")
    config = folder / "small.yaml"
    config.write_text(SMALL)
    return {"jsonl": jsonl, "parquet": folder / "drift.parquet", "csv": folder / "drift.csv",
            "labels": labels, "config": config, "folder": folder}


def replay_json(capsys, *args) -> tuple[list[dict], str]:
    capsys.readouterr()
    assert main(["replay", *map(str, args), "--json"]) == 0
    captured = capsys.readouterr()
    return [json.loads(line) for line in captured.out.splitlines()], captured.err


def test_parquet_and_csv_give_the_jsonl_timeline(drift_files, capsys):
    timelines = {}
    for kind in ("jsonl", "parquet", "csv"):
        events, summary = replay_json(capsys, drift_files[kind], "--config", drift_files["config"])
        assert f"({kind}, batches of 1000)" in summary and "12000 records (0 rejected: none), 2 models" in summary
        timelines[kind] = events
    assert any(e["alert"] == "input_drift" and e["feature"] == "f3" for e in timelines["jsonl"])
    assert timelines["parquet"] == timelines["jsonl"]
    assert timelines["csv"] == timelines["jsonl"]


def test_json_timeline_is_the_human_timeline_as_events(drift_files, capsys):
    events, _ = replay_json(capsys, drift_files["jsonl"], "--config", drift_files["config"])
    assert main(["replay", str(drift_files["jsonl"]), "--config", str(drift_files["config"])]) == 0
    human = capsys.readouterr().out.splitlines()
    timeline = [line for line in human if " FIRING " in line or " RESOLVED " in line]
    assert len(timeline) == len(events) > 0
    for line, event in zip(timeline, events):
        assert line.startswith(event["at"]) and event["status"].upper() in line and event["alert"] in line
    assert set(events[0]) >= {"status", "model", "alert", "severity", "feature", "detector", "statistic",
                              "threshold", "since", "example_request_ids", "detail", "at"}


def test_labels_give_the_accuracy_alert_and_bad_label_lines_are_dead_lettered(drift_files, capsys, tmp_path):
    without, _ = replay_json(capsys, drift_files["jsonl"], "--config", drift_files["config"])
    assert not [e for e in without if e["alert"] == "performance_degraded"]
    labels = tmp_path / "labels.jsonl"
    lines = drift_files["labels"].read_bytes().splitlines()
    labels.write_bytes(b"\n".join(list(reversed(lines)) + [b'{"model_id": "credit-risk"}']) + b"\n")
    dead = tmp_path / "dead.jsonl"
    events, summary = replay_json(capsys, drift_files["jsonl"], "--config", drift_files["config"],
                                  "--labels", labels, "--dead-letters", dead)
    degraded = [e for e in events if e["alert"] == "performance_degraded"]
    assert [(e["model"], e["status"]) for e in degraded] == [("credit-risk", "firing")]  # the shifted model only
    assert "12001 labels (1 rejected: missing_field=1)" in summary
    [entry] = [json.loads(line) for line in dead.read_text().splitlines()]
    assert entry["labels_line"] == 12_001 and entry["reason"] == "missing_field"
    # the schedule orders labels by time, so a shuffled file gives the same timeline
    in_order, _ = replay_json(capsys, drift_files["jsonl"], "--config", drift_files["config"],
                              "--labels", drift_files["labels"])
    assert in_order == events


def record(request_id: str, at: float) -> bytes:
    return orjson.dumps({"model_id": "m", "request_id": request_id, "timestamp": at})


def label(request_id: str, at: float | None) -> bytes:
    message = {"model_id": "m", "request_id": request_id, "label": "a"}
    return orjson.dumps(message if at is None else {**message, "timestamp": at})


def test_a_label_comes_after_every_record_up_to_its_time_at_the_end_of_that_batch():
    schedule = LabelSchedule([
        label("r1", 10.0),    # due once the next batch starts after 10
        label("r2", 20.0),    # the next batch starts at 20: a record at 20 must come first
        label("r9", 99.0),    # later than every record: after the last batch
        label("r3", None),    # no time: after the batch of its own record
        label("nobody", None),
        b"not a label",
    ])
    assert [x.line for x in schedule.first()] == [6]
    batches = [[record("r0", 0.0), record("r1", 10.0)], [record("r2", 20.0), record("r3", 30.0)],
               [record("r4", 40.0)]]
    assert [x.line for x in schedule.after(batches[0], batches[1])] == [1]
    assert [x.line for x in schedule.after(batches[1], batches[2])] == [4, 2]
    assert [x.line for x in schedule.after(batches[2], None)] == [3, 5]
    assert schedule.after([], None) == []


def test_csv_and_parquet_details(tmp_path, capsys):
    csv_path = tmp_path / "odd.csv"
    csv_path.write_text(
        "model_id,timestamp,x,country,prediction\n"
        "0042,1767225600,1.5,fr,0.3\n"       # an id that looks like a number stays text
        "0042,1767225601,,de,0.4\n"           # an empty cell is a missing feature
        "0042,1767225602,NaN,de,0.4\n"        # so is NaN
        "0042,1767225603,inf,de,0.4\n"        # Infinity is rejected as in JSON
        "0042,2026-01-01T00:00:04,2.0,de,0.4\n"  # no UTC offset: rejected as in JSON
    )
    batches = list(RecordFile(csv_path, batch_size=10))
    assert [orjson.loads(raw) for raw in batches[0][:3]] == [
        {"model_id": "0042", "timestamp": 1767225600, "features": {"x": 1.5, "country": "fr"}, "prediction": 0.3},
        {"model_id": "0042", "timestamp": 1767225601, "features": {"country": "de"}, "prediction": 0.4},
        {"model_id": "0042", "timestamp": 1767225602, "features": {"country": "de"}, "prediction": 0.4},
    ]
    dead = tmp_path / "dead.jsonl"
    capsys.readouterr()
    assert main(["replay", str(csv_path), "--dead-letters", str(dead)]) == 0
    assert "5 records (2 rejected: invalid_value=2), 1 models" in capsys.readouterr().out
    assert [(e["row"], e["reason"]) for e in map(json.loads, dead.read_text().splitlines())] == [
        (4, "invalid_value"), (5, "invalid_value")]

    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    assert main(["replay", str(broken)]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_parquet_map_columns_are_objects(tmp_path):
    table = pa.table({
        "model_id": ["m"], "timestamp": [1.0],
        "features": pa.array([[("x", 1.0), ("y", 2.0)]], type=pa.map_(pa.string(), pa.float64())),
        "prediction": pa.array([{"label": "a", "probabilities": [("a", 0.75), ("b", 0.25)]}],
                               type=pa.struct([("label", pa.string()),
                                               ("probabilities", pa.map_(pa.string(), pa.float64()))])),
    })
    path = tmp_path / "m.parquet"
    pq.write_table(table, path)
    [[raw]] = list(RecordFile(path, batch_size=5))
    assert orjson.loads(raw) == {"model_id": "m", "timestamp": 1.0, "features": {"x": 1.0, "y": 2.0},
                                 "prediction": {"label": "a", "probabilities": {"a": 0.75, "b": 0.25}}}


class FakeTerminal(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_shows_only_on_a_terminal_after_a_few_seconds():
    now = [0.0]
    terminal = FakeTerminal(tty=True)
    progress = Progress(total=1000, stream=terminal, delay=3.0, clock=lambda: now[0])
    now[0] = 1.0
    progress.update(100, 5000)
    assert terminal.getvalue() == "", "a short run draws nothing"
    now[0] = 4.0
    progress.update(400, 20_000)
    drawn = terminal.getvalue()
    assert drawn.startswith("\r[############------------------]  40%") and "20,000 records" in drawn
    assert "5,000/s" in drawn and "ETA 0:06" in drawn
    progress.clear()
    assert terminal.getvalue().endswith("\r\033[K") and not progress.drawn

    piped = FakeTerminal(tty=False)
    progress = Progress(total=1000, stream=piped, delay=0.0, clock=lambda: now[0])
    now[0] = 100.0
    progress.update(500, 1)
    progress.clear()
    assert piped.getvalue() == "", "no bar into a pipe or a file"
