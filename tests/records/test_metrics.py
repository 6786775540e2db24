"""metrics.jsonl: rows written in order and read back; a row without a step is refused."""

from __future__ import annotations

import math

import pytest

from turnrl.engine.records.metrics import MetricsWriter, read_metrics


def test_metrics_writer(tmp_path):
    writer = MetricsWriter(tmp_path / "m.jsonl")
    writer.write({"step": 1, "x": 0.5})
    writer.write({"step": 2, "x": math.pi})
    with pytest.raises(ValueError):
        writer.write({"x": 1})
    writer.close()
    assert [r["step"] for r in read_metrics(tmp_path / "m.jsonl")] == [1, 2]
