"""Files for ``infersight replay``: records (JSONL, Parquet, CSV), delayed
labels, and a progress bar.

Every input becomes what the daemon would have read from Kafka: one
wire-schema v1 JSON message per record, so replay runs the same decoding and
validation, and a bad row is dead-lettered with the same reason.

Parquet and CSV columns map onto the wire schema by name: ``model_id``,
``timestamp``, ``request_id``, ``model_version``, ``artifact_digest``,
``latency_ms`` and ``prediction`` are those fields; ``prediction.label``,
``prediction.score``, ``prediction.probabilities.<class>``, ``features.<name>``
and ``tags.<key>`` fill the nested ones (what ``pandas.json_normalize`` makes
of wire records); struct columns (Parquet) are read the same way as their
dotted names, map columns as objects; every other column is a feature. An
empty cell or NaN is a missing value; ±Infinity is rejected like in JSON.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import msgspec
import orjson

from monitor.wire.schema import parse_timestamp

FORMATS = ("jsonl", "parquet", "csv")
_TOP_LEVEL = ("model_id", "timestamp", "request_id", "model_version", "artifact_digest", "latency_ms", "prediction")
_NESTED = ("features", "prediction", "tags")
# read as text even when every value looks like a number: an id "0042" stays "0042"
_TEXT_COLUMNS = ("model_id", "request_id", "model_version", "artifact_digest")


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".csv", ".tsv"):
        return "csv"
    return "jsonl"


class RecordFile:
    """Batches of wire-schema messages from a file, with where each came from
    (``line`` of a JSONL file, 1-based data ``row`` of a table) and how far
    through the file the reading is (:attr:`done` of :attr:`total`)."""

    def __init__(self, path: Path, batch_size: int, file_format: str | None = None):
        self.path = path
        self.batch_size = batch_size
        self.format = file_format or detect_format(path)
        self.position_name = "line" if self.format == "jsonl" else "row"
        self.done = 0
        self.total = path.stat().st_size if self.format == "jsonl" else 0

    def __iter__(self) -> Iterator[list[bytes]]:
        if self.format == "jsonl":
            return self._jsonl()
        return self._exact(self._parquet() if self.format == "parquet" else self._csv())

    def _exact(self, batches: Iterator[list[bytes]]) -> Iterator[list[bytes]]:
        # pyarrow cuts where its row groups and blocks end; replay keeps the
        # requested batch size, so a Parquet, CSV or JSONL copy of the same
        # records is processed in the same batches
        pending: list[bytes] = []
        for raws in batches:
            pending.extend(raws)
            while len(pending) >= self.batch_size:
                yield pending[:self.batch_size]
                del pending[:self.batch_size]
        if pending:
            yield pending

    def _jsonl(self) -> Iterator[list[bytes]]:
        with self.path.open("rb") as source:
            while lines := [line.rstrip(b"\r\n") for _, line in zip(range(self.batch_size), source)]:
                self.done = source.tell()
                yield lines

    def _parquet(self) -> Iterator[list[bytes]]:
        import pyarrow.parquet as pq

        with pq.ParquetFile(self.path) as table:
            self.total = table.metadata.num_rows
            for batch in table.iter_batches(batch_size=self.batch_size):
                self.done += batch.num_rows
                yield table_to_wire(batch)

    def _csv(self) -> Iterator[list[bytes]]:
        import pyarrow as pa
        from pyarrow import csv

        # read whole: a column's type is inferred from all its values, so a
        # float after many integers does not fail the way block-wise reading does
        header = self._header()
        table = csv.read_csv(
            self.path,
            parse_options=self._parse_options(),
            convert_options=csv.ConvertOptions(
                column_types={name: pa.string() for name in header if name in _TEXT_COLUMNS or name.startswith("tags.")},
                strings_can_be_null=True,
            ),
        )
        self.total = table.num_rows
        for batch in table.to_batches(max_chunksize=self.batch_size):
            self.done += batch.num_rows
            yield table_to_wire(batch)

    def _delimiter(self) -> str:
        return "\t" if self.path.suffix.lower() == ".tsv" else ","

    def _parse_options(self):
        from pyarrow import csv

        return csv.ParseOptions(delimiter=self._delimiter())

    def _header(self) -> list[str]:
        import csv

        with self.path.open(newline="", encoding="utf-8-sig") as f:
            return next(csv.reader(f, delimiter=self._delimiter()), [])


def table_to_wire(batch) -> list[bytes]:
    """A pyarrow RecordBatch or Table -> one wire-schema JSON message per row.

    >>> import pyarrow as pa
    >>> table = pa.table({"model_id": ["m"], "timestamp": [1.5], "x": [2.0], "features.c": ["fr"],
    ...                   "prediction.label": ["cat"], "prediction.probabilities.cat": [0.9]})
    >>> table_to_wire(table)
    [b'{"model_id":"m","timestamp":1.5,"features":{"x":2.0,"c":"fr"},"prediction":{"label":"cat","probabilities":{"cat":0.9}}}']
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    while any(pa.types.is_struct(field.type) for field in table.schema):
        table = table.flatten()  # struct column "features" -> "features.x", ...
    # (path into the wire record, values) per column
    columns: list[tuple[tuple[str, ...], list]] = []
    for name, column in zip(table.column_names, table.columns):
        values = column.to_pylist()
        if name == "timestamp" and pa.types.is_string(column.type):
            values = [_epoch_or_text(v) for v in values]  # a CSV column mixing epoch seconds and RFC 3339
        columns.append((_wire_path(name), values))
    infinite = None
    for column in table.columns:
        if pa.types.is_floating(column.type):
            flags = pc.fill_null(pc.is_inf(column), False)
            infinite = flags if infinite is None else pc.or_(infinite, flags)
    infinite_rows = set(pc.indices_nonzero(infinite).to_pylist()) if infinite is not None else set()

    out = []
    for i in range(table.num_rows):
        record: dict[str, Any] = {}
        for path, values in columns:
            value = values[i]
            if value is None or (type(value) is float and math.isnan(value)):
                continue  # missing
            if type(value) is list and path[-1] in ("features", "tags", "probabilities"):
                value = dict(value)  # a map column: [(key, value), ...]
            target = record
            for key in path[:-1]:
                target = target.setdefault(key, {})
                if not isinstance(target, dict):
                    break  # "prediction" given both as a value and as parts: the value wins
            else:
                target[path[-1]] = value
        if i in infinite_rows:
            # orjson writes Infinity as null; the stdlib writes it out, so the
            # schema rejects the row (invalid_value) as it would in JSON
            out.append(json.dumps(record, default=_json_default).encode())
        else:
            out.append(orjson.dumps(record, default=_json_default))
    return out


