"""Free text trained beside the env's listed replies (``rollout.episode.learn_from_listed_actions``).

A reply that stays on the list trains renormalised over the list, as a constrained one does; a reply that left
the list keeps one trained token, where it left, whose log-prob is the list's mass there. Checked against
independent computations on random inputs and on real free-text rollouts of the untrained tiny model (which
leaves the list often).
"""

from __future__ import annotations

import asyncio
import math
import random

import msgspec
import pytest
import torch

from turnrl.config.algo import LearnerConfig
from turnrl.config.episode import EpisodeConfig
from turnrl.engine.generation.base import Generator
from turnrl.engine.generation.local import LocalGenerator
from turnrl.engine.rollout.run import EnvPool, run_episodes
from turnrl.engine.training.batch import pack, policy_logprobs
from turnrl.engine.training.learner import Learner
from turnrl.envs.babyai import BabyAIEnv
from turnrl.models.constraints import listed_positions
from turnrl.models.forward import restricted_logprob_entropy
from turnrl.protocol import Task


def _reference_positions(completions, output):
    """Brute force: for each prefix, the tokens some completion continues it with."""
    sets = []
    for i, token in enumerate(output):
        allowed = sorted({c[i] for c in completions if len(c) > i and c[:i] == output[:i]})
        sets.append(allowed)
        if token not in allowed:
            return sets, i
    return sets, (None if output in completions else len(output))


def test_listed_positions_match_a_brute_force_reference_on_random_lists():
    rng = random.Random(7)
    for _ in range(300):
        completions = [[rng.randrange(6) for _ in range(rng.randint(1, 4))] for _ in range(rng.randint(1, 5))]
        if rng.random() < 0.5:  # an output on the list, or a prefix of one, or one that leaves it
            base = rng.choice(completions)
            output = base[: rng.randint(1, len(base))]
        else:
            output = [rng.randrange(6) for _ in range(rng.randint(1, 4))]
        assert listed_positions(completions, output) == _reference_positions(completions, output)


def test_the_set_target_is_the_mass_of_the_allowed_tokens():
    torch.manual_seed(0)
    hidden, weight = torch.randn(5, 7), torch.randn(11, 7)
    allowed = torch.tensor([[1, 4, -1], [0, 2, 9], [3, -1, -1], [5, 6, 7], [10, 2, -1]])
    targets = torch.tensor([8, 2, 3, 0, 10])
    set_target = torch.tensor([True, False, True, True, False])
    logp, _, _ = restricted_logprob_entropy(hidden, weight, targets, allowed, 0.7, set_target)
    probs = torch.softmax(hidden @ weight.t() / 0.7, dim=-1)
    for i in range(5):
        ids = [a for a in allowed[i].tolist() if a >= 0]
        expected = probs[i, ids].sum().log() if set_target[i] else (probs[i, targets[i]] / probs[i, ids].sum()).log()
        assert float(logp[i]) == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_the_even_set_target_is_the_mass_with_the_listed_logits_at_their_mean(seed):
    torch.manual_seed(seed)
    hidden, weight = torch.randn(5, 7), torch.randn(11, 7, requires_grad=True)
    allowed = torch.tensor([[1, 4, -1], [0, 2, 9], [3, -1, -1], [5, 6, 7], [10, 2, -1]])
    targets = torch.tensor([8, 2, 3, 0, 10])
    set_target = torch.ones(5, dtype=torch.bool)
    logp, _, _ = restricted_logprob_entropy(hidden, weight, targets, allowed, 0.7, set_target, "even")
    logits = (hidden @ weight.t() / 0.7).detach()
    for i in range(5):
        ids = [a for a in allowed[i].tolist() if a >= 0]
        others = [k for k in range(11) if k not in ids]
        listed = len(ids) * logits[i, ids].mean().exp()
        expected = (listed / (listed + logits[i, others].exp().sum())).log()
        assert float(logp[i]) == pytest.approx(float(expected), abs=1e-5)
    # as a function of the logits, its gradient is the same on every listed logit (the odds among them stay)
    z = logits.clone().requires_grad_(True)
    lp, _, _ = restricted_logprob_entropy(z, torch.eye(11), targets, allowed, 1.0, set_target, "even")
    (grad,) = torch.autograd.grad(lp.sum(), z)
    for i in range(5):
        ids = [a for a in allowed[i].tolist() if a >= 0]
        assert torch.allclose(grad[i, ids], grad[i, ids[0]].expand(len(ids)), atol=1e-6)
        assert bool((grad[i, ids] > 0).all())
        assert bool((grad[i, [k for k in range(11) if k not in ids]] < 0).all())
    mass, _, _ = restricted_logprob_entropy(z, torch.eye(11), targets, allowed, 1.0, set_target, "mass")
    (grad_mass,) = torch.autograd.grad(mass.sum(), z)
    assert not torch.allclose(grad_mass[1, [0, 2, 9]], grad_mass[1, 0].expand(3))  # "mass" sharpens instead
    with pytest.raises(ValueError, match="set_log_prob"):
        restricted_logprob_entropy(hidden, weight, targets, allowed, 0.7, set_target, "uniform")


