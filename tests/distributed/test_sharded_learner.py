"""The FSDP2 learner under torchrun (2 ranks, gloo) against the single-process learner on the same batch."""

from __future__ import annotations

import random

import msgspec
import pytest
import torch

from tests.distributed.jobs import random_trajectories, read_dump, run_job, write_batch
from turnrl.config.algo import CriticConfig, LearnerConfig
from turnrl.config.distributed import ShardingConfig
from turnrl.config.placement import PlacementConfig
from turnrl.engine.distributed.mesh import init_mesh
from turnrl.engine.distributed.partition import balanced_parts
from turnrl.engine.training.learner import Learner
from turnrl.models.tiny import build_tiny_model
from turnrl.models.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(["go to the red ball", "turn left", "pick up the grey key", "open the door"] * 20, 300)


@pytest.fixture()
def model_dir(tok, tmp_path):
    build_tiny_model(tok, "micro", max_positions=256, seed=0).save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def _load(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()


def _max_diff(params: dict, model) -> float:
    state = model.state_dict()
    assert set(params) == set(state)
    return max(float((params[k] - state[k]).abs().max()) for k in state)


LISTED = {"off_list_log_prob": "even", "off_list_advantage": 0.5, "list_log_prob_coef": 0.3}


@pytest.mark.parametrize(
    "estimator, extra, sharding",
    [
        ("grpo", {"kl_coef": 0.05}, {}),
        ("ppo", {}, {}),
        ("grpo", {}, {"activation_checkpointing": True}),
        ("grpo", LISTED, {}),
    ],
    ids=["grpo-with-reference", "ppo-with-separate-critic", "activation-checkpointing", "free-text-beside-lists"],
)
def test_one_sharded_update_equals_the_single_process_update(tok, model_dir, tmp_path, estimator, extra, sharding):
    # 7 rows of uneven length over 2 ranks, small micro-batches: the ranks run different numbers of passes
    trajectories = random_trajectories(len(tok), 7, seed=3, listed=extra is LISTED)
    learner = dict(lr=1e-3, lr_warmup_steps=0, minibatches=2, micro_batch_tokens=40, **extra)
    spec = dict(
        model_dir=str(model_dir),
        pad_token_id=tok.pad_token_id,
        learner=learner,
        estimator=estimator,
        batches=[write_batch(tmp_path / "b0.msgpack", trajectories)],
        ops=[{"op": "update", "batch": 0}, {"op": "dump", "path": str(tmp_path / "out.safetensors")}],
        sharding=sharding,
    )
    if estimator == "ppo":
        spec["critic"] = {"kind": "separate", "lr": 1e-3}
    run_job(tmp_path, spec, 2, "update")
    params, meta = read_dump(str(tmp_path / "out.safetensors"))

    model = _load(model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    critic = CriticConfig(kind="separate", lr=1e-3) if estimator == "ppo" else None
    single = Learner(
        model, msgspec.convert(learner, LearnerConfig), tok.pad_token_id, estimator=estimator, critic=critic
    )
    stats = single.update(trajectories)
    assert meta["world"] == 2
    assert max(float((params[k] - before[k]).abs().max()) for k in before) > 1e-4  # the update moved weights
    assert _max_diff(params, model) < 1e-5
    sharded = meta["stats"][0]
    keys = ("loss", "entropy", "clip_frac", "approx_kl", "grad_norm", "optimizer_steps")
    for key in (*keys, "list_log_prob") if extra is LISTED else keys:
        assert sharded[key] == pytest.approx(stats[key], rel=1e-4, abs=1e-6), key
    if estimator == "ppo":
        assert sharded["value_loss"] == pytest.approx(stats["value_loss"], rel=1e-4, abs=1e-7)
        assert sharded["critic_grad_norm"] == pytest.approx(stats["critic_grad_norm"], rel=1e-4, abs=1e-7)


def test_balanced_parts_against_exhaustive_search():
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(0, 50) for _ in range(rng.randint(0, 9))]
        parts = rng.randint(1, 3)
        split = balanced_parts(lengths, parts)
        assert sorted(r for part in split for r in part) == list(range(len(lengths)))
        loads = [sum(lengths[r] for r in part) for part in split]
        # greedy longest-first is within 4/3 of the best split's largest load (Graham's bound)
        best = min(
            max(sum(lengths[r] for r in range(len(lengths)) if assign[r] == p) for p in range(parts))
            for assign in _assignments(len(lengths), parts)
        )
        assert max(loads) <= best * 4 / 3 + 1e-9
    assert balanced_parts([5, 5], 2) == [[0], [1]]


def _assignments(n, parts):
    if n == 0:
        yield ()
        return
    for rest in _assignments(n - 1, parts):
        for p in range(parts):
            yield (*rest, p)


def test_bad_sharding_input(monkeypatch, tok):
    with pytest.raises(ValueError, match="parts must be >= 1"):
        balanced_parts([1, 2], 0)
    with pytest.raises(ValueError, match="lengths must be >= 0"):
        balanced_parts([1, -2], 2)
    with pytest.raises(ValueError, match="param_dtype"):
        ShardingConfig(param_dtype="int8")
    with pytest.raises(ValueError, match="backend"):
        ShardingConfig(backend="mpi")
    with pytest.raises(ValueError, match="learner_ranks"):
        PlacementConfig(learner_ranks=0)
    with pytest.raises(ValueError, match="strategy"):
        PlacementConfig(strategy="ANYWHERE")
    with pytest.raises(ValueError, match="cpus_per_learner"):
        PlacementConfig(cpus_per_learner=0)
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match="not launched by torchrun"):
        init_mesh()
    from turnrl.engine.distributed.learner import ShardedLearner

    model = build_tiny_model(tok, "micro", max_positions=64, seed=0)
    with pytest.raises(ValueError, match=r"critic\.kind = 'separate'"):
        ShardedLearner(model, LearnerConfig(), 0, mesh=None, estimator="ppo", critic=CriticConfig(kind="head"))


