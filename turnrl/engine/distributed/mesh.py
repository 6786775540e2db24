"""The process group and device mesh of a torchrun job.

Invariant: one process group per process, made from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``); the mesh is one data-parallel dimension over every rank; on CPU the
backend is gloo.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from turnrl.config.distributed import ShardingConfig

_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def in_torchrun() -> bool:
    return all(key in os.environ for key in _ENV)


def init_mesh(config: ShardingConfig | None = None, timeout_s: float = 600.0) -> DeviceMesh:
    """Join (or reuse) the job's process group and return the 1-D data-parallel mesh."""
    config = config or ShardingConfig()
    if not dist.is_initialized():
        missing = [key for key in _ENV if key not in os.environ]
        if missing:
            raise RuntimeError(f"not launched by torchrun: {', '.join(missing)} unset (run under torchrun)")
        if config.backend == "nccl" and not torch.cuda.is_available():
            raise RuntimeError("sharding.backend is 'nccl' but no CUDA device is visible; use 'gloo' on CPU")
        if config.backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(config.backend, timeout=timedelta(seconds=timeout_s))
    device = "cuda" if config.backend == "nccl" else "cpu"
    return init_device_mesh(device, (dist.get_world_size(),), mesh_dim_names=("dp",))


def close_mesh() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
