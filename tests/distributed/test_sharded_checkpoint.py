"""DCP checkpoints of the sharded learner: written at 2 ranks, resumed at 1 and at 2 ranks.

At eta = 0 a resumed run's next update equals the uninterrupted run's (parameters, Adam moments, warm-up
schedule and shuffling RNG all restored); the parameters right after loading equal the saved ones.
"""

from __future__ import annotations

import json

import pytest

from tests.distributed.jobs import random_trajectories, read_dump, run_job, write_batch
from turnrl.engine.distributed.checkpoint import LEARNER_JSON
from turnrl.models.tiny import build_tiny_model
from turnrl.models.tokenizer import train_tokenizer


def _max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_written_at_two_ranks_resumes_at_one_and_two(tmp_path):
    tok = train_tokenizer(["go to the red ball", "turn left", "pick up the grey key", "open the door"] * 20, 300)
    build_tiny_model(tok, "micro", max_positions=256, seed=0).save_pretrained(tmp_path / "model")
    batches = [
        write_batch(tmp_path / f"b{i}.msgpack", random_trajectories(len(tok), 6 + i, seed=10 + i)) for i in range(2)
    ]
    # warm-up of 3 steps: the schedule's position matters; kl_coef: the reference is saved too
    learner = dict(lr=2e-3, lr_warmup_steps=3, minibatches=2, micro_batch_tokens=48, kl_coef=0.05)
    base = dict(model_dir=str(tmp_path / "model"), pad_token_id=tok.pad_token_id, learner=learner, batches=batches)
    ckpt = str(tmp_path / "ckpt")

    def dump(name):
        return {"op": "dump", "path": str(tmp_path / f"{name}.safetensors")}

    run_job(
        tmp_path,
        {
            **base,
            "ops": [
                {"op": "update", "batch": 0},
                {"op": "save", "dir": ckpt, "step": 1},
                dump("saved"),
                {"op": "update", "batch": 1},
                dump("uninterrupted"),
            ],
        },
        2,
        "write",
    )
    meta = json.loads((tmp_path / "ckpt" / LEARNER_JSON).read_text())
    assert meta["state"] == {"step": 1} and meta["world_size"] == 2 and meta["learner"]["updates"] == 1
    assert not (tmp_path / "ckpt.partial").exists()
    saved, _ = read_dump(str(tmp_path / "saved.safetensors"))
    uninterrupted, _ = read_dump(str(tmp_path / "uninterrupted.safetensors"))
    fresh = build_tiny_model(tok, "micro", max_positions=256, seed=0).state_dict()
    assert _max_diff(saved, fresh) > 1e-4 and _max_diff(uninterrupted, saved) > 1e-4

    for ranks in (1, 2):
        ops = [
            {"op": "load", "dir": ckpt},
            dump(f"loaded{ranks}"),
            {"op": "update", "batch": 1},
            dump(f"resumed{ranks}"),
        ]
        run_job(tmp_path, {**base, "ops": ops}, ranks, f"resume{ranks}")
        loaded, _ = read_dump(str(tmp_path / f"loaded{ranks}.safetensors"))
        resumed, info = read_dump(str(tmp_path / f"resumed{ranks}.safetensors"))
        assert info["world"] == ranks
        assert _max_diff(loaded, saved) == 0.0
        assert _max_diff(resumed, uninterrupted) < 1e-5, ranks


def test_loading_an_incomplete_checkpoint_is_refused(tmp_path):
    from turnrl.engine.distributed.checkpoint import load_sharded

    (tmp_path / "ckpt").mkdir()
    with pytest.raises(FileNotFoundError, match="not a complete sharded checkpoint"):
        load_sharded(tmp_path / "ckpt", learner=None)