def test_bfloat16_parameters_with_float32_reduction_stay_near_the_float32_update(tok, model_dir, tmp_path):
    trajectories = random_trajectories(len(tok), 6, seed=5)
    learner = dict(lr=1e-3, lr_warmup_steps=0, minibatches=1, micro_batch_tokens=64)
    spec = dict(
        model_dir=str(model_dir),
        pad_token_id=tok.pad_token_id,
        learner=learner,
        batches=[write_batch(tmp_path / "b0.msgpack", trajectories)],
        ops=[{"op": "update", "batch": 0}, {"op": "dump", "path": str(tmp_path / "out.safetensors")}],
        sharding={"param_dtype": "bfloat16", "reduce_dtype": "float32"},
    )
    run_job(tmp_path, spec, 2, "bf16")
    params, meta = read_dump(str(tmp_path / "out.safetensors"))
    model = _load(model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Learner(model, msgspec.convert(learner, LearnerConfig), tok.pad_token_id).update(trajectories)
    after = model.state_dict()
    # the master weights stay float32; one Adam step moves each weight by about lr either way
    assert all(params[k].dtype == torch.float32 for k in params)
    step = torch.cat([(after[k] - before[k]).flatten() for k in before])
    gap = torch.cat([(params[k] - after[k]).flatten() for k in before])
    moved = torch.cat([(params[k] - before[k]).flatten() for k in before])
    assert float(moved.abs().mean()) > 0.5 * float(step.abs().mean())
    assert float(gap.abs().mean()) < 0.25 * float(step.abs().mean())  # mostly the same direction
    assert float(gap.abs().max()) > 1e-6  # ... but computed in bfloat16: not bit-equal to the float32 update
    assert meta["stats"][0]["loss"] == pytest.approx(
        Learner(_load(model_dir), msgspec.convert(learner, LearnerConfig), tok.pad_token_id).update(trajectories)[
            "loss"
        ],
        abs=0.02,
    )
