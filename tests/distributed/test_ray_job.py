"""The whole job placed by Ray on a local cluster (loopback, 2 CPUs): a learner of 2 ranks, a generation service
and 2 env workers as actors in one placement group train 3 steps of BabyAI; afterwards no process is left."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psutil
import pytest

from tests.distributed.roles import ROOT, job_toml
from turnrl.config.toml_file import load
from turnrl.models import save_policy
from turnrl.models.tiny import build_tiny_model

ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'turnrl[ray]')")


def _descendants() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.is_running()]


def test_ray_places_learner_ranks_generation_and_env_workers_and_leaves_nothing(tmp_path, tokenizer):
    from turnrl.engine.distributed.ray_job import run_job

    save_policy(build_tiny_model(tokenizer, "micro", max_positions=1024, seed=0), tokenizer, tmp_path / "model")
    job = tmp_path / "job.toml"
    # the env and service addresses in the file are placeholders: the job hands each role its peers' addresses
    job.write_text(job_toml(tmp_path / "model", tmp_path / "run", "tcp://127.0.0.1:1", ["tcp://127.0.0.1:2"]))
    overrides = [
        "placement.learner_ranks=2",
        "placement.env_workers=2",
        "placement.cpus_per_learner=0.25",
        "placement.cpus_per_generator=0.25",
        "placement.cpus_per_env_worker=0.25",
    ]
    cfg = load(job, overrides)
    before = {p.pid for p in _descendants()}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    placed: list[int] = []
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        summary = run_job(cfg, on_placed=placed.extend)
    finally:
        ray.shutdown()
    assert len(set(placed)) == 5  # 2 learner ranks, 1 generation service, 2 env workers: five processes
    run = Path(tmp_path / "run")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and [r["weight_version"] for r in rows] == [1, 2, 3]
    assert summary["episodes_trained"] == 12
    assert json.loads((run / "sharded" / "update-000003" / "learner.json").read_text())["world_size"] == 2
    deadline = time.monotonic() + 60  # a hang guard: Ray's processes take a moment to exit after shutdown
    while time.monotonic() < deadline and [p for p in _descendants() if p.pid not in before]:
        time.sleep(0.2)
    assert [p.name() for p in _descendants() if p.pid not in before] == []
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in placed)
