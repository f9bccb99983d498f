"""Checkpoints cost what changed: binary, frozen parts once, quiet models not at all."""

import numpy as np
import pytest

from detectors.base import Frozen
from monitor.config import Settings
from monitor.engine.model_monitor import ModelMonitor
from monitor.engine.pipeline import Pipeline
from monitor.engine.state import StateWriter, decode
from monitor.tools.simulate import generate_records

SETTINGS = Settings.model_validate({"policy": {"reference_size": 1000, "window_size": 250}})


def test_a_quiet_model_is_not_checkpointed_again():
    pipeline = Pipeline(SETTINGS)
    raws = [v for _, v in generate_records(models=3, records_per_model=1500, seed=1)]
    pipeline.process(raws)
    first = pipeline.checkpoint()
    assert len(first) == 3
    pipeline.saved(first)
    assert pipeline.checkpoint() == {}  # nothing happened since
    one_model = [v for m, v in generate_records(models=3, records_per_model=1600, seed=1) if m == "credit-risk"]
    pipeline.process(one_model[1500:])
    assert list(pipeline.checkpoint()) == ["credit-risk"]


def test_a_fitted_reference_is_written_once():
    monitor = ModelMonitor("credit-risk", SETTINGS)
    from monitor.wire.route import build_model_batch
    from monitor.wire.schema import decode_batch

    raws = [v for m, v in generate_records(models=1, records_per_model=3000, seed=2)]
    records, _, _ = decode_batch(raws[:2000])
    monitor.update(build_model_batch("credit-risk", records))
    writer = StateWriter()
    record, blobs = writer.encode(monitor.state_dict())
    assert len(blobs) > 10  # every two-sample reference and the model's shape
    records, _, _ = decode_batch(raws[2000:])
    monitor.update(build_model_batch("credit-risk", records))
    record2, blobs2 = writer.encode(monitor.state_dict())
    assert blobs2 == {}  # references did not change: only their names are written
    assert len(record2) < sum(map(len, blobs.values()))
    # and a restore is exact: the resumed monitor writes the same bytes
    resumed = ModelMonitor.from_state(decode(record2, blobs), SETTINGS)
    again, new_blobs = StateWriter().encode(resumed.state_dict())
    assert again == record2 and new_blobs == {}  # restored parts keep their names


def test_other_formats_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="format"):
        decode(b'{"version": 1, "model_id": "m"}', {})
    record, _ = StateWriter().encode({"reference": Frozen({"a": [1.0, np.nan]})})
    with pytest.raises(ValueError, match="does not hold"):
        decode(record, {})
