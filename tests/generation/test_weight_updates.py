"""Weight updates while generating: a generator with its own copy of the weights takes new ones between two decode
steps; a request running across three updates continues under each (``continue``) or is aborted and resumed from
its partial output (``abort``), and either way every token's log-prob is the one its own version's weights give.
"""

from __future__ import annotations

import asyncio
import copy

import pytest
import torch

from turnrl.engine.generation.local import LocalGenerator
from turnrl.engine.generation.partial import continuation, merge
from turnrl.engine.training.batch import pack, policy_logprobs
from turnrl.protocol import GenerateRequest, GenerateResult, SamplingParams, Task, Trajectory


def _perturbed(model, scale: float, seed: int):
    """A copy of ``model`` with every weight moved, so that each version samples from different logits."""
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return other


def _recompute(model, request: GenerateRequest, result: GenerateResult) -> torch.Tensor:
    ids = list(request.input_ids) + result.output_ids
    n = len(request.input_ids)
    traj = Trajectory(
        task=Task(env="t", item_id=0),
        token_ids=ids,
        loss_mask=[0] * n + [1] * len(result.output_ids),
        logprobs=[0.0] * n + result.logprobs,
        versions=[0] * len(ids),
        prompt_len=n,
    )
    batch = pack([traj], None, 0)
    with torch.no_grad():
        lp, _, _ = policy_logprobs(model, batch)
    return lp[0, n:]


async def _wait_for_tokens(generator: LocalGenerator, at_least: int) -> None:
    for _ in range(10_000):  # bounded: the engine steps inline (use_thread=False), one step per loop turn or so
        if generator.engine.batcher.tokens >= at_least:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"the engine did not reach {at_least} tokens")


@pytest.mark.parametrize("in_flight", ["continue", "abort"])
async def test_a_request_spanning_three_updates_keeps_every_token_true_to_its_version(tiny_model, tokenizer, in_flight):
    learner = tiny_model
    generator = LocalGenerator(
        learner, tokenizer.pad_token_id, use_thread=False, seed=0, copy_weights=True, in_flight=in_flight
    )
    assert not generator.reads_weights_of(learner) and generator.model is not learner
    request = GenerateRequest(
        request_id="long", input_ids=[5, 17, 42, 9, 33], sampling=SamplingParams(temperature=1.0, max_new_tokens=40)
    )
    weights = {0: copy.deepcopy(learner)}
    task = asyncio.create_task(generator.generate(request))
    for version in (1, 2, 3):
        await _wait_for_tokens(generator, 8 * version)
        updated = _perturbed(learner, 0.05, seed=version)
        learner.load_state_dict(updated.state_dict())
        assert await generator.push_weights(learner, tokenizer, staging_dir=None) == version
        weights[version] = copy.deepcopy(learner)
    result = await task
    await generator.close()

    assert len(result.output_ids) == 40 and result.finish_reason == "length"  # nothing lost, nothing redone
    assert generator.engine.batcher.tokens == 40
    assert result.versions == sorted(result.versions) and set(result.versions) == {0, 1, 2, 3}
    versions = torch.tensor(result.versions)
    sampled = torch.tensor(result.logprobs)
    for version, model in weights.items():
        recomputed = _recompute(model, request, result)
        mine = versions == version
        assert torch.allclose(recomputed[mine], sampled[mine], atol=1e-4), version
        if version:  # and another version's weights would not have given them
            assert not torch.allclose(recomputed[~mine], sampled[~mine], atol=1e-3)


async def test_an_update_without_a_copy_must_be_the_learners_own_model(tiny_model, tokenizer):
    generator = LocalGenerator(tiny_model, tokenizer.pad_token_id, use_thread=False)
    assert generator.reads_weights_of(tiny_model)
    assert await generator.push_weights(tiny_model, tokenizer, staging_dir=None) == 1
    with pytest.raises(ValueError, match="own model"):
        await generator.push_weights(copy.deepcopy(tiny_model), tokenizer, staging_dir=None)
    await generator.close()


def test_a_continuation_asks_only_for_the_rest():
    sampling = SamplingParams(max_new_tokens=10, stop_token_ids=(2,))
    request = GenerateRequest(request_id="r", input_ids=[7, 8], sampling=sampling, session_id="s")
    partial = GenerateResult(
        request_id="r", output_ids=[4, 5, 6], logprobs=[-1.0, -2.0, -3.0], versions=[0, 0, 1], finish_reason="abort"
    )
    rest = continuation(request, partial)
    assert rest.input_ids == [7, 8, 4, 5, 6] and rest.sampling.max_new_tokens == 7 and rest.session_id == "s"
    answer = GenerateResult(
        request_id="r", output_ids=[9, 2], logprobs=[-0.5, -0.1], versions=[1, 1], finish_reason="stop"
    )
    merged = merge(partial, answer)
    assert merged.output_ids == [4, 5, 6, 9, 2] and merged.versions == [0, 0, 1, 1, 1]
    assert merged.logprobs == [-1.0, -2.0, -3.0, -0.5, -0.1] and merged.finish_reason == "stop"
    spent = GenerateResult(
        request_id="r", output_ids=list(range(10)), logprobs=[0.0] * 10, versions=[0] * 10, finish_reason="abort"
    )
    assert continuation(request, spent) is None
    constrained = GenerateRequest(request_id="c", input_ids=[1], allowed=[[4, 5, 6, 2], [4, 9, 2], [3, 2]])
    assert continuation(constrained, partial).allowed == [[2]]
    two = GenerateResult(request_id="c", output_ids=[4], logprobs=[-1.0], versions=[0], finish_reason="abort")
    assert continuation(constrained, two).allowed == [[5, 6, 2], [9, 2]]
    off = GenerateResult(request_id="c", output_ids=[8], logprobs=[-1.0], versions=[0], finish_reason="abort")
    assert continuation(constrained, off) is None
