"""One episode as an explicit state machine: RESETTING -> (GENERATING <-> STEPPING)* -> FINISHED.

RESETTING and STEPPING await the env, GENERATING awaits the generator, FINISHED holds the end reason.

Invariants:
- token in, token out: the generator's output ids are appended as they came
  (loss mask 1, sampled log-probs, per-token weight versions); only observations
  and template tokens are tokenised (loss mask 0);
- every trajectory is stamped with its task, the turn cap it ran under and why it
  ended (done, turn_cap, length, env_error, gen_timeout, gen_error, aborted);
- a failing env or generator ends only this episode, with the reason recorded; so does the
  per-episode deadline (``episode_timeout_s``: reason ``aborted``);
- an optional phase barrier (the lock-step baseline) is awaited before each phase, outside the
  phase's own timeout, and always left when the episode ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import itertools
from collections.abc import Callable

from turnrl.config.episode import EpisodeConfig
from turnrl.engine.generation.base import Generator
from turnrl.engine.rollout.barrier import PhaseBarrier
from turnrl.envs.base import Env
from turnrl.errors import EndReason
from turnrl.models.chat import ChatFormat
from turnrl.protocol import GenerateRequest, SamplingParams, Task, Trajectory, Turn

_request_ids = itertools.count()


@functools.lru_cache(maxsize=8)
def reply_decoder(tokenizer) -> Callable[[list[int]], str]:
    """``tokenizer.decode(ids, skip_special_tokens=True)``, calling the Rust tokenizer directly when
    that gives the same text (a fast tokenizer without clean-up): the wrapper costs more than decoding."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and not getattr(tokenizer, "clean_up_tokenization_spaces", True):
        return functools.partial(backend.decode, skip_special_tokens=True)
    return functools.partial(tokenizer.decode, skip_special_tokens=True)


class EpisodeState(enum.Enum):
    RESETTING = "resetting"
    GENERATING = "generating"
    STEPPING = "stepping"
    FINISHED = "finished"