class SometimesOnList(Generator):
    """The real model, sampling free text on one request in three; on the others, one of two replies BabyAI
    always lists ("turn left", "turn right"), or a reply that follows the list for a while and then leaves it
    ("turn forward"): the untrained model alone almost never stays on the list, not even for a token."""

    def __init__(self, model, chat, pad_token_id):
        self.inner = LocalGenerator(model, pad_token_id, use_thread=False)
        eos = chat.stop_token_ids[0]
        self.on_list = [[*chat.encode_text(f"Action: turn {side}"), eos] for side in ("left", "right")]
        self.leaves = [[*chat.encode_text("Action: turn forward"), eos]]
        self.calls = 0

    @property
    def weight_version(self):
        return self.inner.weight_version

    async def generate(self, request):
        self.calls += 1
        if self.calls % 3:
            request = msgspec.structs.replace(request, allowed=self.on_list if self.calls % 3 == 1 else self.leaves)
        return await self.inner.generate(request)


@pytest.fixture(scope="module")
def free_text_rollouts(make_tiny_model, tokenizer, chat):
    """Sampled once for the module, by a model equal to ``tiny_model`` (same seed), which the tests may train."""
    torch.manual_seed(0)
    model = make_tiny_model()
    generator = SometimesOnList(model, chat, tokenizer.pad_token_id)
    pool = EnvPool(lambda: BabyAIEnv("GoToLocal", layout="turnrl"))
    tasks = [Task(env="babyai", item_id=40 + i, group=i) for i in range(6)]
    config = EpisodeConfig(turn_cap=3, max_new_tokens=5, learn_from_listed_actions=True)
    return asyncio.run(run_episodes(tasks, pool, generator, chat, config))


def _spans(trajectories):
    for row, traj in enumerate(trajectories):
        for turn in traj.turns:
            yield row, turn, traj.token_ids[turn.action_start : turn.action_end]


def test_turns_record_the_list_without_enforcing_it(free_text_rollouts):
    turns = [(turn, output) for _, turn, output in _spans(free_text_rollouts)]
    assert turns and all(turn.allowed is None and turn.listed for turn, _ in turns)
    on_list = [output in turn.listed for turn, output in turns]
    assert any(on_list) and not all(on_list)
    # the env agrees: a reply is valid exactly when its tokens are one of the listed replies
    assert all(turn.valid == on for (turn, _), on in zip(turns, on_list, strict=True))


def test_pack_trains_on_list_replies_renormalised_and_off_list_ones_at_the_token_that_left(
    free_text_rollouts, tokenizer
):
    batch = pack(free_text_rollouts, None, tokenizer.pad_token_id)
    where = {tuple(rc): i for i, rc in enumerate(batch.constraint_index.tolist())}
    assert bool(batch.constraint_recorded.all())
    prefixes = 0
    for row, turn, output in _spans(free_text_rollouts):
        span = range(turn.action_start, turn.action_end)
        trained = [col for col in span if bool(batch.loss_mask[row, col])]
        sets, left_at = _reference_positions(turn.listed, output)
        if left_at is None:
            assert trained == list(span)
            for offset, col in enumerate(span):
                i = where[(row, col)]
                assert not bool(batch.constraint_set_target[i])
                assert sorted(a for a in batch.constraint_allowed[i].tolist() if a >= 0) == sets[offset]
        elif left_at == len(output):
            assert trained == [] and all((row, col) not in where for col in span)
        else:
            col = turn.action_start + left_at
            assert trained == [col]
            i = where[(row, col)]
            assert bool(batch.constraint_set_target[i])
            assert sorted(a for a in batch.constraint_allowed[i].tolist() if a >= 0) == sets[left_at]
            assert all((row, c) not in where for c in span if c != col)
            prefixes += left_at > 0
    assert prefixes  # some reply followed the list for a while before it left: only where it left trains


def test_the_learner_takes_old_log_probs_from_itself_and_the_off_list_advantage(
    free_text_rollouts, tiny_model, tokenizer
):
    learner = Learner(tiny_model, LearnerConfig(off_list_advantage=0.75), tokenizer.pad_token_id)
    batch, _ = learner.prepare(free_text_rollouts)
    with torch.no_grad():
        now, _, _ = policy_logprobs(tiny_model, batch)
    rows, cols = batch.constraint_index.unbind(1)
    assert torch.allclose(batch.old_logprobs[rows, cols], now[rows, cols], atol=1e-5)
    # elsewhere the sampler's own log-probs stand (none here: every turn is listed, but the prompt tokens are 0)
    off = batch.constraint_set_target
    assert bool(off.any())
    assert torch.equal(batch.advantages[rows[off], cols[off]], torch.full((int(off.sum()),), 0.75))


