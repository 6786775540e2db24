"""Copy rehearsal: its rows repeat a span, its loss is the repeat's likelihood, and it keeps copying alive."""

from __future__ import annotations

import random

import pytest
import torch

from turnrl.config.model import DefaultModelConfig, WarmupConfig
from turnrl.engine.training.copy_rehearsal import plain_token_ids, repeated_span_batch, repeated_span_nll
from turnrl.engine.training.default_policy import build_default_policy
from turnrl.engine.training.warmup import episode_to_trajectory, random_episodes, supervised_warmup
from turnrl.envs.babyai import BabyAIEnv
from turnrl.models.tiny import build_tiny_model


def test_each_row_marks_exactly_the_repeat_after_its_first_token():
    pool = list(range(5, 905))
    ids, mask = repeated_span_batch(random.Random(3), pool, rows=40, length=150, min_span=2, max_span=50, max_lead=40)
    assert ids.shape == mask.shape == (40, 150)
    assert set(ids.flatten().tolist()) <= set(pool)
    spans = set()
    for row, marked in zip(ids.tolist(), mask.tolist(), strict=True):
        where = [t for t, m in enumerate(marked) if m]
        span = len(where) + 1
        assert where == list(range(where[0], where[0] + len(where)))  # one run
        first = where[0] - 1  # the repeat's first token, not marked: nothing before it says which span comes
        assert row[first - span : first] == row[first : first + span]  # the span, then the span again
        spans.add(span)
    assert len(spans) > 10  # the span length varies, so no fixed offset predicts the repeat


def test_the_loss_is_the_marked_tokens_mean_negative_log_likelihood(make_tiny_model, tokenizer):
    model = make_tiny_model(seed=2).eval()
    ids, mask = repeated_span_batch(random.Random(5), list(range(3, len(tokenizer))), rows=3, length=71, max_span=19)
    with torch.no_grad():
        got = repeated_span_nll(model, ids, mask)
        logits = model(input_ids=ids).logits[:, :-1].float()
        reference = -torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0][mask[:, 1:]].mean()
    assert float(got) == pytest.approx(float(reference), rel=1e-4)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (dict(token_ids=[]), "at least one token id"),
        (dict(token_ids=[7, 8], min_span=1), "do not fit"),
        (dict(token_ids=[7, 8], max_span=90, length=150), "do not fit"),
    ],
)
def test_bad_rows_are_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        repeated_span_batch(random.Random(0), rows=2, **arguments)
    with pytest.raises(ValueError, match="copy_rehearsal_rows must be >= 0"):
        WarmupConfig(copy_rehearsal_rows=-1)


def test_rehearsal_keeps_the_circuit_copying_through_the_format_warm_up(chat, tokenizer):
    env = BabyAIEnv("GoToLocal")
    trajectories = [episode_to_trajectory(chat, e) for e in random_episodes(env, list(range(60, 108)), 3, seed=1)]
    plain = plain_token_ids(tokenizer)
    ids, mask = repeated_span_batch(random.Random(9), plain, rows=8)
    after = {}
    for rows in (0, 8):
        model = build_tiny_model(tokenizer, "micro", max_positions=512, seed=0, induction_init=True)
        config = WarmupConfig(batch_episodes=2, epochs=2, copy_rehearsal_rows=rows)
        losses = supervised_warmup(model, chat, trajectories, config, tokenizer.pad_token_id, seed=0)
        assert len(losses) == 48 and losses[-1] < losses[0]  # the format is learnt either way
        with torch.no_grad():
            after[rows] = float(repeated_span_nll(model, ids, mask))
    assert after[8] < after[0] / 2


def test_the_default_policy_takes_both_options_from_its_config():
    env = BabyAIEnv("GoToLocal")
    warmup = WarmupConfig(episodes=4, turn_cap=2, batch_episodes=4, lr=1e-9, copy_rehearsal_rows=2)
    nll = {}
    for circuit in (False, True):
        config = DefaultModelConfig(preset="micro", vocab_size=400, induction_init=circuit, warmup=warmup)
        model, tokenizer, losses = build_default_policy(env, [1, 2, 3, 4], config, seed=0)
        assert len(losses) == 1
        plain = plain_token_ids(tokenizer)
        ids, mask = repeated_span_batch(random.Random(4), plain, rows=4)
        with torch.no_grad():
            nll[circuit] = float(repeated_span_nll(model, ids, mask))
    assert float(model.model.layers[0].mlp.down_proj.weight.abs().max()) < 1e-6  # the circuit's start, kept
    assert nll[True] < nll[False] - 1.0, nll  # the default start is at chance there: ln(400) = 6.0
