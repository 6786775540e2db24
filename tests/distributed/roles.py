"""The roles of a multi-machine job, started here as separate processes exactly as the README's recipe starts
them (on one machine, loopback only): env workers, a generation service, a torchrun learner."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
CLI = [sys.executable, "-c", "import sys; from turnrl.cli import main; sys.exit(main())"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_env_worker(bind: str = "tcp://127.0.0.1:*") -> tuple[subprocess.Popen, str]:
    """``turnrl env-worker --bind``; returns the process and the address it listens on."""
    proc = subprocess.Popen(
        [*CLI, "env-worker", "--bind", bind, "--threads", "8", "--heartbeat-s", "0.1"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=ENV,
    )
    line = proc.stdout.readline().strip()
    if not line.startswith("listening tcp://"):
        proc.kill()
        raise AssertionError(f"env worker did not start: {line!r} (exit {proc.wait()})")
    return proc, line.split()[1]


def start_service(model_dir: Path, address: str, timeout_s: float = 120.0) -> subprocess.Popen:
    """``python -m turnrl.engine.generation.service``; returns once it answers a stats call."""
    config = json.dumps({"model_path": str(model_dir), "address": address, "max_running": 16})
    proc = subprocess.Popen(
        [sys.executable, "-m", "turnrl.engine.generation.service", "--config", config],
        stdin=subprocess.DEVNULL,
        env=ENV,
    )
    asyncio.run(_wait_for_service(address, timeout_s))
    return proc


async def _wait_for_service(address: str, timeout_s: float) -> None:
    from turnrl.engine.generation.service_client import ServiceGenerator

    client = ServiceGenerator(address)
    try:
        await client.service_stats(timeout_s=timeout_s)
    finally:
        await client.close()


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def job_toml(model_dir: Path, out: Path, service: str, workers: list[str], steps: int = 3) -> str:
    remote = ", ".join(f'"{w}"' for w in workers)
    return f"""
steps = {steps}
out = "{out}"
seed = 0

[env]
family = "babyai"
options = {{ level = "GoToLocal" }}

[env.workers]
workers = 0
remote = [{remote}]
heartbeat_s = 0.1
heartbeat_timeout_s = 5.0

[model]
path = "{model_dir}"

[rollout]
prompts_per_step = 2
group_size = 2
max_batch = 16

[rollout.episode]
turn_cap = 2
max_new_tokens = 4
constrain_to_valid_actions = true

[rollout.generator]
kind = "service"
external = true
address = "{service}"

[algo.learner]
lr = 1e-3
lr_warmup_steps = 0
minibatches = 1
micro_batch_tokens = 512

[eval]
tasks = 2
turn_cap = 2

[sharding]
backend = "gloo"
"""


def torchrun(args: list[str], ranks: int = 2, timeout_s: float = 400.0) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", *args]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)
