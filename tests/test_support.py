"""Small pieces: log-prob reference vs chunked path, KL estimators, constraints, sampler, checkpoints."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from turnrl.algorithms.kl import kl_estimate
from turnrl.engine.records.checkpoint import latest_checkpoint, save_checkpoint
from turnrl.engine.records.metrics import MetricsWriter, read_metrics
from turnrl.engine.rollout.sampler import TaskSampler, heldout_tasks
from turnrl.kernels.logprob import logprob_entropy_chunked, logprob_entropy_reference
from turnrl.models.constraints import allowed_next, constrained_positions


def test_chunked_logprob_matches_float64_reference():
    torch.manual_seed(0)
    hidden = torch.randn(37, 19, requires_grad=True)
    weight = torch.randn(53, 19, requires_grad=True)
    targets = torch.randint(0, 53, (37,))
    lp, ent = logprob_entropy_chunked(hidden, weight, targets, temperature=0.7, chunk_rows=8)
    (lp.sum() + 0.3 * ent.sum()).backward()
    h64, w64 = hidden.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    logits = (h64 @ w64.t()) / 0.7
    ref_lp = logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    p = logits.softmax(-1)
    ref_ent = -(p * logits.log_softmax(-1)).sum(-1)
    (ref_lp.sum() + 0.3 * ref_ent.sum()).backward()
    assert torch.allclose(lp.double(), ref_lp, atol=1e-4) and torch.allclose(ent.double(), ref_ent, atol=1e-4)
    assert torch.allclose(hidden.grad.double(), h64.grad, atol=1e-3)
    assert torch.allclose(weight.grad.double(), w64.grad, atol=1e-3)
    lp2, _ = logprob_entropy_reference(hidden.detach(), weight.detach(), targets, 0.7)
    assert torch.allclose(lp.detach(), lp2, atol=1e-5)
    empty = logprob_entropy_chunked(hidden[:0], weight, targets[:0])
    assert empty[0].shape == (0,)


def test_kl_estimators():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.5, -2.0, -0.2])
    d = logp - ref
    assert torch.allclose(kl_estimate(logp, ref, "k1"), d)
    assert torch.allclose(kl_estimate(logp, ref, "k2"), 0.5 * d**2)
    k3 = kl_estimate(logp, ref, "k3")
    assert torch.allclose(k3, torch.exp(-d) + d - 1) and bool((k3 >= 0).all()) and float(k3[1]) == 0.0
    with pytest.raises(ValueError):
        kl_estimate(logp, ref, "k4")


def test_constraints():
    completions = [[5, 6, 7], [5, 8], [9]]
    assert allowed_next(completions, []) == [5, 9]
    assert allowed_next(completions, [5]) == [6, 8]
    assert allowed_next(completions, [5, 8]) == []
    assert constrained_positions(completions, [5, 6, 7]) == [[5, 9], [6, 8], [7]]
    with pytest.raises(ValueError, match="outside"):
        constrained_positions(completions, [5, 7])


def test_sampler_is_a_pure_function_of_step():
    a = TaskSampler("babyai", range(0, 1000), prompts_per_step=3, group_size=4, seed=1)
    b = TaskSampler("babyai", range(0, 1000), prompts_per_step=3, group_size=4, seed=1)
    assert a.tasks_for_step(7) == b.tasks_for_step(7)
    assert a.tasks_for_step(7) != a.tasks_for_step(8)
    tasks = a.tasks_for_step(2)
    assert len(tasks) == 12 and len({t.group for t in tasks}) == 3
    assert all(t.split == "train" and 0 <= t.item_id < 1000 for t in tasks)
    held = heldout_tasks("babyai", range(1000, 1010), 5)
    assert [t.item_id for t in held] == list(range(1000, 1005)) and all(t.split == "test" for t in held)
    with pytest.raises(ValueError):
        heldout_tasks("babyai", range(1000, 1010), 11)


def test_metrics_writer(tmp_path):
    writer = MetricsWriter(tmp_path / "m.jsonl")
    writer.write({"step": 1, "x": 0.5})
    writer.write({"step": 2, "x": math.pi})
    with pytest.raises(ValueError):
        writer.write({"x": 1})
    writer.close()
    assert [r["step"] for r in read_metrics(tmp_path / "m.jsonl")] == [1, 2]


def test_checkpoint_is_atomic(tiny_model, tokenizer, tmp_path):
    optimizer = torch.optim.AdamW(tiny_model.parameters())
    first = save_checkpoint(tmp_path, 1, tiny_model, tokenizer, optimizer, {"stage": 0})
    assert latest_checkpoint(tmp_path) == first
    # a crash in the middle of writing step 2 leaves a partial directory and the pointer on step 1
    partial = tmp_path / ".checkpoint-000002.partial"
    partial.mkdir()
    (partial / "config.json").write_text("{")
    assert latest_checkpoint(tmp_path) == first
    second = save_checkpoint(tmp_path, 2, tiny_model, tokenizer, optimizer, {"stage": 1})
    assert latest_checkpoint(tmp_path) == second and not partial.exists()
    assert json.loads((second / "trainer_state.json").read_text())["stage"] == 1
    save_checkpoint(tmp_path, 3, tiny_model, tokenizer, optimizer, {}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-000002", "checkpoint-000003"]
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))


def test_saved_policy_loads_back_identical(tiny_model, tokenizer, babyai_corpus, tmp_path):
    from turnrl.models.chat import ChatFormat
    from turnrl.models.loading import load_policy, save_policy

    save_policy(tiny_model, tokenizer, tmp_path / "policy")
    model, loaded = load_policy(tmp_path / "policy")
    for text in babyai_corpus[:20]:
        assert loaded.encode(text, add_special_tokens=False) == tokenizer.encode(text, add_special_tokens=False)
    assert ChatFormat(loaded).prompt_ids("sys", babyai_corpus[0]) == ChatFormat(tokenizer).prompt_ids(
        "sys", babyai_corpus[0])
    ids = torch.tensor([tokenizer.encode(babyai_corpus[1], add_special_tokens=False)[:40]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, tiny_model(ids).logits)
