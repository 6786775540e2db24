"""The generation engine: sampled log-probs equal a recomputation; padding, batch mates, prefix reuse and shared
prompts change nothing but what is computed."""

from __future__ import annotations

import asyncio

import pytest
import torch

from turnrl.engine.generation.batcher import ContinuousBatcher, Sequence
from turnrl.engine.generation.kv_store import KVStore
from turnrl.engine.generation.local import LocalGenerator
from turnrl.engine.training.batch import pack, policy_logprobs
from turnrl.errors import BadRequest, GenerationError
from turnrl.protocol import GenerateRequest, SamplingParams


def generate_batch(model, requests, version, pad_id, rng=None, store=None, batcher=None):
    """Admit ``requests`` together into a (fresh) batcher and step it until every one has finished."""
    batcher = batcher or ContinuousBatcher(model, pad_id, rng, store)
    batcher.version = version
    seqs = [Sequence(key=i, request=r) for i, r in enumerate(requests)]
    batcher.step(seqs, {})
    while batcher.rows:
        batcher.step([], {})
    return [s.result() for s in seqs]


def _requests(chat, lengths, temperature=1.0, max_new=7, session=None):
    gen = torch.Generator().manual_seed(1)
    vocab = len(chat.tokenizer)
    reqs = []
    for i, n in enumerate(lengths):
        ids = torch.randint(5, vocab, (n,), generator=gen).tolist()
        reqs.append(
            GenerateRequest(
                request_id=str(i),
                input_ids=ids,
                session_id=(f"s{i}" if session else None),
                sampling=SamplingParams(
                    temperature=temperature, max_new_tokens=max_new, stop_token_ids=chat.stop_token_ids
                ),
            )
        )
    return reqs


def _recompute(model, requests, results, pad_id):
    from turnrl.protocol import Task, Trajectory

    trajs = []
    for req, res in zip(requests, results, strict=True):
        ids = list(req.input_ids) + res.output_ids
        mask = [0] * len(req.input_ids) + [1] * len(res.output_ids)
        lps = [0.0] * len(req.input_ids) + res.logprobs
        trajs.append(
            Trajectory(
                task=Task(env="t", item_id=0),
                token_ids=ids,
                loss_mask=mask,
                logprobs=lps,
                versions=[0] * len(ids),
                prompt_len=len(req.input_ids),
            )
        )
    batch = pack(trajs, None, pad_id)
    with torch.no_grad():
        lp, _, _ = policy_logprobs(model, batch)
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
            lp, _, _ = policy_logprobs(tiny_model, batch_t, temperature=temperature)
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
        GenerateRequest(
            request_id=r.request_id + "b",
            session_id=r.session_id,
            sampling=r.sampling,
            input_ids=list(r.input_ids) + o.output_ids + [7, 8, 9],
        )
        for r, o in zip(first, out1, strict=True)
    ]
    batcher = ContinuousBatcher(tiny_model, tokenizer.pad_token_id, store=store)
    reused = generate_batch(tiny_model, extended, 0, tokenizer.pad_token_id, store=store, batcher=batcher)
    assert store.hits == 2 and batcher.prefix_hits == 2 and batcher.prefix_lookups == 2
    covered = sum(len(r.input_ids) + len(o.output_ids) - 1 for r, o in zip(first, out1, strict=True))
    assert batcher.reused_tokens == covered  # the whole earlier context but its never-fed last token
    assert batcher.prefill_tokens == sum(len(r.input_ids) for r in extended) - covered
    fresh = generate_batch(tiny_model, extended, 0, tokenizer.pad_token_id)
    for a, b in zip(reused, fresh, strict=True):
        assert a.output_ids == b.output_ids
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-4


def test_kv_store_rejects_stale_or_diverging_prefixes():
    store = KVStore(max_tokens=10)
    from turnrl.engine.generation.kv_store import SessionKV

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


async def test_stop_and_length_finish_reasons(tiny_model, chat, tokenizer):
    reqs = _requests(chat, [6], temperature=1.0, max_new=3)
    res = generate_batch(tiny_model, reqs, 0, tokenizer.pad_token_id)[0]
    assert res.finish_reason in ("stop", "length")
    assert len(res.output_ids) <= 3
    if res.finish_reason == "stop":
        assert res.output_ids[-1] in chat.stop_token_ids
    generator = LocalGenerator(tiny_model, tokenizer.pad_token_id, use_thread=False)
    with pytest.raises(BadRequest, match="empty"):
        await generator.generate(GenerateRequest(request_id="x", input_ids=[]))


