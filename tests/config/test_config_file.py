"""TOML run configs: round trips, overrides, the example files, and every kind of bad config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from turnrl.config.curriculum import CurriculumConfig
from turnrl.config.toml_file import apply_overrides, dump_toml, load, parse_override
from turnrl.config.train import TrainConfig
from turnrl.engine.rollout.curriculum import TurnCapSchedule
from turnrl.envs import get_env_spec
from turnrl.recipes import constrained_decoding, demo_config

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.toml"))


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(),
        demo_config("babyai", algo="ppo", steps=7, seed=3, level="GoToObj"),
        demo_config(
            "textcraft",
            model="/models/some-model",
            curriculum=CurriculumConfig(kind="scaling_inter", caps=(10, 20, 30)),
        ),
        demo_config("sciworld", algo="rloo", out="runs/sw"),
    ],
)
def test_round_trip(config, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(dump_toml(config))
    assert load(path) == config


def test_overrides_reach_nested_structs(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(dump_toml(demo_config("babyai")))
    config = load(
        path,
        [
            "algo.learner.clip_high=0.31",
            "rollout.episode.turn_cap=9",
            "env.options.level=GoToObj",
            "curriculum.caps=[2, 4]",
            "algo.name='rloo'",
            "steps=5",
            "steps=6",
        ],
    )
    assert config.algo.learner.clip_high == 0.31 and config.rollout.episode.turn_cap == 9
    assert config.env.options == {"level": "GoToObj", "layout": "turnrl"} and config.curriculum.caps == (2, 4)
    assert config.algo.name == "rloo" and config.steps == 6  # the later override wins
    assert config.algo.learner.lr == demo_config("babyai").algo.learner.lr  # untouched keys keep the file's
    assert parse_override("a.b = true") == (["a", "b"], True)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_load_and_run_their_schedule(example):
    config = load(example)
    get_env_spec(config.env.family)
    TurnCapSchedule(config.curriculum, config.env.family, config.rollout.episode.turn_cap)
    assert load(example, []) == config


def test_cpu_example_is_the_demo():
    config = load(Path(__file__).resolve().parents[2] / "examples" / "babyai_cpu.toml")
    assert msgspec.structs.replace(config, checkpoint_every=0) == demo_config("babyai")


def test_constrained_decoding_changes_only_the_decoding():
    free = demo_config("babyai")
    assert not free.rollout.episode.constrain_to_valid_actions and free.rollout.episode.learn_from_listed_actions
    pinned = constrained_decoding(free)
    episode = pinned.rollout.episode
    assert episode.constrain_to_valid_actions and not episode.learn_from_listed_actions
    back = msgspec.structs.replace(episode, constrain_to_valid_actions=False, learn_from_listed_actions=True)
    assert msgspec.structs.replace(pinned, rollout=msgspec.structs.replace(pinned.rollout, episode=back)) == free


def test_textcraft_example_is_the_demo():
    config = load(Path(__file__).resolve().parents[2] / "examples" / "textcraft_cpu.toml")
    assert config == demo_config("textcraft")
    assert config.rollout.episode.constrain_to_valid_actions is False


@pytest.mark.parametrize(
    ("text", "overrides", "needle"),
    [
        ("stepz = 3", [], "unknown key 'stepz'"),
        ("[rollout]\ngroup_sise = 4", [], "unknown key 'rollout.group_sise'"),
        ("[algo.learner]\nclip_hihg = 0.3", [], "unknown key 'algo.learner.clip_hihg'"),
        ("", ["rollout.episode.turncap=3"], "unknown key 'rollout.episode.turncap'"),
        ("[rollout]\ngroup_size = 'eight'", [], "rollout.group_size: Expected `int`, got `str`"),
        ("steps = 1.5", [], "steps: Expected `int`, got `float`"),
        ("", ["algo.learner.lr=fast"], "algo.learner.lr: Expected `float`, got `str`"),
        ("[rollout]\ngroup_size = 1", [], "rollout: rollout.group_size must be >= 2"),
        ("[algo]\nname = 'ppo9'", [], "algo: unknown algorithm 'ppo9'"),
        ("[env.options]\nlevel = [1, 2]", [], "env.options"),
        ("rollout = 3", [], "rollout: Expected `object`, got `int`"),
        ("steps = 3", ["steps.x=1"], "steps is a value, not a table"),
        ("", ["steps.x=1"], "steps: Expected `int`, got `object`"),
        ("", ["no_equals_sign"], "--set expects KEY=VALUE"),
        ("", ["a..b=1"], "--set expects KEY=VALUE"),
        ("steps = ", [], "not valid TOML"),
        ("", ["rollout.episode.invalid_reply_penalty=-1"], "invalid_reply_penalty must be >= 0"),
        (
            "[rollout.generator]\nkind = 'sglang'\nurls = ['http://127.0.0.1:30000']",
            ["rollout.episode.constrain_to_valid_actions=true"],
            "constrain_to_valid_actions=true cannot run with rollout.generator.kind='sglang'",
        ),
        (
            "[rollout.generator]\nkind = 'sglang'\nurls = ['http://127.0.0.1:30000']",
            ["rollout.constrained_steps=5"],
            "(nor can rollout.constrained_steps > 0)",
        ),
        ("", ["rollout.constrained_steps=-1"], "rollout.constrained_steps must be >= 0"),
        (
            "",
            ["rollout.constrained_steps=5", "rollout.episode.constrain_to_valid_actions=true"],
            "rollout.constrained_steps is for free text",
        ),
    ],
)
def test_bad_configs_name_the_key(text, overrides, needle, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        load(path, overrides)
    assert needle in str(info.value)


def test_missing_file():
    with pytest.raises(ValueError, match="does not exist"):
        load("/no/such/config.toml")


def test_overrides_do_not_touch_their_input():
    data = {"rollout": {"group_size": 4}}
    apply_overrides(data, ["rollout.group_size=6"])
    assert data == {"rollout": {"group_size": 4}}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "turnrl.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "algo.learner.clipp=0.3"], "unknown key 'algo.learner.clipp'"),  # --set without a file
        (["--config", "CPU_EXAMPLE", "--env", "textcraft"], "--env cannot be combined with --config"),
        (["--config", "CPU_EXAMPLE", "--generator", "service"], "--generator cannot be combined with --config"),
        (["--resume", "--out", "x", "--set", "steps=3"], "--config and --set do not apply"),
        (["--config", "CPU_EXAMPLE", "--set", "model.path='/no/such/model'"], "does not exist"),
    ],
)
def test_cli_bad_configs(args, needle):
    example = str(Path(__file__).resolve().parents[2] / "examples" / "babyai_cpu.toml")
    result = _cli("train", *[example if a == "CPU_EXAMPLE" else a for a in args])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("turnrl: error:") and needle in lines[0]


def test_cli_trains_from_a_config_and_saves_it_resolved(tmp_path, tiny_model, tokenizer):
    from turnrl.models.loading import save_policy

    model = save_policy(tiny_model, tokenizer, tmp_path / "model")
    path = tmp_path / "run.toml"
    path.write_text(dump_toml(demo_config("babyai")))
    out = tmp_path / "run"
    result = _cli(
        "train",
        "--config",
        str(path),
        "--out",
        str(out),
        "--steps",
        "1",
        "--set",
        f"model.path='{model}'",
        "--set",
        "rollout.prompts_per_step=2",
        "--set",
        "rollout.group_size=2",
        "--set",
        "eval.tasks=2",
        "--set",
        "rollout.episode.turn_cap=2",
        "--set",
        "eval.turn_cap=2",
        "--set",
        "algo.learner.clip_high=0.31",
    )
    assert result.returncode == 0, result.stderr
    saved = msgspec.convert(json.loads((out / "config.json").read_text()), TrainConfig)
    assert saved.algo.learner.clip_high == 0.31 and saved.steps == 1 and saved.out == str(out)
    assert saved.model.path == str(model) and saved.rollout.group_size == 2
    assert (
        load(
            path,
            [
                f"model.path='{model}'",
                "rollout.prompts_per_step=2",
                "rollout.group_size=2",
                "eval.tasks=2",
                "rollout.episode.turn_cap=2",
                "eval.turn_cap=2",
                "algo.learner.clip_high=0.31",
                "steps=1",
                f"out='{out}'",
            ],
        )
        == saved
    )
