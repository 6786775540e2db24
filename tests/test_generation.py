"""Token in, token out: sampled log-probs equal a recomputation; padding and KV reuse change nothing."""

from __future__ import annotations

import asyncio

import pytest
import torch

from turnrl.engine.batch import pack, policy_logprobs
from turnrl.engine.generation import LocalGenerator
from turnrl.engine.hf_backend import generate_batch
from turnrl.engine.kv_store import KVStore
from turnrl.protocol import GenerateRequest, SamplingParams


def _requests(chat, lengths, temperature=1.0, max_new=7, session=None):
    gen = torch.Generator().manual_seed(1)
    vocab = len(chat.tokenizer)
    reqs = []
    for i, n in enumerate(lengths):
        ids = torch.randint(5, vocab, (n,), generator=gen).tolist()
        reqs.append(GenerateRequest(
            request_id=str(i), input_ids=ids, session_id=(f"s{i}" if session else None),
            sampling=SamplingParams(temperature=temperature, max_new_tokens=max_new,
                                    stop_token_ids=chat.stop_token_ids),
        ))
    return reqs


def _recompute(model, requests, results, pad_id):
    from turnrl.protocol import Task, Trajectory

    trajs = []
    for req, res in zip(requests, results, strict=True):
        ids = list(req.input_ids) + res.output_ids
        mask = [0] * len(req.input_ids) + [1] * len(res.output_ids)
        lps = [0.0] * len(req.input_ids) + res.logprobs
        trajs.append(Trajectory(task=Task(env="t", item_id=0), token_ids=ids, loss_mask=mask, logprobs=lps,
                                versions=[0] * len(ids), prompt_len=len(req.input_ids)))
    batch = pack(trajs, None, pad_id)
    with torch.no_grad():
        lp, _ = policy_logprobs(model, batch)
    return batch, lp


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logprobs_match_recomputation(tiny_model, chat, tokenizer, temperature):
    reqs = _requests(chat, [5, 23, 11, 40, 1], temperature=temperature)
    results = generate_batch(tiny_model, reqs, 3, tokenizer.pad_token_id, torch.Generator().manual_seed(0))
    assert all(len(r.output_ids) >= 1 and r.versions == [3] * len(r.output_ids) for r in results)
    batch, lp = _recompute(tiny_model, reqs, results, tokenizer.pad_token_id)
    if temperature != 1.0:
        # the learner recomputes with the same temperature
        batch_t = batch
        with torch.no_grad():
            lp, _ = policy_logprobs(tiny_model, batch_t, temperature=temperature)
    diff = ((lp - batch.old_logprobs).abs() * batch.loss_mask).max()
    assert float(diff) < 1e-4


def test_greedy_is_independent_of_batch_composition(tiny_model, chat, tokenizer):
    reqs = _requests(chat, [9, 31, 4], temperature=0.0)
    together = generate_batch(tiny_model, reqs, 0, tokenizer.pad_token_id)
    alone = [generate_batch(tiny_model, [r], 0, tokenizer.pad_token_id)[0] for r in reqs]
    for a, b in zip(together, alone, strict=True):
        assert a.output_ids == b.output_ids
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-4


def test_kv_reuse_gives_the_same_tokens_and_logprobs(tiny_model, chat, tokenizer):
    store = KVStore()
    first = _requests(chat, [12, 20], temperature=0.0, session=True)
    out1 = generate_batch(tiny_model, first, 0, tokenizer.pad_token_id, store=store)
    assert len(store) == 2
    extended = [
        GenerateRequest(request_id=r.request_id + "b", session_id=r.session_id, sampling=r.sampling,
                        input_ids=list(r.input_ids) + o.output_ids + [7, 8, 9])
        for r, o in zip(first, out1, strict=True)
    ]
    reused = generate_batch(tiny_model, extended, 0, tokenizer.pad_token_id, store=store)
    assert store.hits == 2 and store.reused_tokens > 0
    fresh = generate_batch(tiny_model, extended, 0, tokenizer.pad_token_id)
    for a, b in zip(reused, fresh, strict=True):
        assert a.output_ids == b.output_ids
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-4


def test_kv_store_rejects_stale_or_diverging_prefixes():
    store = KVStore(max_tokens=10)
    from turnrl.engine.kv_store import SessionKV

    store.put("a", SessionKV(ids=[1, 2, 3], layers=[], version=0))
    assert store.reusable("a", [1, 2, 3, 4], version=1) is None  # weights changed
    store.put("a", SessionKV(ids=[1, 2, 3], layers=[], version=0))
    assert store.reusable("a", [1, 9, 3, 4], version=0) is None  # prefix differs
    store.put("a", SessionKV(ids=[1, 2, 3], layers=[], version=0))
    assert store.reusable("a", [1, 2, 3], version=0) is None  # nothing new to compute
    store.put("b", SessionKV(ids=list(range(8)), layers=[], version=0))
    store.put("c", SessionKV(ids=list(range(8)), layers=[], version=0))
    assert store.tokens <= 10 and len(store) == 1  # evicted least recently used
    with pytest.raises(ValueError):
        KVStore(max_tokens=-1)


def test_stop_and_length_finish_reasons(tiny_model, chat, tokenizer):
    reqs = _requests(chat, [6], temperature=1.0, max_new=3)
    res = generate_batch(tiny_model, reqs, 0, tokenizer.pad_token_id)[0]
    assert res.finish_reason in ("stop", "length")
    assert len(res.output_ids) <= 3
    if res.finish_reason == "stop":
        assert res.output_ids[-1] in chat.stop_token_ids
    with pytest.raises(ValueError, match="empty"):
        generate_batch(tiny_model, [GenerateRequest(request_id="x", input_ids=[])], 0, tokenizer.pad_token_id)


def test_local_generator_batches_concurrent_requests(tiny_model, chat, tokenizer):
    generator = LocalGenerator(tiny_model, tokenizer.pad_token_id, use_thread=False)
    reqs = _requests(chat, [5, 6, 7, 8, 9], max_new=2)

    async def main():
        out = await asyncio.gather(*(generator.generate(r) for r in reqs))
        await generator.close()
        return out

    results = asyncio.run(main())
    assert [r.request_id for r in results] == [r.request_id for r in reqs]
    assert generator.batches == 1 and generator.batched_requests == 5


def test_generator_failure_reaches_every_waiting_request(chat, tokenizer):
    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, **kwargs):
            raise RuntimeError("device on fire")

    generator = LocalGenerator(Broken(), tokenizer.pad_token_id, use_thread=False)
    reqs = _requests(chat, [3, 4])

    async def main():
        return await asyncio.gather(*(generator.generate(r) for r in reqs), return_exceptions=True)

    out = asyncio.run(main())
    assert all(isinstance(o, RuntimeError) and "device on fire" in str(o) for o in out)