async def test_local_generator_batches_concurrent_requests(tiny_model, chat, tokenizer):
    generator = LocalGenerator(tiny_model, tokenizer.pad_token_id, use_thread=False)
    reqs = _requests(chat, [5, 6, 7, 8, 9], max_new=2)
    results = await asyncio.gather(*(generator.generate(r) for r in reqs))
    await generator.close()
    assert [r.request_id for r in results] == [r.request_id for r in reqs]
    # all five join one prefill, then decode together: two forwards of five rows
    assert generator.engine.batcher.steps == 2 and generator.engine.batcher.tokens == 10


async def test_generator_failure_reaches_every_waiting_request(chat, tokenizer):
    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

            self.embed = torch.nn.Embedding(len(tokenizer), 4)
            self.config = type("Config", (), {"max_position_embeddings": 64})()

        def get_input_embeddings(self):
            return self.embed

        def forward(self, **kwargs):
            raise RuntimeError("device on fire")

    generator = LocalGenerator(Broken(), tokenizer.pad_token_id, use_thread=False)
    reqs = _requests(chat, [3, 4])

    out = await asyncio.gather(*(generator.generate(r) for r in reqs), return_exceptions=True)
    assert all(isinstance(o, GenerationError) and "device on fire" in str(o) for o in out)


def test_a_shared_prompt_is_prefilled_once_and_samples_independently(tiny_model, chat, tokenizer):
    prompt = _requests(chat, [17], temperature=1.0, max_new=6)[0]
    group = [
        GenerateRequest(request_id=f"g{i}", input_ids=prompt.input_ids, sampling=prompt.sampling, session_id=f"s{i}")
        for i in range(4)
    ]
    batcher = ContinuousBatcher(tiny_model, tokenizer.pad_token_id, torch.Generator().manual_seed(3), KVStore())
    results = generate_batch(tiny_model, group, 0, tokenizer.pad_token_id, store=batcher.store, batcher=batcher)
    assert batcher.prefill_tokens == 17 and batcher.shared_prefill_tokens == 3 * 17
    batch, lp = _recompute(tiny_model, group, results, tokenizer.pad_token_id)
    assert float(((lp - batch.old_logprobs).abs() * batch.loss_mask).max()) < 1e-4
    assert len({tuple(r.output_ids) for r in results}) > 1  # one prefill, four independent samples
    greedy = [
        GenerateRequest(
            request_id=r.request_id,
            input_ids=r.input_ids,
            sampling=SamplingParams(temperature=0.0, max_new_tokens=6, stop_token_ids=chat.stop_token_ids),
        )
        for r in group
    ]
    shared = generate_batch(tiny_model, greedy + _requests(chat, [9], temperature=0.0), 0, tokenizer.pad_token_id)
    alone = generate_batch(tiny_model, greedy[:1], 0, tokenizer.pad_token_id)[0]
    assert all(r.output_ids == alone.output_ids for r in shared[:4])


async def test_a_multi_turn_rollout_reuses_each_sessions_prefix(tiny_model, chat, tokenizer):
    from turnrl.config.episode import EpisodeConfig
    from turnrl.engine.rollout.run import EnvPool, run_episodes
    from turnrl.envs.babyai import BabyAIEnv
    from turnrl.protocol import Task

    async def rollout(kv_cache_tokens):
        generator = LocalGenerator(
            tiny_model, tokenizer.pad_token_id, use_thread=False, seed=0, kv_cache_tokens=kv_cache_tokens
        )
        tasks = [Task(env="babyai", item_id=i % 3, group=i % 3) for i in range(6)]
        config = EpisodeConfig(turn_cap=3, temperature=0.0, max_new_tokens=8)
        trajectories = await run_episodes(tasks, EnvPool(lambda: BabyAIEnv("GoToLocal")), generator, chat, config)
        stats = await generator.stats()
        await generator.close()
        return trajectories, stats

    with_reuse, stats = await rollout(2_000_000)
    without, plain = await rollout(0)
    assert [t.token_ids for t in with_reuse] == [t.token_ids for t in without]  # greedy: same episodes
    turns = sum(len(t.turns) for t in with_reuse)
    later_turns = turns - len(with_reuse)
    assert later_turns > 0
    assert stats.prefix_lookups == turns and stats.prefix_hits == later_turns and plain.prefix_hits == 0
    assert stats.prefix_hit_rate == later_turns / turns
    assert stats.reused_tokens > 0 and stats.prefill_tokens < plain.prefill_tokens
    computed = stats.prefill_tokens + stats.reused_tokens + stats.shared_prefill_tokens
    assert computed == plain.prefill_tokens + plain.shared_prefill_tokens
