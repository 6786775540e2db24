"""Checkpoints: model, tokenizer, optimizer and trainer state, written atomically.

Invariant: a checkpoint directory becomes visible (renamed into place, then
named in ``latest``, itself replaced atomically) only after every file in it is
written and flushed, so a crash mid-write leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

LATEST = "latest"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model,
    tokenizer,
    learner,
    state: dict,
    keep: int = 2,
    rng_states: dict[str, torch.Tensor] | None = None,
) -> Path:
    """``learner`` is anything with ``state_dict()`` (optimizers, critic, reference, RNG); ``rng.pt`` holds
    torch's global RNG state under ``"torch"`` and any ``rng_states`` beside it."""
    run_dir = Path(run_dir)
    final = run_dir / f"checkpoint-{step:06d}"
    tmp = run_dir / f".checkpoint-{step:06d}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    torch.save(learner.state_dict(), tmp / "learner.pt")
    torch.save({"torch": torch.get_rng_state(), **(rng_states or {})}, tmp / "rng.pt")
    _write_atomic(tmp / "trainer_state.json", json.dumps({"step": step, **state}, indent=2, sort_keys=True))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_atomic(run_dir / LATEST, final.name)
    for old in sorted(run_dir.glob("checkpoint-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    pointer = Path(run_dir) / LATEST
    if not pointer.is_file():
        return None
    path = Path(run_dir) / pointer.read_text(encoding="utf-8").strip()
    return path if (path / "trainer_state.json").is_file() else None


def load_trainer_state(checkpoint: str | Path) -> dict:
    return json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
