"""The process group and device mesh of a torchrun job.

Invariants:
- one process group per process, made from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
  ``MASTER_PORT``); the mesh is one data-parallel dimension over every rank; on CPU the backend is gloo;
- a torchrun process ends through ``exit_without_finalizing`` once its group is closed: gloo's worker threads
  release the tensors of finished collectives a moment after Python sees them finish, and a release that races
  the interpreter's finalization (it needs the GIL) aborts the process ("terminate called without an active
  exception", SIGABRT) after the job itself succeeded.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from typing import NoReturn

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


def exit_without_finalizing(code: int) -> NoReturn:
    """End this process with ``code``, skipping interpreter finalization (call after ``close_mesh``).

    Everything the job writes is closed before this point; only the standard streams need flushing.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