def test_an_update_on_off_list_replies_moves_mass_back_onto_the_list(free_text_rollouts, tiny_model, tokenizer):
    off_list = [t for t in free_text_rollouts if any(not turn.valid for turn in t.turns)]
    assert off_list
    learner = Learner(tiny_model, LearnerConfig(lr=1e-3, lr_warmup_steps=0, minibatches=1), tokenizer.pad_token_id)
    batch = pack(off_list, None, tokenizer.pad_token_id)
    rows, cols = batch.constraint_index[batch.constraint_set_target].unbind(1)
    with torch.no_grad():
        before = policy_logprobs(tiny_model, batch)[0][rows, cols]
    for _ in range(3):
        learner.update(off_list)
    with torch.no_grad():
        after = policy_logprobs(tiny_model, batch)[0][rows, cols]
    assert float(after.mean()) > float(before.mean())  # log of the list's mass where each reply left it


def _list_log_probs_by_hand(model, batch, how):
    """The log-prob of each listed position's list, from the model's full logits (not the learner's path)."""
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()
    out = []
    for (row, col), allowed in zip(batch.constraint_index.tolist(), batch.constraint_allowed.tolist(), strict=True):
        ids = [a for a in allowed if a >= 0]
        z = logits[row, col - 1]
        others = [k for k in range(z.shape[0]) if k not in ids]
        listed = z[ids].logsumexp(0) if how == "mass" else z[ids].mean() + math.log(len(ids))
        out.append(float(listed - torch.logaddexp(listed, z[others].logsumexp(0))))
    return torch.tensor(out)


@pytest.mark.parametrize("how", ["mass", "even"])
def test_the_list_term_raises_the_lists_log_prob_at_every_listed_position(
    how, free_text_rollouts, make_tiny_model, tokenizer
):
    batch = pack(free_text_rollouts, None, tokenizer.pad_token_id)
    assert bool((~batch.constraint_set_target).any()) and bool(batch.constraint_set_target.any())
    pad = tokenizer.pad_token_id
    by_hand = _list_log_probs_by_hand(make_tiny_model(), batch, how)
    _, _, on_list = policy_logprobs(make_tiny_model(), batch, off_list_log_prob=how)
    assert torch.allclose(on_list, by_hand, atol=1e-4)  # every position, on the list or where a reply left it
    # one optimizer step each, from equal models: the term adds exactly -coef * its mean to the loss
    config = dict(lr=1e-3, lr_warmup_steps=0, minibatches=1, off_list_log_prob=how)
    without = Learner(make_tiny_model(), LearnerConfig(**config), pad).update(free_text_rollouts)
    model = make_tiny_model()
    with_term = Learner(model, LearnerConfig(**config, list_log_prob_coef=0.5), pad).update(free_text_rollouts)
    assert with_term["list_log_prob"] == pytest.approx(float(by_hand.mean()), abs=1e-4)
    assert with_term["loss"] - without["loss"] == pytest.approx(-0.5 * with_term["list_log_prob"], abs=1e-4)
    assert "list_log_prob" not in without
    # and it moves the lists' mass up at the positions where replies stayed on the list, beyond the PPO term
    plain = make_tiny_model()
    Learner(plain, LearnerConfig(**config), pad).update(free_text_rollouts)
    stayed = ~batch.constraint_set_target
    after = _list_log_probs_by_hand(model, batch, how)[stayed]
    assert float(after.mean()) > float(_list_log_probs_by_hand(plain, batch, how)[stayed].mean())


def test_the_list_term_also_keeps_constrained_replies_on_the_list(free_text_rollouts, make_tiny_model, tokenizer):
    """Replies sampled under the constraint (``Turn.allowed``): the term acts at every position they trained."""
    constrained = []
    for trajectory in free_text_rollouts:
        if all(turn.valid for turn in trajectory.turns):
            turns = [msgspec.structs.replace(turn, allowed=turn.listed, listed=None) for turn in trajectory.turns]
            constrained.append(msgspec.structs.replace(trajectory, turns=turns))
    assert constrained
    batch = pack(constrained, None, tokenizer.pad_token_id)
    assert not bool(batch.constraint_recorded.any()) and not bool(batch.constraint_set_target.any())
    by_hand = _list_log_probs_by_hand(make_tiny_model(), batch, "even")
    config = LearnerConfig(minibatches=1, off_list_log_prob="even", list_log_prob_coef=0.5)
    stats = Learner(make_tiny_model(), config, tokenizer.pad_token_id).update(constrained)
    assert stats["list_log_prob"] == pytest.approx(float(by_hand.mean()), abs=1e-4)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="learn_from_listed_actions is for free text"):
        EpisodeConfig(constrain_to_valid_actions=True, learn_from_listed_actions=True)
    with pytest.raises(ValueError, match="off_list_advantage"):
        LearnerConfig(off_list_advantage=float("nan"))
    with pytest.raises(ValueError, match="off_list_log_prob"):
        LearnerConfig(off_list_log_prob="uniform")
    for bad in (-0.1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="list_log_prob_coef"):
            LearnerConfig(list_log_prob_coef=bad)
