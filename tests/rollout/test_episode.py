"""Episodes: loss mask, token in/token out, stamping, and failures that end only their episode."""

from __future__ import annotations

import asyncio

import pytest
import torch

from turnrl.config.episode import EpisodeConfig
from turnrl.engine.generation.base import Generator
from turnrl.engine.generation.local import LocalGenerator
from turnrl.engine.rollout.episode import EpisodeRunner
from turnrl.engine.rollout.run import EnvPool, run_episodes
from turnrl.engine.training.batch import pack, policy_logprobs
from turnrl.envs.babyai import BabyAIEnv
from turnrl.envs.base import BlockingEnv
from turnrl.protocol import EnvResult, GenerateResult, Task


class RecordingGenerator(Generator):
    """Wraps a real generator and keeps every result it handed out."""

    def __init__(self, inner):
        self.inner = inner
        self.results = []

    @property
    def weight_version(self):
        return self.inner.weight_version

    async def generate(self, request):
        result = await self.inner.generate(request)
        self.results.append((request, result))
        return result


async def _rollout(model, tokenizer, chat, tasks, config, generator=None):
    generator = generator or LocalGenerator(model, tokenizer.pad_token_id, use_thread=False)
    pool = EnvPool(lambda: BabyAIEnv("GoToLocal"))
    return await run_episodes(tasks, pool, generator, chat, config), generator


async def test_loss_mask_is_exactly_the_generated_tokens(tiny_model, tokenizer, chat):
    recorder = RecordingGenerator(LocalGenerator(tiny_model, tokenizer.pad_token_id, use_thread=False))
    tasks = [Task(env="babyai", item_id=i, group=i) for i in range(6)]
    trajs, _ = await _rollout(
        tiny_model, tokenizer, chat, tasks, EpisodeConfig(turn_cap=3, max_new_tokens=6), generator=recorder
    )
    by_session = {}
    for req, res in recorder.results:
        by_session.setdefault(req.session_id, []).append((req, res))
    assert len(by_session) == len(trajs)
    for traj in trajs:
        assert len(traj.token_ids) == len(traj.loss_mask) == len(traj.logprobs) == len(traj.versions)
        policy = [tok for tok, m in zip(traj.token_ids, traj.loss_mask, strict=True) if m]
        # find this episode's generations: each request's input is a prefix of the trajectory
        calls = [
            c
            for c in by_session.values()
            if traj.token_ids[: len(c[0][0].input_ids)] == c[0][0].input_ids and len(c) == len(traj.turns)
        ]
        assert calls, "no generation history matches the trajectory"
        sampled = [t for _, res in calls[0] for t in res.output_ids]
        assert policy == sampled
        for turn, (req, res) in zip(traj.turns, calls[0], strict=True):
            assert traj.token_ids[turn.action_start : turn.action_end] == res.output_ids
            assert traj.token_ids[: len(req.input_ids)] == req.input_ids  # prompts only ever grow by appending
            assert all(m == 1 for m in traj.loss_mask[turn.action_start : turn.action_end])
        assert sum(traj.loss_mask) == sum(turn.action_end - turn.action_start for turn in traj.turns)
        assert all(v == -1 for v, m in zip(traj.versions, traj.loss_mask, strict=True) if not m)


async def test_recomputed_logprobs_of_finished_episodes_match(tiny_model, tokenizer, chat):
    tasks = [Task(env="babyai", item_id=100 + i, group=i) for i in range(5)]
    trajs, _ = await _rollout(tiny_model, tokenizer, chat, tasks, EpisodeConfig(turn_cap=4, max_new_tokens=8))
    batch = pack(trajs, None, tokenizer.pad_token_id)
    with torch.no_grad():
        lp, _, _ = policy_logprobs(tiny_model, batch)
    assert batch.num_tokens > 0
    assert float(((lp - batch.old_logprobs).abs() * batch.loss_mask).max()) < 1e-4


async def test_trajectories_are_stamped(tiny_model, tokenizer, chat):
    tasks = [Task(env="babyai", item_id=i, split="train", group=7) for i in range(4)]
    trajs, gen = await _rollout(tiny_model, tokenizer, chat, tasks, EpisodeConfig(turn_cap=2, max_new_tokens=4))
    for task, traj in zip(tasks, trajs, strict=True):
        assert traj.task == task
        assert traj.turn_cap == 2
        assert traj.end_reason in ("done", "turn_cap")
        assert len(traj.turns) <= 2
        assert (traj.end_reason == "turn_cap") == (len(traj.turns) == 2 and not traj.success)
        assert set(v for v, m in zip(traj.versions, traj.loss_mask, strict=True) if m) <= {gen.weight_version}


async def test_length_limit_ends_the_episode(tiny_model, tokenizer, chat):
    tasks = [Task(env="babyai", item_id=1)]
    trajs, _ = await _rollout(
        tiny_model, tokenizer, chat, tasks, EpisodeConfig(turn_cap=50, max_new_tokens=8, max_total_tokens=400)
    )
    assert trajs[0].end_reason in ("length", "done")
    assert len(trajs[0].token_ids) <= 400


class CrashingEnv(BlockingEnv):
    family = "crash"
    system_prompt = "test"

    def __init__(self, crash_on_step: int):
        self.crash_on_step = crash_on_step
        self.steps = 0

    def reset_sync(self, item_id):
        self.steps = 0
        return f"observation {item_id}"

    def step_sync(self, action_text):
        self.steps += 1
        if self.steps == self.crash_on_step:
            raise OSError("environment process died")
        return EnvResult(observation="still here", reward=0.0, done=False)


