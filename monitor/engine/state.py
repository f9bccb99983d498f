"""How a model's state is written: binary, and a frozen part only once.

A model's checkpoint is its ``state_dict`` (plain data: numbers, strings,
lists, dicts). Two things make writing it cheap for a fleet:

- **Binary encoding.** msgpack (msgspec), about half the bytes of JSON and many
  times faster to encode and decode; NaN survives.
- **Frozen parts written once.** A detector returns the parts of its state that
  never change again (a reference summary, once fitted) wrapped in
  :class:`Frozen`, and returns the *same object* every time. The writer encodes
  such a part once, names it by the hash of its bytes, writes it as a blob of
  its own, and from then on writes only the name. Like a changelog topic,
  what is written each interval is what can still change.

Pure code, no I/O: :mod:`monitor.source.checkpoint` puts records and blobs in
the compacted state topic.

>>> writer = StateWriter()
>>> ref = Frozen({"edges": [0.5, 1.5]})
>>> record, blobs = writer.encode({"n": 1, "reference": ref})
>>> len(blobs)
1
>>> record2, blobs2 = writer.encode({"n": 2, "reference": ref})   # same object: not again
>>> blobs2
{}
>>> decode(record2, {**blobs, **blobs2})
{'n': 2, 'reference': {'edges': [0.5, 1.5]}}
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from detectors.base import Frozen

FORMAT = 3
BLOB = "__frozen_blob__"

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


class StateWriter:
    """Encodes states; remembers which frozen parts it has written."""

    def __init__(self) -> None:
        # id(frozen part) -> (the part, its blob name): the part is kept alive
        # so its id cannot be reused by another object
        self._names: dict[int, tuple[Frozen, str]] = {}
        self._written: set[str] = set()

    def encode(self, state: dict) -> tuple[bytes, dict[str, bytes]]:
        """``(record, new blobs)``: the state with frozen parts replaced by
        their names, and the blobs (name -> bytes) not written before."""
        blobs: dict[str, bytes] = {}
        record = _encoder.encode({"format": FORMAT, "state": self._replace(state, blobs)})
        return record, blobs

    def forget(self, names: set[str]) -> None:
        """Blobs deleted from the store (their model left): write them again if needed."""
        self._written -= names
        self._names = {k: v for k, v in self._names.items() if v[1] not in names}

    def _replace(self, value: Any, blobs: dict[str, bytes]) -> Any:
        if isinstance(value, Frozen):
            known = self._names.get(id(value))
            if known is None and value.blob_name is not None:
                self._names[id(value)] = known = (value, value.blob_name)
                self._written.add(value.blob_name)
            if known is None:
                data = _encoder.encode(dict(value))
                name = hashlib.blake2b(data, digest_size=16).hexdigest()
                self._names[id(value)] = (value, name)
                if name not in self._written:
                    blobs[name] = data
                    self._written.add(name)
            else:
                name = known[1]
            return {BLOB: name}
        if isinstance(value, dict):
            return {k: self._replace(v, blobs) for k, v in value.items()}
        if isinstance(value, list) and value and isinstance(value[0], (dict, list)):
            return [self._replace(v, blobs) for v in value]
        return value


def decode(record: bytes, blobs: dict[str, bytes]) -> dict:
    """The state of ``record``, frozen parts read back from ``blobs`` (as
    :class:`Frozen`, so a restored daemon does not write them again)."""
    try:
        envelope = _decoder.decode(record)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a state record in format {FORMAT} of this infersight version ({exc})") from None
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        found = envelope.get("format") if isinstance(envelope, dict) else None
        raise ValueError(f"state format {found!r}, this infersight reads format {FORMAT}")
    cache: dict[str, Frozen] = {}
    return _restore(envelope["state"], blobs, cache)


def _restore(value: Any, blobs: dict[str, bytes], cache: dict[str, Frozen]) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and BLOB in value:
            name = value[BLOB]
            if name not in cache:
                if name not in blobs:
                    raise ValueError(f"state refers to frozen part {name}, which the store does not hold")
                cache[name] = Frozen(_decoder.decode(blobs[name]))
                cache[name].blob_name = name
            return cache[name]
        return {k: _restore(v, blobs, cache) for k, v in value.items()}
    if isinstance(value, list) and value and isinstance(value[0], (dict, list)):
        return [_restore(v, blobs, cache) for v in value]
    return value


def blob_names(record: bytes) -> set[str]:
    """Names of the frozen parts a record refers to."""
    names: set[str] = set()

    def walk(value):
        if isinstance(value, dict):
            if len(value) == 1 and BLOB in value:
                names.add(value[BLOB])
            else:
                for v in value.values():
                    walk(v)
        elif isinstance(value, list) and value and isinstance(value[0], (dict, list)):
            for v in value:
                walk(v)

    walk(_decoder.decode(record))
    return names
