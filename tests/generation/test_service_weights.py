"""Weights as raw-byte tensors: exact round trip, and bad updates refused before anything is written."""

from __future__ import annotations

import pytest
import torch

from turnrl.models.weights import load_tensors_into, pack_tensors, unpack_tensors
from turnrl.protocol import TensorData, decode, encode


def test_tensors_round_trip_exactly_through_msgpack():
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "a": torch.randn(3, 5, generator=gen),
        "b": torch.randn(7, generator=gen).to(torch.bfloat16),
        "c": torch.randint(-9, 9, (2, 2, 3), generator=gen),
        "empty": torch.zeros(0, 4),
        "scalar": torch.tensor(2.5, dtype=torch.float16),
    }
    packed = pack_tensors(tensors)
    wire = {name: decode(encode(item), TensorData) for name, item in packed.items()}
    back = unpack_tensors(wire)
    for name, tensor in tensors.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape
        assert torch.equal(back[name], tensor), name


def test_bad_tensor_data_is_refused():
    with pytest.raises(ValueError, match="bytes for shape"):
        unpack_tensors({"w": TensorData(dtype="float32", shape=[2, 2], data=b"\x00" * 12)})
    with pytest.raises(ValueError, match="unknown dtype"):
        unpack_tensors({"w": TensorData(dtype="complex_banana", shape=[1], data=b"\x00")})
    with pytest.raises(ValueError, match="negative"):
        unpack_tensors({"w": TensorData(dtype="uint8", shape=[-1], data=b"")})


def test_load_checks_every_tensor_before_writing_any():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new_weight = torch.randn(4, 3)
    with pytest.raises(ValueError, match="shape"):
        load_tensors_into(model, {"0.weight": new_weight, "1.weight": torch.zeros(5, 5)})
    with pytest.raises(ValueError, match="no parameter"):
        load_tensors_into(model, {"0.weight": new_weight, "2.bias": torch.zeros(2)})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert load_tensors_into(model, {"0.weight": new_weight.double()}) == 1
    assert torch.equal(model[0].weight, new_weight) and model[0].weight.dtype == torch.float32
