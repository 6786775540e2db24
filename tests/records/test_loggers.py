"""Metrics reach every sink: metrics.jsonl always, TensorBoard event files, W&B offline runs."""

from __future__ import annotations

import json
import time

import pytest

from turnrl.config.records import LoggingConfig
from turnrl.engine.records.loggers import MetricsLogger
from turnrl.engine.records.metrics import read_metrics

ROWS = [
    {"step": 1, "train/success_rate": 0.25, "learner/loss": -0.5, "phase": "rl", "ok": True},
    {"step": 2, "train/success_rate": 0.75, "learner/loss": 0.125, "phase": "rl", "ok": False},
]


def test_tensorboard_receives_every_numeric_value(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = MetricsLogger(tmp_path, LoggingConfig(tensorboard=True))
    assert logger.sinks == ["jsonl", "tensorboard"]
    for row in ROWS:
        logger.write(row)
    logger.close()
    assert read_metrics(tmp_path / "metrics.jsonl") == ROWS
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["learner/loss", "train/success_rate"]  # no strings, no bools
    for key in ("learner/loss", "train/success_rate"):
        assert [(e.step, e.value) for e in events.Scalars(key)] == [(r["step"], r[key]) for r in ROWS]


def test_wandb_offline_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = MetricsLogger(
        tmp_path, LoggingConfig(tensorboard=False, wandb_project="turnrl-test"), run_config={"algo": "grpo"}
    )
    assert logger.sinks == ["jsonl", "wandb"]
    for row in ROWS:
        logger.write(row)
    logger.close()
    records = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(records) == 1  # an offline run, ready for `wandb sync`
    # history values are stored as JSON text inside the protobuf records, which W&B's own service process may
    # still be flushing when finish() returns on a loaded machine: read until they are there (a hang guard)
    needles = [n for row in ROWS for k in ("train/success_rate", "learner/loss") for n in (k, json.dumps(row[k]))]
    data = _read_until(records[0], [n.encode() for n in needles], timeout_s=60)
    for needle in needles:
        assert needle.encode() in data
    assert b"phase" not in data  # strings stay in metrics.jsonl
    assert read_metrics(tmp_path / "metrics.jsonl") == ROWS


def _read_until(path, needles: list[bytes], timeout_s: float) -> bytes:
    deadline = time.monotonic() + timeout_s
    while True:
        data = path.read_bytes()
        if all(n in data for n in needles) or time.monotonic() > deadline:
            return data
        time.sleep(0.1)


def test_only_jsonl_when_nothing_else_is_asked(tmp_path):
    logger = MetricsLogger(tmp_path, LoggingConfig(tensorboard=False))
    assert logger.sinks == ["jsonl"]
    logger.write(ROWS[0])
    logger.close()
    assert not (tmp_path / "tensorboard").exists() and read_metrics(tmp_path / "metrics.jsonl") == ROWS[:1]


def test_bad_logging_config():
    with pytest.raises(ValueError, match="wandb_mode"):
        LoggingConfig(wandb_mode="sometimes")
