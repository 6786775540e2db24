"""Helpers for the distributed tests: a tiny model on disk, random trajectories, torchrun jobs.

Trajectories are random token streams with random policy spans, sampled log-probs and rewards in groups, so
the updates they drive are generic; the reference for every sharded result is the single-process
``Learner`` on the same model and batches.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import msgspec
from safetensors.torch import load_file

from turnrl.protocol import Task, Trajectory, Turn

JOB = Path(__file__).with_name("sharded_job.py")
ROOT = Path(__file__).resolve().parents[2]


def random_trajectories(vocab: int, count: int, seed: int, groups: int = 3, listed: bool = False) -> list[Trajectory]:
    """``listed``: each reply is recorded beside a list of replies (``Turn.listed``) that holds it, or that it
    leaves after a token or two."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        prompt = rng.randint(4, 12)
        ids, mask, logprobs, turns = [rng.randrange(vocab) for _ in range(prompt)], [0] * prompt, [0.0] * prompt, []
        for _ in range(rng.randint(1, 3)):
            start, n = len(ids), rng.randint(1, 6)
            ids += [rng.randrange(vocab) for _ in range(n)]
            mask += [1] * n
            logprobs += [-rng.uniform(0.5, 6.0) for _ in range(n)]
            reply, listing = ids[start:], None
            if listed:
                others = [[*reply[: rng.randint(0, n - 1)], rng.randrange(vocab)] for _ in range(rng.randint(1, 3))]
                listing = [*others, reply] if rng.random() < 0.6 else others
            turn = Turn(action_start=start, action_end=start + n, action_text="", observation="", reward=0.0)
            turns.append(msgspec.structs.replace(turn, listed=listing))
            obs = rng.randint(0, 8)
            ids += [rng.randrange(vocab) for _ in range(obs)]
            mask += [0] * obs
            logprobs += [0.0] * obs
        out.append(
            Trajectory(
                task=Task(env="babyai", item_id=i % groups, group=i % groups),
                token_ids=ids,
                loss_mask=mask,
                logprobs=logprobs,
                versions=[0] * len(ids),
                prompt_len=prompt,
                turns=turns,
                reward=float(rng.random() < 0.5),
            )
        )
    return out


def write_batch(path: Path, trajectories: list[Trajectory]) -> str:
    path.write_bytes(msgspec.msgpack.encode(trajectories))
    return str(path)


def run_job(tmp: Path, spec: dict, ranks: int, name: str, timeout: float = 300.0) -> None:
    spec_path = tmp / f"{name}.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    for _attempt in range(2):  # a rank killed by a signal (seen once on the loaded machine) is run once more:
        done = subprocess.run(  # a job fails for real only if it fails twice; its outputs are rewritten each time
            [*cmd, str(JOB), str(spec_path)], env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp
        )
        if done.returncode == 0 or "Signal" not in done.stderr:
            break
    if done.returncode != 0:
        raise AssertionError(
            f"torchrun job {name} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
        )


def read_dump(path: str) -> tuple[dict, dict]:
    return load_file(path), json.loads(Path(path + ".json").read_text())
