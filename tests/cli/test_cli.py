"""Command line: bad values give one line, exit status 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "turnrl.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "--env", "chess"], "unknown env 'chess'"),
        (["train", "--steps", "-3"], "--steps must be >= 0"),
        (["train", "--model", "/no/such/model"], "does not exist"),
        (["train", "--algo", "ppo9"], "unknown algorithm 'ppo9'"),
        (["train", "--steps", "many"], "--steps"),
        (["train", "--level", "NoSuchLevel", "--steps", "0"], "NoSuchLevel"),
        (["frobnicate"], "frobnicate"),
        (["train", "--resume"], "--resume needs --out"),
        (["train", "--generator", "vllm"], "kind must be one of"),
        (["train", "--generator", "sglang"], "at least one SGLang server"),
        (["train", "--resume", "--out", "/no/such/run"], "nothing to resume"),
    ],
)
def test_bad_values(args, needle, tmp_path):
    result = _run(*args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("turnrl: error:") and needle in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_model_path_that_is_not_a_model(tmp_path):
    result = _run("train", "--model", str(tmp_path))
    assert result.returncode == 2
    assert "no config.json" in result.stderr and "Traceback" not in result.stderr


def test_help_works():
    result = _run("train", "--help")
    assert result.returncode == 0 and "--env" in result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "--curriculum", "scaling_inter", "--curriculum-caps", "6,6,20"], "strictly increasing"),
        (["train", "--curriculum", "spiral"], "curriculum.kind"),
        (["train", "--curriculum-caps", "2,x"], "--curriculum-caps"),
        (["train", "--curriculum-scale", "-1"], "scale"),
    ],
)
def test_bad_curriculum_values(args, needle):
    result = _run(*args)
    assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1
