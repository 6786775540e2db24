"""The GPU suite on a machine without a GPU: it runs what it can, skips every GPU step with the reason, writes its
JSON, and fails (exit 1) on a step that failed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from turnrl.models.loading import save_policy

ROOT = Path(__file__).resolve().parents[2]
GPU_STEPS = ("install", "server", "generation_smoke", "kernels", "train")


def _suite(*args: str) -> tuple[subprocess.CompletedProcess, dict | None]:
    out = Path(args[args.index("--out") + 1])
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_suite.py"), "--no-install", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    report = out / "gpu_suite.json"
    return done, (json.loads(report.read_text()) if report.exists() else None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the suite runs for real (minutes)")
def test_on_cpu_the_suite_skips_gpu_steps_with_a_clear_reason(tmp_path, tiny_model, tokenizer):
    model = save_policy(tiny_model, tokenizer, tmp_path / "model")
    done, report = _suite("--model", str(model), "--out", str(tmp_path / "suite"))
    assert done.returncode == 0, done.stdout + done.stderr
    steps = report["steps"]
    assert steps["environment"]["status"] == "ok" and steps["environment"]["gpus"] == []
    assert steps["model"] == {"status": "ok", "seconds": steps["model"]["seconds"], "path": str(model), "built": False}
    for name in GPU_STEPS:
        assert steps[name]["status"] == "skipped" and "no CUDA GPU" in steps[name]["reason"], name
    assert report["failed"] == [] and "OK" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the suite runs for real (minutes)")
def test_a_bad_model_directory_fails_the_suite(tmp_path):
    done, report = _suite("--model", str(tmp_path), "--out", str(tmp_path / "suite"))
    assert done.returncode == 1 and report["failed"] == ["model"]
    assert "not a model directory" in report["steps"]["model"]["error"]
