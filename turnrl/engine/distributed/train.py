"""A training run whose learner is sharded over the ranks of a torchrun job (FSDP2).

Run as ``torchrun --nproc_per_node N -m turnrl.engine.distributed.train --config job.toml [--set key=value]``;
``--resume`` continues the run in ``out`` from its latest checkpoint, at any number of ranks.

Invariants:
- rank 0 runs the whole loop (``Trainer``: rollouts, evaluation, records); its learner is a ``RankZeroLearner``
  that sends every learner operation (update, save, load, stop) to the other ranks before doing it itself, so
  all ranks enter every collective in the same order; the other ranks only ``follow``;
- rank 0 keeps an unsharded copy of the policy for generation, evaluation and the Hugging Face checkpoint; after
  every update (and load) it receives the gathered weights, so the generator always serves the learner's latest;
- the learner state (parameters, optimizer, reference, critic) is checkpointed with DCP under
  ``<run>/sharded/update-NNNNNN`` (readable at any world size); the run's own checkpoint names that directory;
- commands cross ranks as msgpack (``share.broadcast_bytes``), never pickle;
- the model comes from ``model.path`` (every rank loads it; rank 0's weights are broadcast at start).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Literal

import msgspec
import torch.distributed as dist

from turnrl.config import TrainConfig
from turnrl.engine.distributed.checkpoint import load_sharded, save_sharded
from turnrl.engine.distributed.learner import ShardedLearner
from turnrl.engine.distributed.mesh import close_mesh, exit_without_finalizing, init_mesh
from turnrl.engine.distributed.share import broadcast_bytes, broadcast_trajectories
from turnrl.engine.training.setup import learner_arguments


class LearnerCommand(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    op: Literal["update", "save", "load", "stop"]
    path: str | None = None


_COMMAND = msgspec.msgpack.Decoder(LearnerCommand)


def _send(command: LearnerCommand) -> None:
    broadcast_bytes(msgspec.msgpack.encode(command))


def _receive() -> LearnerCommand:
    return _COMMAND.decode(broadcast_bytes(None))


def build_sharded_learner(model, tokenizer, cfg: TrainConfig, mesh) -> ShardedLearner:
    args, kwargs = learner_arguments(cfg, tokenizer)
    return ShardedLearner(model, *args, mesh=mesh, sharding=cfg.sharding, **kwargs)


class RankZeroLearner:
    """The learner rank 0's training loop sees: drives every rank, keeps ``serving_model`` up to date."""

    def __init__(self, model, tokenizer, cfg: TrainConfig, mesh):
        self.serving_model = model
        self.inner = build_sharded_learner(copy.deepcopy(model), tokenizer, cfg, mesh)
        self.run_dir = Path(cfg.out)

    @property
    def updates(self) -> int:
        return self.inner.updates

    def update(self, trajectories) -> dict[str, float]:
        _send(LearnerCommand(op="update"))
        stats = self.inner.update(broadcast_trajectories(trajectories))
        self._publish()
        return stats

    def _publish(self) -> None:
        self.serving_model.load_state_dict(self.inner.full_state_dict())

    def state_dict(self) -> dict:
        path = (self.run_dir / "sharded" / f"update-{self.inner.updates:06d}").resolve()
        _send(LearnerCommand(op="save", path=str(path)))
        save_sharded(path, self.inner)
        return {"sharded_checkpoint": str(path)}

    def load_state_dict(self, state: dict) -> None:
        _send(LearnerCommand(op="load", path=state["sharded_checkpoint"]))
        load_sharded(state["sharded_checkpoint"], self.inner)
        self._publish()

    def stop(self) -> None:
        _send(LearnerCommand(op="stop"))


def follow(model, tokenizer, cfg: TrainConfig, mesh) -> int:
    """Ranks other than 0: do what rank 0 says until it says stop; returns the number of updates."""
    learner = build_sharded_learner(model, tokenizer, cfg, mesh)
    while True:
        command = _receive()
        if command.op == "update":
            learner.update(broadcast_trajectories(None))
            learner.full_state_dict(keep=False)
        elif command.op == "save":
            save_sharded(command.path, learner)
        elif command.op == "load":
            load_sharded(command.path, learner)
            learner.full_state_dict(keep=False)
        else:
            return learner.updates


def run(cfg: TrainConfig, resume: bool = False) -> dict | None:
    """The job on this rank: rank 0 returns the run's summary, the others None."""
    from turnrl.engine.training.loop import Trainer
    from turnrl.models import load_policy
    from turnrl.models.loading import resolve_device

    if cfg.model.path is None:
        raise ValueError("a sharded run needs model.path (a model directory every rank can read)")
    mesh = init_mesh(cfg.sharding)
    try:
        if dist.get_rank() != 0:
            model, tokenizer = load_policy(cfg.model.path, device=resolve_device(cfg.model.device))  # as rank 0
            follow(model, tokenizer, cfg, mesh)
            return None
        front: list[RankZeroLearner] = []

        def make_learner(model, tokenizer):
            front.append(RankZeroLearner(model, tokenizer, cfg, mesh))
            return front[0]

        try:
            return Trainer(cfg, resume=resume, make_learner=make_learner).run()
        finally:
            if front:
                front[0].stop()
    finally:
        close_mesh()


def main(argv: list[str] | None = None) -> int:
    from turnrl.config.toml_file import load

    parser = argparse.ArgumentParser(description="turnrl training with the learner sharded over torchrun's ranks")
    parser.add_argument("--config", required=True, help="the run's TOML file")
    parser.add_argument("--set", action="append", default=[], help="key=value override (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue the run in `out` from its latest checkpoint")
    args = parser.parse_args(argv)
    try:
        cfg = load(args.config, args.set)
        if cfg.model.path is None:
            raise ValueError("a sharded run needs model.path (a model directory every rank can read)")
    except (ValueError, OSError) as exc:
        print(f"turnrl: error: {exc}", file=sys.stderr)
        return 2
    summary = run(cfg, resume=args.resume)
    if summary is not None:
        print(json.dumps({"summary": str(Path(cfg.out) / "summary.json")}), flush=True)
    return 0


if __name__ == "__main__":
    exit_without_finalizing(main())
