"""``turnrl train --generator sglang`` end to end: the command line, a real training run, a server that answers
as SGLang 0.5.23 does (``fake_sglang``, in this process; the run in its own).

With eta = 0 the weights go through the disk (every step's directory loaded by the server); with eta = 1 they
are broadcast (the learner and the server in one real process group, gloo on CPU) and the server ends holding
exactly the weights of the run's final checkpoint. Either way every step is recorded and no episode is lost to a
generation error.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
import torch

from tests.generation.fake_sglang import FakeSGLang
from turnrl.engine.records.checkpoint import latest_checkpoint
from turnrl.engine.records.metrics import read_metrics
from turnrl.models.loading import load_policy, save_policy


def _digest(state: dict) -> dict:
    return {
        n: hashlib.sha256(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
        for n, t in state.items()
    }


@pytest.mark.parametrize(("staleness", "sync"), [(0, "disk"), (1, "nccl")])
def test_train_with_the_sglang_generator(tmp_path, tiny_model, tokenizer, staleness, sync):
    base = save_policy(tiny_model, tokenizer, tmp_path / "base")
    zeros = {n: torch.zeros_like(t) for n, t in tiny_model.state_dict().items()}
    server = FakeSGLang(vocab=len(tokenizer), tensors=zeros, loading_polls=2)
    run = tmp_path / "run"
    sets = {
        "rollout.staleness": staleness,
        "rollout.prompts_per_step": 2,
        "rollout.group_size": 2,
        "rollout.episode.turn_cap": 2,
        "rollout.episode.max_new_tokens": 6,
        "eval.tasks": 2,
        "eval.turn_cap": 1,
        "rollout.generator.sglang.weight_sync": sync,
        "rollout.generator.sglang.nccl_backend": "gloo",
        "rollout.generator.sglang.retry_backoff_s": 0.05,
    }
    args = ["train", "--model", str(base), "--steps", "3", "--out", str(run)]
    args += ["--generator", "sglang", "--sglang-urls", server.url]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "turnrl.cli", *args], capture_output=True, text=True, timeout=600, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr[-3000:]
        rows = read_metrics(run / "metrics.jsonl")
        assert [r["step"] for r in rows] == [1, 2, 3] and [r["weight_version"] for r in rows] == [1, 2, 3]
        assert all(r.get("end/gen_error", 0) == 0 and r.get("end/aborted", 0) == 0 for r in rows)
        assert sum(r["train/episodes"] for r in rows) + rows[-1]["buffer/stale_dropped"] == 12
        assert max(r["staleness/max"] for r in rows) <= staleness
        assert server.loading_polls == 0  # it waited through the 503s
        paths = [p for p, _ in server.calls]
        assert paths.count("/continue_generation") == 3 and "/generate" in paths
        if sync == "disk":
            loaded = [b.model_path for p, b in server.calls if p == "/update_weights_from_disk"]
            assert len(loaded) == 3 and len(set(loaded)) == 2  # two slots in turn: the previous stays
        else:
            assert paths.count("/init_weights_update_group") == 1 and "/update_weights_from_disk" not in paths
            final, _ = load_policy(latest_checkpoint(run))
            assert server.digest() == _digest(final.state_dict())
        assert server.weight_version == "3"
    finally:
        server.close()
