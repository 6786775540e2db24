"""A torchrun job the distributed tests launch: a sharded learner runs a list of operations from a JSON spec.

Operations: ``update`` (one learner update on batch ``i``, its stats kept), ``save`` / ``load`` (a DCP
checkpoint directory), ``dump`` (rank 0 writes the gathered parameters as safetensors and the stats as JSON).
Batches are msgpack lists of trajectories; rank 0 reads them and broadcasts them to the other ranks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import msgspec
import torch
import torch.distributed as dist
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from turnrl.config.algo import CriticConfig, LearnerConfig
from turnrl.config.distributed import ShardingConfig
from turnrl.engine.distributed.checkpoint import load_sharded, save_sharded
from turnrl.engine.distributed.learner import ShardedLearner
from turnrl.engine.distributed.mesh import close_mesh, exit_without_finalizing, init_mesh
from turnrl.engine.distributed.share import broadcast_trajectories
from turnrl.protocol import Trajectory


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    mesh = init_mesh(ShardingConfig(**spec.get("sharding", {})))
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], torch_dtype=torch.float32).eval()
    critic = CriticConfig(**spec["critic"]) if "critic" in spec else None
    learner = ShardedLearner(
        model,
        msgspec.convert(spec["learner"], LearnerConfig),
        spec["pad_token_id"],
        seed=spec.get("seed", 0),
        mesh=mesh,
        sharding=ShardingConfig(**spec.get("sharding", {})),
        estimator=spec.get("estimator", "grpo"),
        critic=critic,
    )
    decoder = msgspec.msgpack.Decoder(list[Trajectory])
    stats = []
    for op in spec["ops"]:
        if op["op"] == "update":
            mine = decoder.decode(Path(spec["batches"][op["batch"]]).read_bytes()) if dist.get_rank() == 0 else None
            stats.append(learner.update(broadcast_trajectories(mine)))
        elif op["op"] == "save":
            save_sharded(op["dir"], learner, {"step": op.get("step", 0)})
        elif op["op"] == "load":
            load_sharded(op["dir"], learner)
        elif op["op"] == "dump":
            params = {k: v.clone().contiguous() for k, v in learner.full_state_dict().items()}
            if dist.get_rank() == 0:
                save_file(params, op["path"])
                Path(op["path"] + ".json").write_text(json.dumps({"stats": stats, "world": dist.get_world_size()}))
        else:
            raise ValueError(f"unknown op {op['op']!r}")
    close_mesh()


if __name__ == "__main__":
    main(sys.argv[1])
    exit_without_finalizing(0)
