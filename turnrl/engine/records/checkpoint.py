"""Checkpoints: model, tokenizer, optimizer and trainer state, written atomically and read without pickle.

Invariants:
- a checkpoint directory becomes visible (renamed into place, then named in ``latest``, itself replaced
  atomically) only after every file in it is written and flushed, so a crash mid-write leaves the previous
  checkpoint usable;
- no file in it is a pickle: the model in safetensors, the learner's state (optimizer, scheduler, critic,
  reference, its RNG) and the RNG states (torch's, Python's and numpy's global ones and any others given) as
  safetensors + JSON (``state_files``), the trainer state as JSON; ``check_no_pickle`` refuses a checkpoint that
  holds a pickle-format file (``*.pt``, ``*.bin``, ``*.pkl``...) before anything in it is read, and the loaders
  read nothing with pickle, so a crafted checkpoint cannot run code;
- ``restore_rng_states`` sets torch's, Python's and numpy's global generators to exactly the saved states.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from turnrl.engine.records.state_files import load_state, save_state
from turnrl.errors import CheckpointError

LATEST = "latest"
LEARNER, RNG = "learner", "rng"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


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
    """``learner`` is anything with ``state_dict()`` (optimizers, critic, reference, RNG); the ``rng`` files hold
    the global RNG states under ``"torch"``, ``"python"`` and ``"numpy"`` and any ``rng_states`` beside them."""
    run_dir = Path(run_dir)
    final = run_dir / f"checkpoint-{step:06d}"
    tmp = run_dir / f".checkpoint-{step:06d}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    save_state(tmp / LEARNER, learner.state_dict())
    save_state(tmp / RNG, {**global_rng_states(), **(rng_states or {})})
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
    path = Path(checkpoint) / "trainer_state.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not JSON ({exc})") from exc


def check_no_pickle(checkpoint: str | Path) -> None:
    """Refuse a checkpoint holding any pickle-format file (nothing in it has been read yet)."""
    found = sorted(p.name for p in Path(checkpoint).rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if found:
        raise CheckpointError(
            f"{checkpoint} holds pickle-format files {found}: turnrl checkpoints hold no pickle and load none "
            "(a pickle can run code when read); write the checkpoint again with this version"
        )


def load_learner_state(checkpoint: str | Path) -> dict:
    check_no_pickle(checkpoint)
    return load_state(Path(checkpoint) / LEARNER)


def load_rng_states(checkpoint: str | Path) -> dict:
    check_no_pickle(checkpoint)
    return load_state(Path(checkpoint) / RNG)


def global_rng_states() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}


def restore_rng_states(states: dict) -> None:
    """Set the global generators to the states ``global_rng_states`` returned (each one that is there)."""
    torch.set_rng_state(states["torch"])
    if "python" in states:
        random.setstate(states["python"])
    if "numpy" in states:
        np.random.set_state(states["numpy"])