def _wire_path(column: str) -> tuple[str, ...]:
    head, _, rest = column.partition(".")
    if column in _TOP_LEVEL or column in _NESTED:
        return (column,)
    if head == "prediction" and rest:
        sub, _, cls = rest.partition(".")
        return ("prediction", "probabilities", cls) if sub == "probabilities" and cls else ("prediction", rest)
    if head in ("features", "tags") and rest:
        return (head, rest)
    return ("features", column)


def _epoch_or_text(value: str | None) -> float | str | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return value


def _json_default(value):
    if isinstance(value, Decimal):
        return float(value)
    if hasattr(value, "isoformat"):  # datetime for the stdlib path (orjson writes them itself)
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a wire-schema value")


# -- labels -------------------------------------------------------------------


class _Stamp(msgspec.Struct):
    model_id: Any = None
    request_id: Any = None
    timestamp: Any = None


_stamp_decoder = msgspec.json.Decoder(_Stamp)


def _stamp(raw: bytes) -> _Stamp | None:
    try:
        stamp = _stamp_decoder.decode(raw)
    except msgspec.MsgspecError:
        return None
    if isinstance(stamp.timestamp, (str, int, float)) and not isinstance(stamp.timestamp, bool):
        try:
            stamp.timestamp = parse_timestamp(stamp.timestamp)
        except Exception:  # noqa: BLE001 - the schema's own error type; the pipeline reports it
            stamp.timestamp = None
    else:
        stamp.timestamp = None
    return stamp


@dataclass(slots=True)
class Label:
    line: int  # in the labels file, for dead letters
    raw: bytes