class HangingGenerator(Generator):
    weight_version = 0

    async def generate(self, request):
        await asyncio.sleep(3600)


class FixedGenerator(Generator):
    weight_version = 0

    async def generate(self, request):
        return GenerateResult(
            request_id=request.request_id,
            output_ids=[5, 6],
            logprobs=[-0.1, -0.2],
            versions=[0, 0],
            finish_reason="length",
        )


async def test_env_crash_ends_only_its_episode(chat):
    good = EpisodeRunner(
        Task(env="crash", item_id=1), CrashingEnv(crash_on_step=99), FixedGenerator(), chat, EpisodeConfig(turn_cap=3)
    )
    bad = EpisodeRunner(
        Task(env="crash", item_id=2), CrashingEnv(crash_on_step=2), FixedGenerator(), chat, EpisodeConfig(turn_cap=3)
    )
    good, bad = await asyncio.gather(good.run(), bad.run())
    assert good.end_reason == "turn_cap" and len(good.turns) == 3
    assert bad.end_reason == "env_error" and "environment process died" in bad.error and len(bad.turns) == 1


async def test_generation_timeout_truncates_only_that_episode(chat):
    slow = EpisodeRunner(
        Task(env="crash", item_id=1),
        CrashingEnv(99),
        HangingGenerator(),
        chat,
        EpisodeConfig(turn_cap=2, generation_timeout_s=0.05),
    )
    fast = EpisodeRunner(
        Task(env="crash", item_id=2),
        CrashingEnv(99),
        FixedGenerator(),
        chat,
        EpisodeConfig(turn_cap=2, generation_timeout_s=0.05),
    )
    slow, fast = await asyncio.gather(slow.run(), fast.run())
    assert slow.end_reason == "gen_timeout" and slow.num_policy_tokens == 0
    assert fast.end_reason == "turn_cap" and fast.num_policy_tokens == 4


@pytest.mark.parametrize("bad", [dict(turn_cap=0), dict(max_new_tokens=0), dict(reward_mode="max")])
def test_bad_episode_config(bad):
    with pytest.raises(ValueError):
        EpisodeConfig(**bad)


async def test_constrained_decoding_only_produces_valid_actions_and_recomputes(tiny_model, tokenizer, chat):
    tasks = [Task(env="babyai", item_id=300 + i, group=i) for i in range(6)]
    config = EpisodeConfig(turn_cap=4, max_new_tokens=4, constrain_to_valid_actions=True)
    trajs, _ = await _rollout(tiny_model, tokenizer, chat, tasks, config)
    turns = [turn for traj in trajs for turn in traj.turns]
    assert turns and all(turn.valid for turn in turns)
    for traj in trajs:
        for turn in traj.turns:
            assert traj.token_ids[turn.action_start : turn.action_end] in turn.allowed
    batch = pack(trajs, None, tokenizer.pad_token_id)
    assert batch.constraint_index is not None
    with torch.no_grad():
        lp, ent, _ = policy_logprobs(tiny_model, batch)
    assert float(((lp - batch.old_logprobs).abs() * batch.loss_mask).max()) < 1e-4
    # forced tokens ("Action", ":") have probability one under the constraint
    forced = [
        (r, c)
        for (r, c), allowed in zip(batch.constraint_index.tolist(), batch.constraint_allowed.tolist(), strict=True)
        if sum(a >= 0 for a in allowed) == 1
    ]
    assert forced and all(abs(float(lp[r, c])) < 1e-6 and abs(float(ent[r, c])) < 1e-5 for r, c in forced)


class ScriptedReplies(Generator):
    """Replies with the given texts in turn (tokenised by the episode's chat format)."""

    weight_version = 0

    def __init__(self, chat, replies: list[str]):
        self.chat, self.replies = chat, list(replies)

    async def generate(self, request):
        ids = [*self.chat.encode_text(self.replies.pop(0)), self.chat.stop_token_ids[0]]
        return GenerateResult(
            request_id=request.request_id,
            output_ids=ids,
            logprobs=[-0.5] * len(ids),
            versions=[0] * len(ids),
            finish_reason="stop",
        )


@pytest.mark.parametrize("penalty", [0.0, 0.25])
async def test_invalid_reply_penalty_costs_each_invalid_turn(chat, penalty):
    env = BabyAIEnv(level="GoToLocal")
    env.reset_sync(7)
    goal = next(a for a in env.valid_actions_sync() if a.startswith("go to"))
    replies = ["I would rather not", "Action: fly away", f"Action: {goal}", "Action: turn left"]
    config = EpisodeConfig(turn_cap=4, invalid_reply_penalty=penalty)
    runner = EpisodeRunner(Task(env="babyai", item_id=7), env, ScriptedReplies(chat, replies), chat, config)
    traj = await runner.run()
    valid = [t.valid for t in traj.turns]
    assert valid[:3] == [False, False, True]
    env_reward = traj.turns[-1].reward  # reward_mode "last": the env's reward of the last turn
    assert traj.reward == pytest.approx(env_reward - penalty * valid.count(False))


def test_bad_invalid_reply_penalty():
    with pytest.raises(ValueError, match="invalid_reply_penalty"):
        EpisodeConfig(invalid_reply_penalty=-0.1)
