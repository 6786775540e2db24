"""A whole run with every role a separate command, as on several machines (here over loopback): two
``turnrl env-worker --bind`` processes, a generation service started on its own, and the learner sharded over
2 torchrun ranks (gloo) running 3 steps of BabyAI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file

from tests.distributed.roles import free_port, job_toml, start_env_worker, start_service, stop, torchrun
from turnrl.models import save_policy
from turnrl.models.tiny import build_tiny_model


def _dcp_policy(directory: Path, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The policy tensors of a DCP checkpoint, read in this (non-distributed) process."""
    saved = dcp.FileSystemReader(str(directory)).read_metadata().state_dict_metadata
    # the sharded learner's policy is wrapped once: its names are "model." + the Hugging Face names
    wanted = {k: torch.empty_like(v) for k, v in like.items() if f"policy.model.{k}" in saved}
    dcp.load({"policy": {f"model.{k}": v for k, v in wanted.items()}}, checkpoint_id=str(directory), no_dist=True)
    return wanted


def test_roles_as_commands_train_three_steps_with_a_two_rank_learner(tmp_path, tokenizer):
    initial = build_tiny_model(tokenizer, "micro", max_positions=1024, seed=0)
    save_policy(initial, tokenizer, tmp_path / "model")
    started = []
    try:
        started += [start_env_worker(), start_env_worker()]
        service_address = f"tcp://127.0.0.1:{free_port()}"
        service = start_service(tmp_path / "model", service_address)
        started.append((service, service_address))
        job = tmp_path / "job.toml"
        job.write_text(job_toml(tmp_path / "model", tmp_path / "run", service_address, [a for _, a in started[:2]]))
        done = torchrun(["-m", "turnrl.engine.distributed.train", "--config", str(job)])
        assert done.returncode == 0, done.stderr[-6000:]
        assert all(proc.poll() is None for proc, _ in started)  # the job used them and left them serving
    finally:
        for proc, _ in started:
            stop(proc)

    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["weight_version"] for r in rows] == [1, 2, 3]  # the service took every update
    assert all(r["learner/optimizer_steps"] >= 1 for r in rows)
    learnt = False
    for row in rows:  # a step learns when one of its groups' rewards differ (if they all tie, nothing to learn)
        episodes = [json.loads(line) for line in (run / "trajectories" / f"step-{row['step']:06d}.jsonl").open()]
        groups: dict[int, set[float]] = {}
        for episode in episodes:
            groups.setdefault(episode["group"], set()).add(episode["reward"])
        if any(len(rewards) > 1 for rewards in groups.values()):
            assert row["learner/grad_norm"] > 0
            learnt = True
    assert not any(r.get("train/env_error_rate", 0) for r in rows)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["episodes_trained"] == 12
    meta = json.loads((run / "sharded" / "update-000003" / "learner.json").read_text())
    assert meta["world_size"] == 2 and meta["learner"]["updates"] == 3
    # rank 0's unsharded copy (what the generator served and the run checkpointed) is the learner's policy
    served = load_file(str(run / "checkpoint-000003" / "model.safetensors"))
    learned = _dcp_policy(run / "sharded" / "update-000003", served)
    assert len(learned) >= len(served) - 1  # every tensor (a tied output layer may be saved once)
    assert max(float((learned[k] - served[k]).abs().max()) for k in learned) == 0.0
    start = initial.state_dict()
    moved = max(float((served[k] - start[k]).abs().max()) for k in served)
    # the untrained model's few episodes sometimes tie in every group: then no update may change a weight
    assert moved > 1e-4 if learnt else moved == 0.0


@pytest.fixture()
def roles(tmp_path, tokenizer):
    """A model directory, two env workers and a generation service on loopback."""
    save_policy(build_tiny_model(tokenizer, "micro", max_positions=1024, seed=0), tokenizer, tmp_path / "model")
    started = [start_env_worker(), start_env_worker()]
    try:
        address = f"tcp://127.0.0.1:{free_port()}"
        started.append((start_service(tmp_path / "model", address), address))
        yield tmp_path / "model", address, [a for _, a in started[:2]]
    finally:
        for proc, _ in started:
            stop(proc)


def test_a_run_saved_at_two_ranks_resumes_at_one(tmp_path, roles):
    model_dir, service, workers = roles
    job = tmp_path / "job.toml"
    job.write_text(job_toml(model_dir, tmp_path / "run", service, workers, steps=2))
    first = torchrun(["-m", "turnrl.engine.distributed.train", "--config", str(job), "--set", "checkpoint_every=1"])
    assert first.returncode == 0, first.stderr[-6000:]
    args = ["-m", "turnrl.engine.distributed.train", "--config", str(job), "--set", "steps=3", "--resume"]
    resumed = torchrun(args, ranks=1)
    assert resumed.returncode == 0, resumed.stderr[-6000:]

    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and [r["weight_version"] for r in rows] == [1, 2, 3]
    saved = json.loads((run / "sharded" / "update-000002" / "learner.json").read_text())
    final = json.loads((run / "sharded" / "update-000003" / "learner.json").read_text())
    assert saved["world_size"] == 2 and final["world_size"] == 1
    assert final["learner"]["updates"] == 3  # the resumed learner counted on from the saved one
    served = load_file(str(run / "checkpoint-000003" / "model.safetensors"))
    learned = _dcp_policy(run / "sharded" / "update-000003", served)
    assert max(float((learned[k] - served[k]).abs().max()) for k in learned) == 0.0
    before = load_file(str(run / "checkpoint-000002" / "model.safetensors"))
    assert max(float((served[k] - before[k]).abs().max()) for k in served) > 0.0 or rows[2]["learner/grad_norm"] == 0
