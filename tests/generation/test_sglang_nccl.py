"""Weight sync by broadcast: the learner (rank 0) and two servers, each in its own process, in one real group.

The servers are fakes that follow SGLang's receiving side (``init_weights_update_group``, then
``update_weights_from_distributed`` with ``flattened_bucket`` inside ``begin_weight_update`` ...
``end_weight_update``); on CPU the backend is gloo instead of NCCL, the protocol and the buckets are the same.
After each push every server holds exactly the learner's weights, byte for byte.
"""

from __future__ import annotations

import hashlib

import httpx
import pytest
import torch

from tests.generation.fake_sglang_process import FakeSGLangProcess
from turnrl.config.generation import SGLangConfig, SGLangOptions
from turnrl.engine.generation import weight_broadcast as wb
from turnrl.engine.generation.sglang import SGLangGenerator
from turnrl.errors import SGLangError
from turnrl.protocol import GenerateRequest


def _digest(model) -> dict:
    return {
        n: hashlib.sha256(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
        for n, t in model.state_dict().items()
    }


def _server_digest(url: str) -> dict:
    return httpx.get(url + "/fake/digest", timeout=30).json()


@pytest.fixture(scope="module")
def model(tokenizer):
    from turnrl.models.tiny import build_tiny_model

    return build_tiny_model(tokenizer, "tiny", max_positions=256, seed=1)


async def test_a_broadcast_push_leaves_every_server_with_the_learners_exact_weights(model, tokenizer, tmp_path):
    state = model.state_dict()
    nbytes = sum(t.numel() * t.element_size() for t in state.values())
    options = SGLangOptions(weight_sync="nccl", nccl_backend="gloo", bucket_mb=1, retry_backoff_s=0.01)
    with FakeSGLangProcess(state) as one, FakeSGLangProcess(state) as two:
        gen = SGLangGenerator(SGLangConfig(urls=[one.url, two.url], options=options))
        try:
            assert _server_digest(one.url) != _digest(model)  # zeros at start
            assert await gen.push_weights(model, tokenizer, tmp_path) == 1
            for url in (one.url, two.url):
                assert _server_digest(url) == _digest(model)
            with torch.no_grad():  # the learner steps: new weights, same group
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 0.01)
            assert await gen.push_weights(model, tokenizer, tmp_path) == 2
            for url in (one.url, two.url):
                assert _server_digest(url) == _digest(model)
            result = await gen.generate(GenerateRequest(request_id="after", input_ids=[1, 2, 3]))
            assert set(result.versions) == {2}
        finally:
            await gen.close()
    assert nbytes > 2 * 2**20  # several buckets were sent
    assert not list(tmp_path.iterdir())  # nothing went through the disk


def test_buckets_keep_every_tensor_once_aligned_and_round_trip():
    gen = torch.Generator().manual_seed(0)
    tensors = []
    for i in range(40):
        dtype = [torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.uint8][i % 5]
        shape = [int(torch.randint(1, 9, (1,), generator=gen)) for _ in range(i % 3 + 1)]
        tensors.append((f"t{i}", (torch.randn(shape, generator=gen) * 100).to(dtype)))
    for limit in (1, 64, 300, 10**6):
        parts = wb.buckets(tensors, limit)
        assert sorted(n for b in parts for n, _ in b) == sorted(n for n, _ in tensors)
        for bucket in parts:
            size = sum(t.numel() * t.element_size() for _, t in bucket)
            assert size <= limit or len(bucket) == 1
            offset = 0
            for _, t in bucket:
                assert offset % t.element_size() == 0
                offset += t.numel() * t.element_size()
            meta = wb.metadata(bucket)
            back = wb.unflatten(wb.flatten(bucket, "cpu"), **meta)
            for name, t in bucket:
                assert back[name].dtype == t.dtype and torch.equal(back[name], t)
    with pytest.raises(ValueError, match="bucket_bytes"):
        wb.buckets(tensors, 0)
    with pytest.raises(ValueError, match="metadata describes"):
        wb.unflatten(torch.zeros(3, dtype=torch.uint8), ["a"], ["float32"], [[1]])


async def test_a_server_refusing_a_bucket_is_reported_and_generation_stops_until_a_good_push(
    model, tokenizer, tmp_path
):
    state = model.state_dict()
    partial = {n: t for i, (n, t) in enumerate(state.items()) if i != 1}  # this server lacks one tensor
    options = SGLangOptions(weight_sync="nccl", nccl_backend="gloo", bucket_mb=1, retry_backoff_s=0.01)
    with FakeSGLangProcess(state) as good, FakeSGLangProcess(partial) as bad:
        gen = SGLangGenerator(SGLangConfig(urls=[good.url, bad.url], options=options))
        try:
            with pytest.raises(
                SGLangError, match=r"update_weights_from_distributed \(bucket 1 of \d+\) failed.*online"
            ):
                await gen.push_weights(model, tokenizer, tmp_path)
            assert gen.weight_version == 0
            with pytest.raises(SGLangError, match="hold different weights"):
                await gen.generate(GenerateRequest(request_id="refused", input_ids=[1, 2]))
            for url in (good.url, bad.url):  # the bracket was closed on both, and generation continued
                paths = [p for p, _ in httpx.get(url + "/fake/raw", timeout=30).json()]
                assert paths[-2:] == ["/end_weight_update", "/continue_generation"], paths
        finally:
            await gen.close()