class EpisodeRunner:
    def __init__(
        self,
        task: Task,
        env: Env,
        generator: Generator,
        chat: ChatFormat,
        config: EpisodeConfig,
        barrier: PhaseBarrier | None = None,
    ):
        self.barrier = barrier
        self.task = task
        self.env = env
        self.generator = generator
        self.chat = chat
        self.config = config
        self.state = EpisodeState.RESETTING
        self.end_reason: EndReason = "done"
        self.error: str | None = None
        self.token_ids: list[int] = []
        self.loss_mask: list[int] = []
        self.logprobs: list[float] = []
        self.versions: list[int] = []
        self.turns: list[Turn] = []
        self.prompt_len = 0
        self.success = False
        self._last_output: list[int] = []
        self._last_action = ""
        self._last_listed: list[list[int]] | None = None
        self.session_id = f"{task.env}-{task.item_id}-{task.group}-{next(_request_ids)}"

    async def run(self) -> Trajectory:
        try:
            async with asyncio.timeout(self.config.episode_timeout_s):
                while self.state is not EpisodeState.FINISHED:
                    if self.barrier is not None:
                        await self.barrier.arrive()
                    if self.state is EpisodeState.RESETTING:
                        await self._reset()
                    elif self.state is EpisodeState.GENERATING:
                        await self._generate()
                    elif self.state is EpisodeState.STEPPING:
                        await self._step()
        except TimeoutError:
            self._finish("aborted", f"episode timed out after {self.config.episode_timeout_s} s in {self.state.value}")
            self._drop_partial_turn()
        finally:
            if self.barrier is not None:
                self.barrier.leave()
        with contextlib.suppress(Exception):
            await self.generator.end_session(self.session_id)
        return self._trajectory()

    # ---- transitions ---------------------------------------------------------------
    def _drop_partial_turn(self) -> None:
        """Cut tokens past the last whole turn (an output whose env step never came back)."""
        end = self.turns[-1].action_end if self.turns else self.prompt_len
        for seq in (self.token_ids, self.loss_mask, self.logprobs, self.versions):
            del seq[end:]

    def _finish(self, reason: EndReason, error: str | None = None) -> None:
        self.end_reason, self.error, self.state = reason, error, EpisodeState.FINISHED

    def _append(
        self, ids: list[int], mask: int, logprobs: list[float] | None = None, versions: list[int] | None = None
    ) -> None:
        self.token_ids.extend(ids)
        self.loss_mask.extend([mask] * len(ids))
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))
        self.versions.extend(versions if versions is not None else [-1] * len(ids))

    async def _reset(self) -> None:
        try:
            async with asyncio.timeout(self.config.env_timeout_s):
                observation = await self.env.reset(self.task.item_id)
        except Exception as exc:
            return self._finish("env_error", f"reset failed: {exc!r}")
        self._append(self.chat.prompt_ids(self.env.system_prompt, observation), 0)
        self.prompt_len = len(self.token_ids)
        self._next_generation_or_length()

    def _next_generation_or_length(self) -> None:
        if len(self.token_ids) + self.config.max_new_tokens > self.config.max_total_tokens:
            self._finish("length")
        else:
            self.state = EpisodeState.GENERATING

    async def _listed_replies(self) -> list[list[int]] | None:
        """The env's valid actions as reply tokens, when decoding is constrained to them or the learner uses them."""
        if not (self.config.constrain_to_valid_actions or self.config.learn_from_listed_actions):
            return None
        actions = await self.env.valid_actions()
        if not actions:
            name = type(self.env).__name__
            raise RuntimeError(f"{name} listed no valid actions (to constrain decoding to, or to learn beside)")
        eos = self.chat.stop_token_ids[0]
        return [[*self.chat.encode_text(self.env.format_reply(a)), eos] for a in actions]

    async def _generate(self) -> None:
        try:
            listed = await self._listed_replies()
        except Exception as exc:
            return self._finish("env_error", f"valid actions unavailable: {exc!r}")
        request = GenerateRequest(
            request_id=f"{self.session_id}-{len(self.turns)}",
            input_ids=list(self.token_ids),
            session_id=self.session_id,
            group_key=f"{self.task.split}-{self.task.env}-{self.task.item_id}-{self.task.group}",
            allowed=listed if self.config.constrain_to_valid_actions else None,
            sampling=SamplingParams(
                temperature=self.config.temperature,
                top_p=self.config.top_p,
                max_new_tokens=self.config.max_new_tokens,
                stop_token_ids=self.chat.stop_token_ids,
            ),
        )
        try:
            async with asyncio.timeout(self.config.generation_timeout_s):
                result = await self.generator.generate(request)
        except TimeoutError:
            return self._finish("gen_timeout", "generation timed out")
        except Exception as exc:
            return self._finish("gen_error", repr(exc))
        if result.error is not None or result.finish_reason == "abort":
            return self._finish("aborted" if result.finish_reason == "abort" else "gen_error", result.error)
        self._append(result.output_ids, 1, result.logprobs, result.versions)
        self._last_output = result.output_ids
        self._last_listed = listed
        self._last_action = reply_decoder(self.chat.tokenizer)(result.output_ids)
        self.state = EpisodeState.STEPPING

    async def _step(self) -> None:
        start = len(self.token_ids) - len(self._last_output)
        try:
            async with asyncio.timeout(self.config.env_timeout_s):
                result = await self.env.step(self._last_action)
        except Exception as exc:
            return self._finish("env_error", f"step failed: {exc!r}")
        self.turns.append(
            Turn(
                action_start=start,
                action_end=len(self.token_ids),
                action_text=self._last_action,
                observation=result.observation,
                reward=float(result.reward),
                valid=bool(result.info.get("valid", True)),
                allowed=self._last_listed if self.config.constrain_to_valid_actions else None,
                listed=None if self.config.constrain_to_valid_actions else self._last_listed,
            )
        )
        self.success = bool(result.info.get("success", result.done and result.reward > 0))
        if result.done:
            return self._finish("done")
        if len(self.turns) >= self.config.turn_cap:
            return self._finish("turn_cap")
        continuation = self.chat.continuation_ids(result.observation, self._last_output)
        if len(self.token_ids) + len(continuation) + self.config.max_new_tokens > self.config.max_total_tokens:
            return self._finish("length")
        self._append(continuation, 0)
        self.state = EpisodeState.GENERATING

    def _trajectory(self) -> Trajectory:
        rewards = [t.reward for t in self.turns]
        if not rewards:
            reward = 0.0
        elif self.config.reward_mode == "sum":
            reward = float(sum(rewards))
        else:
            reward = rewards[-1]
        # a format reward: free-text replies the env could not parse or perform cost the episode
        reward -= self.config.invalid_reply_penalty * sum(not t.valid for t in self.turns)
        return Trajectory(
            task=self.task,
            token_ids=self.token_ids,
            loss_mask=self.loss_mask,
            logprobs=self.logprobs,
            versions=self.versions,
            prompt_len=self.prompt_len,
            turns=self.turns,
            turn_cap=self.config.turn_cap,
            end_reason=self.end_reason,
            reward=reward,
            success=self.success and self.end_reason == "done",
            error=self.error,
        )
