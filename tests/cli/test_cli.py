"""Command line: bad values give one line, exit status 2, no traceback. Most cases call ``main`` in this process
(what ``python -m turnrl.cli`` runs, less the interpreter's start); a few run the real command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from turnrl.cli import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "turnrl.cli", *args], capture_output=True, text=True, timeout=120)


def _main(capsys, *args: str) -> tuple[int, str, str]:
    """``main(args)`` in this process: (exit status, stdout, stderr); an exception it lets out fails the test."""
    status = main(list(args))
    out = capsys.readouterr()
    return status, out.out, out.err


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
def test_bad_values(args, needle, capsys):
    status, stdout, stderr = _main(capsys, *args)
    assert status == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("turnrl: error:") and needle in lines[0]
    assert "Traceback" not in stderr and stdout == ""


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
def test_bad_curriculum_values(args, needle, capsys):
    status, _, stderr = _main(capsys, *args)
    assert status == 2 and needle in stderr and "Traceback" not in stderr
    assert len([line for line in stderr.splitlines() if line.strip()]) == 1
