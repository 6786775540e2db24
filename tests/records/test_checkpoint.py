"""Checkpoints are atomic: a partial write never becomes latest, keep= prunes the oldest, no temp files remain."""

from __future__ import annotations

import json
import os

import torch

from turnrl.engine.records.checkpoint import latest_checkpoint, save_checkpoint


def test_checkpoint_is_atomic(tiny_model, tokenizer, tmp_path):
    optimizer = torch.optim.AdamW(tiny_model.parameters())
    first = save_checkpoint(tmp_path, 1, tiny_model, tokenizer, optimizer, {"stage": 0})
    assert latest_checkpoint(tmp_path) == first
    # a crash in the middle of writing step 2 leaves a partial directory and the pointer on step 1
    partial = tmp_path / ".checkpoint-000002.partial"
    partial.mkdir()
    (partial / "config.json").write_text("{")
    assert latest_checkpoint(tmp_path) == first
    second = save_checkpoint(tmp_path, 2, tiny_model, tokenizer, optimizer, {"stage": 1})
    assert latest_checkpoint(tmp_path) == second and not partial.exists()
    assert json.loads((second / "trainer_state.json").read_text())["stage"] == 1
    save_checkpoint(tmp_path, 3, tiny_model, tokenizer, optimizer, {}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-000002", "checkpoint-000003"]
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))