class LabelSchedule:
    """Delivers labels the way the daemon meets them: a label polled from the
    labels topic is joined after the poll batch of records it came with. So a
    label goes after the batch of records in which its timestamp is reached:
    after every record whose event time is <= its timestamp (records in event
    time order, as a log is), at the end of that batch. A label without a
    timestamp goes after the batch holding its own record (same ``model_id``
    and ``request_id``); whatever is left comes after the last batch. Lines
    that are not labels at all come first, so that they are dead-lettered.

    >>> schedule = LabelSchedule([b'{"model_id": "m", "request_id": "r1", "label": 1, "timestamp": 15}',
    ...                           b'{"model_id": "m", "request_id": "r0", "label": 0}'])
    >>> batch = lambda *ts: [b'{"model_id": "m", "request_id": "r%d", "timestamp": %d}' % (t, t) for t in ts]
    >>> [label.line for label in schedule.after(batch(0, 10), next_batch=batch(20, 30))]
    [2, 1]
    >>> schedule.after(batch(20, 30), next_batch=None)
    []
    """

    def __init__(self, lines: list[bytes]):
        self.timed: list[tuple[float, Label]] = []
        self.untimed: dict[tuple[Any, Any], list[Label]] = {}
        self.invalid: list[Label] = []
        for number, raw in enumerate(lines, 1):
            label = Label(number, raw)
            stamp = _stamp(raw)
            if stamp is None or not isinstance(stamp.model_id, str) or not isinstance(stamp.request_id, str):
                self.invalid.append(label)
            elif stamp.timestamp is not None:
                self.timed.append((stamp.timestamp, label))
            else:
                self.untimed.setdefault((stamp.model_id, stamp.request_id), []).append(label)
        self.timed.sort(key=lambda item: item[0])  # stable: file order among equal times
        self._next = 0

    @classmethod
    def from_file(cls, path: Path) -> LabelSchedule:
        with path.open("rb") as f:
            return cls([line.rstrip(b"\r\n") for line in f if line.strip()])

    def __len__(self) -> int:
        return len(self.timed) + sum(map(len, self.untimed.values())) + len(self.invalid)

    def first(self) -> list[Label]:
        """Lines that are not labels: delivered before any record."""
        invalid, self.invalid = self.invalid, []
        return invalid

    def after(self, batch: list[bytes], next_batch: list[bytes] | None) -> list[Label]:
        """The labels to deliver with ``batch`` (after its records), given the
        batch that follows it (``None`` after the last: everything left)."""
        due: list[Label] = []
        if self.untimed:
            for raw in batch:
                stamp = _stamp(raw)
                if stamp is not None:
                    due.extend(self.untimed.pop((stamp.model_id, stamp.request_id), ()))
        if next_batch is None:
            due.extend(label for _, label in self.timed[self._next:])
            self._next = len(self.timed)
            for labels in self.untimed.values():
                due.extend(labels)
            self.untimed = {}
            return due
        if self._next < len(self.timed):
            times = [stamp.timestamp for stamp in map(_stamp, next_batch) if stamp is not None and stamp.timestamp is not None]
            if times:
                until = min(times)  # the first later record: labels before it are due now
                while self._next < len(self.timed) and self.timed[self._next][0] < until:
                    due.append(self.timed[self._next][1])
                    self._next += 1
        return due


# -- progress -----------------------------------------------------------------


class Progress:
    """A one-line progress bar on a terminal's stderr, shown only once the work
    has taken ``delay`` seconds (short runs stay clean) and only on a TTY."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO | None = None, delay: float = 3.0, interval: float = 0.2,
                 clock=time.monotonic):
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.delay = delay
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self._next_draw = self.started + delay
        self.drawn = False

    def update(self, done: int, records: int, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        if not self.enabled:
            return
        now = self.clock()
        if now < self._next_draw:
            return
        self._next_draw = now + self.interval
        elapsed = max(now - self.started, 1e-9)
        rate = records / elapsed
        if self.total > 0:
            share = min(done / self.total, 1.0)
            filled = int(share * self.WIDTH)
            eta = elapsed * (1 - share) / share if share > 0 else 0.0
            line = (f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] {share:4.0%}  {records:,} records  "
                    f"{rate:,.0f}/s  ETA {_duration(eta)}")
        else:
            line = f"{records:,} records  {rate:,.0f}/s  {_duration(elapsed)}"
        self.stream.write("\r" + line + "\033[K")
        self.stream.flush()
        self.drawn = True

    def clear(self) -> None:
        """Erase the bar (before other output, and at the end)."""
        if self.drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.drawn = False
            self._next_draw = 0.0  # redraw at the next update


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"
