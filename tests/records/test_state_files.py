"""Training state saved without pickle comes back exactly, RNG states continue the same streams, and files
that are not what the loader reads (a pickle among them) are refused with CheckpointError and never run."""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch

from turnrl.engine.records.checkpoint import (
    check_no_pickle,
    global_rng_states,
    load_learner_state,
    load_rng_states,
    restore_rng_states,
    save_checkpoint,
)
from turnrl.engine.records.state_files import load_state, save_state, state_paths
from turnrl.errors import CheckpointError


def assert_same(a, b, where="$"):
    """Exact equality with exact types: tuples are not lists, 1 is not 1.0, tensors match in dtype and bits."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert type(key) is type(next(k for k in b if k == key)), f"{where}: key {key!r}"
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}.{i}")
    elif isinstance(a, float) and a != a:
        assert b != b, where
    else:
        assert a == b, where


def trained_optimizer_state(seed: int) -> dict:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 3))
    for _ in range(3):
        model(torch.randn(4, 5)).pow(2).mean().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_training_state_round_trips_exactly(tmp_path, seed):
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    torch.rand(rng.randint(1, 50), generator=generator)
    tree = {
        **trained_optimizer_state(seed),
        "rng": random.Random(seed).getstate(),
        "numpy": np.random.RandomState(seed).get_state(),
        "generator": generator.get_state(),
        "weights": {f"layer.{i}": torch.randn(rng.randint(1, 4), 3, dtype=torch.bfloat16) for i in range(3)},
        "odd keys": {3: "int", (1, 2): "tuple", "$dollar": "escaped", None: [1.0, 1, True]},
        "floats": [rng.random() * 10 ** rng.randint(-300, 300), float("nan"), float("inf"), -0.0, 5e-324],
        "raw": bytes(rng.randrange(256) for _ in range(rng.randint(0, 40))),
        "scalar": torch.tensor(rng.random(), dtype=torch.float64),
        "empty": ((), [], {}),
        "updates": rng.randint(0, 10**20),
    }
    save_state(tmp_path / "state", tree)
    assert_same(load_state(tmp_path / "state"), tree)


def test_a_learner_state_loads_into_an_optimizer_and_steps_the_same(tmp_path):
    def run(load_from=None):
        torch.manual_seed(7)
        model = torch.nn.Linear(4, 2)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
        if load_from is not None:
            model.load_state_dict(load_from["model"])
            optimizer.load_state_dict(load_from["optimizer"])
        for _ in range(2):
            model(torch.ones(3, 4)).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict()}

    halfway = run()
    save_state(tmp_path / "learner", halfway)
    straight, resumed = run(load_from=halfway), run(load_from=load_state(tmp_path / "learner"))
    for name in straight["model"]:
        assert torch.equal(straight["model"][name], resumed["model"][name])


def test_rng_states_restore_the_same_streams(tmp_path, tiny_model, tokenizer):
    torch.manual_seed(123)
    random.seed(456)
    np.random.seed(789)
    for _ in range(3):  # move each stream off its seed
        torch.rand(1)
        random.random()
        np.random.rand()
    path = save_checkpoint(tmp_path, 1, tiny_model, tokenizer, torch.optim.SGD(tiny_model.parameters(), lr=0.1), {})
    expected = (torch.rand(5), [random.random() for _ in range(5)], np.random.rand(5))
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    restore_rng_states(load_rng_states(path))
    assert torch.equal(torch.rand(5), expected[0])
    assert [random.random() for _ in range(5)] == expected[1]
    assert np.array_equal(np.random.rand(5), expected[2])
    assert set(global_rng_states()) == {"torch", "python", "numpy"}


class RunsCode:
    """Unpickling this creates ``marker``: what a crafted checkpoint would do if anything unpickled it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize(
    "target",
    ["learner.json", "learner.safetensors", "rng.json", "rng.safetensors", "learner.pt", "rng.pt", "model.bin"],
)
def test_a_checkpoint_holding_a_pickle_is_refused_and_never_unpickled(tmp_path, tiny_model, tokenizer, target):
    optimizer = torch.optim.AdamW(tiny_model.parameters())
    path = save_checkpoint(tmp_path, 1, tiny_model, tokenizer, optimizer, {})
    marker = tmp_path / "code-ran"
    (path / target).write_bytes(pickle.dumps({"state": RunsCode(marker)}))
    loader = load_rng_states if target.startswith("rng") else load_learner_state
    with pytest.raises(CheckpointError, match=r"pickle|not JSON|not a safetensors"):
        loader(path)
    assert not marker.exists()
    if target.endswith((".pt", ".bin")):
        with pytest.raises(CheckpointError, match=f"pickle-format files \\['{target}'\\]"):
            check_no_pickle(path)


@pytest.mark.parametrize(
    ("document", "needle"),
    [
        ('{"format": 1, "tree": {"$tensor": "absent"}}', "absent"),
        ('{"format": 1, "tree": {"$eval": "os.system"}}', "unknown node"),
        ('{"format": 1, "tree": {"$tuple": [], "x": 1}}', "mixes"),
        ('{"format": 1, "tree": {"$bytes": "not base64!"}}', "s\\.json"),
        ('{"format": 2, "tree": 1}', "not a turnrl state file"),
        ("[1, 2", "not JSON"),
    ],
)
def test_malformed_state_files_are_refused(tmp_path, document, needle):
    save_state(tmp_path / "s", {"x": torch.zeros(2)})
    state_paths(tmp_path / "s")[0].write_text(document)
    with pytest.raises(CheckpointError, match=needle):
        load_state(tmp_path / "s")


def test_missing_files_and_unstorable_values(tmp_path):
    save_state(tmp_path / "s", {"x": 1})
    state_paths(tmp_path / "s")[1].unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_state(tmp_path / "s")
    with pytest.raises(TypeError, match=r"cannot store object at '\$\.a\.0' without pickle"):
        save_state(tmp_path / "t", {"a": [object()]})
