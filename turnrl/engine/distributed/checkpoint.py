"""Sharded checkpoints with torch.distributed.checkpoint (DCP): written on N ranks, read on any M.

Invariants:
- tensors (policy, optimizer moments, reference, a separate critic and its optimizer) go through DCP's own
  format, each rank writing its shards; the rest of the learner (warm-up schedule, shuffling RNG, update
  count) and the caller's ``state`` are JSON written by rank 0: nothing is pickled by this module and nothing
  is read back with ``torch.load``;
- a checkpoint becomes visible only when complete: DCP writes into ``<dir>.partial``, every rank reaches a
  barrier, then rank 0 renames it into place;
- loading reshards to the reader's mesh, so a run saved on N ranks resumes on M ranks with the same state.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

LEARNER_JSON = "learner.json"


def _tensor_state(learner) -> dict:
    model, optim = get_state_dict(learner._policy, learner.optimizer)
    state = {"policy": model, "optimizer": optim}
    if learner._reference is not None:
        state["reference"] = get_model_state_dict(learner._reference)
    if learner.critic is not None:
        critic, critic_optim = get_state_dict(learner.critic, learner.critic_optimizer)
        state["critic"] = critic
        state["critic_optimizer"] = critic_optim
    return state


def _plain_state(learner) -> dict:
    version, internal, gauss = learner.rng.getstate()
    return {
        "scheduler": learner.scheduler.state_dict(),
        "rng": [version, list(internal), gauss],
        "updates": learner.updates,
    }


def save_sharded(directory: str | Path, learner, state: dict | None = None) -> Path:
    """Write ``learner`` (a ``ShardedLearner``) and the JSON-able ``state``; call on every rank."""
    final = Path(directory)
    partial = final.with_name(final.name + ".partial")
    if dist.get_rank() == 0 and partial.exists():
        shutil.rmtree(partial)
    dist.barrier()
    dcp.save(_tensor_state(learner), checkpoint_id=str(partial))
    if dist.get_rank() == 0:
        payload = {"learner": _plain_state(learner), "state": state or {}, "world_size": dist.get_world_size()}
        text = json.dumps(payload, sort_keys=True)
        with (partial / LEARNER_JSON).open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
    dist.barrier()
    return final


def load_sharded(directory: str | Path, learner) -> dict:
    """Restore ``learner`` from a checkpoint written at any world size; returns the caller's ``state``."""
    directory = Path(directory)
    meta = directory / LEARNER_JSON
    if not meta.is_file():
        raise FileNotFoundError(f"{directory} is not a complete sharded checkpoint (no {LEARNER_JSON})")
    payload = json.loads(meta.read_text(encoding="utf-8"))
    state = _tensor_state(learner)
    dcp.load(state, checkpoint_id=str(directory))
    set_state_dict(
        learner._policy,
        learner.optimizer,
        model_state_dict=state["policy"],
        optim_state_dict=state["optimizer"],
    )
    if learner._reference is not None:
        set_model_state_dict(learner._reference, state["reference"])
    if learner.critic is not None:
        set_state_dict(
            learner.critic,
            learner.critic_optimizer,
            model_state_dict=state["critic"],
            optim_state_dict=state["critic_optimizer"],
        )
    plain = payload["learner"]
    learner.scheduler.load_state_dict(plain["scheduler"])
    version, internal, gauss = plain["rng"]
    learner.rng.setstate((version, tuple(internal), gauss))
    learner.updates = plain["updates"]
    return payload["state"]
