"""The Generator contract, written once and run over every implementation.

In process (``LocalGenerator``), the service in its own process over ZeroMQ (``ServiceGenerator``), and SGLang
(``SGLangGenerator`` against loopback servers that check SGLang's request shapes). Each must: answer every request
exactly once with a per-token weight version; raise ``ValueError`` for a request it cannot serve; serve new weights
after ``push_weights`` under a version exactly one higher; restore the sampling RNG exactly when it can save it;
count cumulatively in ``stats``; and close twice without harm.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.generation.fake_sglang import FakeSGLang
from turnrl.config.generation import ServiceConfig, SGLangConfig
from turnrl.engine.generation.base import Generator, GeneratorStats
from turnrl.engine.generation.local import LocalGenerator
from turnrl.engine.generation.service_client import ServiceGenerator, ServiceProcess
from turnrl.engine.generation.sglang import SGLangGenerator
from turnrl.models.loading import save_policy
from turnrl.protocol import GenerateRequest, SamplingParams

KINDS = ["local", "service", "sglang"]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, make_tiny_model, tokenizer):
    import torch

    torch.manual_seed(0)
    model = make_tiny_model()
    path = tmp_path_factory.mktemp("contract") / "model"
    save_policy(model, tokenizer, path)
    return model, path


@pytest.fixture(scope="module")
def service(saved_model, tmp_path_factory):
    _, path = saved_model
    address = f"ipc://{tmp_path_factory.mktemp('sock') / 'gen.sock'}"
    with ServiceProcess(ServiceConfig(model_path=str(path), address=address, seed=0, torch_threads=1)) as process:
        yield process


@pytest.fixture(params=KINDS)
async def kind(request, saved_model, tokenizer, tmp_path):
    """(kind, generator, model): a fresh client per test; the service process is shared by the module."""
    model, _ = saved_model
    fakes = []
    if request.param == "local":
        generator: Generator = LocalGenerator(model, tokenizer.pad_token_id, seed=0)
    elif request.param == "service":
        process = request.getfixturevalue("service")
        generator = ServiceGenerator(process.config.address, request_timeout_s=60)
    else:
        fakes = [FakeSGLang(vocab=len(tokenizer)), FakeSGLang(vocab=len(tokenizer))]
        generator = SGLangGenerator(SGLangConfig(urls=[f.url for f in fakes], request_timeout_s=30))
    yield request.param, generator, model
    await generator.close()
    for fake in fakes:
        fake.close()


def _request(rid: str, n: int = 7, max_new: int = 5, temperature: float = 1.0, session: str | None = None):
    ids = [(7 * i + len(rid)) % 500 + 5 for i in range(n)]
    return GenerateRequest(
        request_id=rid,
        input_ids=ids,
        session_id=session,
        sampling=SamplingParams(temperature=temperature, max_new_tokens=max_new),
    )


async def test_every_request_is_answered_once_with_per_token_versions(kind):
    _, generator, _ = kind
    requests = [_request(f"r{i}", n=3 + i, max_new=2 + i % 4, session=f"s{i % 3}") for i in range(10)]
    results = await asyncio.gather(*(generator.generate(r) for r in requests))
    assert [r.request_id for r in results] == [r.request_id for r in requests]
    for request, result in zip(requests, results, strict=True):
        assert 1 <= len(result.output_ids) <= request.sampling.max_new_tokens
        assert len(result.logprobs) == len(result.versions) == len(result.output_ids)
        assert set(result.versions) == {generator.weight_version}
        assert result.finish_reason in ("stop", "length")
        assert all(lp <= 0 for lp in result.logprobs)


async def test_a_request_it_cannot_serve_is_a_value_error(kind):
    _, generator, _ = kind
    with pytest.raises(ValueError, match="input_ids"):
        await generator.generate(GenerateRequest(request_id="empty", input_ids=[]))
    result = await generator.generate(_request("after"))  # and it keeps serving
    assert result.output_ids


async def test_push_weights_serves_them_under_the_next_version(kind, tokenizer, tmp_path):
    _, generator, model = kind
    before = generator.weight_version
    assert await generator.push_weights(model, tokenizer, tmp_path / "staging") == before + 1
    assert generator.weight_version == before + 1
    result = await generator.generate(_request("later"))
    assert set(result.versions) == {before + 1}


async def test_the_sampling_rng_is_restored_exactly_or_not_claimed(kind):
    _, generator, _ = kind
    state = generator.rng_state()
    if state is None:  # another process's RNG: nothing is claimed, nothing is restored
        generator.set_rng_state(None)
        return
    first = await generator.generate(_request("a", max_new=6))
    generator.set_rng_state(state)
    again = await generator.generate(_request("a", max_new=6))
    assert again.output_ids == first.output_ids and again.logprobs == first.logprobs


async def test_stats_are_cumulative(kind):
    name, generator, _ = kind
    before = await generator.stats()
    assert isinstance(before, GeneratorStats) and before.weight_version == generator.weight_version
    await asyncio.gather(*(generator.generate(_request(f"s{i}", session=f"x{i}")) for i in range(3)))
    after = await generator.stats()
    fields = ("requests_finished", "tokens_generated", "prefill_tokens", "prefix_lookups", "busy_seconds")
    assert all(getattr(after, f) >= getattr(before, f) for f in fields)
    if name != "sglang":  # the engine counts what it did
        assert after.requests_finished == before.requests_finished + 3
        assert after.prefix_lookups == before.prefix_lookups + 3


async def test_close_twice_is_harmless(kind):
    _, generator, _ = kind
    await generator.generate(_request("one"))
    await generator.close()
    await generator.close()
