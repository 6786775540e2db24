"""Typed messages: the only things that cross a process boundary.

Invariant: every message is a ``msgspec.Struct`` encoded as msgpack and decoded
strictly (unknown or missing fields, wrong types, oversize frames are errors).
Nothing is ever pickled. A trajectory is token-in/token-out: ``token_ids`` are
exactly the ids the generator sampled (``loss_mask == 1``) interleaved with the
tokenised observations and template tokens (``loss_mask == 0``).
"""

from __future__ import annotations

from typing import Literal

import msgspec

EndReason = Literal["done", "turn_cap", "length", "env_error", "gen_timeout", "gen_error", "aborted"]
FinishReason = Literal["stop", "length", "abort"]

MAX_FRAME_BYTES = 64 * 1024 * 1024


class Task(msgspec.Struct, frozen=True, kw_only=True):
    """One environment item. ``group`` ties the n rollouts of one prompt together (GRPO)."""

    env: str
    item_id: int
    split: str = "train"
    group: int = 0


class SamplingParams(msgspec.Struct, frozen=True, kw_only=True):
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 32
    stop_token_ids: tuple[int, ...] = ()


class GenerateRequest(msgspec.Struct, frozen=True, kw_only=True):
    """``session_id`` names the episode: its earlier turns' KV cache may be reused.

    ``allowed`` (optional) constrains the output to be exactly one of these token
    sequences; the returned log-probs are then those of the distribution
    renormalised over the tokens allowed at each step.
    """

    request_id: str
    input_ids: list[int]
    sampling: SamplingParams = SamplingParams()
    session_id: str | None = None
    allowed: list[list[int]] | None = None


class GenerateResult(msgspec.Struct, kw_only=True):
    request_id: str
    output_ids: list[int]
    logprobs: list[float]
    versions: list[int]
    finish_reason: FinishReason
    error: str | None = None


class EnvResult(msgspec.Struct, kw_only=True):
    observation: str
    reward: float = 0.0
    done: bool = False
    info: dict[str, float | int | str | bool] = {}


class Turn(msgspec.Struct, kw_only=True):
    """One policy turn: the span of its tokens and what the environment answered.

    ``allowed`` holds the completions the turn was constrained to (None: free text).
    """

    action_start: int
    action_end: int
    action_text: str
    observation: str
    reward: float
    valid: bool = True
    allowed: list[list[int]] | None = None


class Trajectory(msgspec.Struct, kw_only=True):
    task: Task
    token_ids: list[int]
    loss_mask: list[int]
    logprobs: list[float]
    versions: list[int]
    prompt_len: int
    turns: list[Turn] = []
    turn_cap: int = 0
    end_reason: EndReason = "done"
    reward: float = 0.0
    success: bool = False
    error: str | None = None

    @property
    def turn_rewards(self) -> list[float]:
        return [t.reward for t in self.turns]

    @property
    def num_policy_tokens(self) -> int:
        return sum(self.loss_mask)


def encode(message: msgspec.Struct) -> bytes:
    return msgspec.msgpack.encode(message)


def decode(data: bytes, kind: type[msgspec.Struct]) -> msgspec.Struct:
    """Strict decode; raises ``msgspec.ValidationError``/``DecodeError`` on any bad frame."""
    if len(data) > MAX_FRAME_BYTES:
        raise msgspec.ValidationError(f"frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
    return msgspec.msgpack.decode(data, type=kind, strict=True)
