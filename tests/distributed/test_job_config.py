"""One config file describes a multi-machine job: its new sections parse, and bad values fail before any work."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.distributed.roles import ENV, job_toml
from turnrl.config.generation import GeneratorConfig
from turnrl.config.toml_file import load
from turnrl.engine.distributed.train import main as train_main


def test_a_job_file_names_every_role(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text(job_toml(tmp_path / "model", tmp_path / "run", "tcp://10.0.0.2:6000", ["tcp://10.0.0.2:5555"]))
    cfg = load(path, ["placement.learner_ranks=8", "sharding.param_dtype=bfloat16"])
    assert cfg.env.workers.remote == ("tcp://10.0.0.2:5555",) and cfg.env.workers.workers == 0
    assert cfg.rollout.generator.external and cfg.rollout.generator.address == "tcp://10.0.0.2:6000"
    assert cfg.placement.learner_ranks == 8 and cfg.sharding.param_dtype == "bfloat16"
    with pytest.raises(ValueError, match="sharding"):
        load(path, ["sharding.shards=3"])


@pytest.mark.parametrize(
    "bad, needle",
    [
        (dict(kind="service", external=True), "external needs"),
        (dict(kind="local", external=True, address="tcp://h:1"), "external needs"),
        (dict(kind="service", max_frame_bytes=10), "max_frame_bytes"),
    ],
)
def test_bad_generator_config(bad, needle):
    with pytest.raises(ValueError, match=needle):
        GeneratorConfig(**bad)


def test_sharded_run_without_a_model_path_is_refused(tmp_path, capsys):
    path = tmp_path / "job.toml"
    path.write_text("steps = 1\n")
    assert train_main(["--config", str(path)]) == 2
    assert "needs model.path" in capsys.readouterr().err
    assert train_main(["--config", str(tmp_path / "missing.toml")]) == 2


def test_a_finished_rank_leaves_with_its_code_and_output_but_without_finalizing():
    """A rank ends without interpreter finalization (where gloo's late tensor releases abort the process)."""
    script = (
        "import atexit, sys\n"
        "from turnrl.engine.distributed.mesh import exit_without_finalizing\n"
        "atexit.register(lambda: print('finalized'))\n"
        "print('summary', end='')\n"
        "print('warning', end='', file=sys.stderr)\n"
        "exit_without_finalizing(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=ENV)
    assert (done.returncode, done.stdout, done.stderr) == (3, "summary", "warning")
