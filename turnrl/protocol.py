"""Typed messages: the only things that cross a process boundary.

Invariant: every message is a ``msgspec.Struct`` encoded as msgpack and decoded
strictly (unknown or missing fields, wrong types, oversize frames are errors: every struct forbids unknown
fields).
Nothing is ever pickled. A trajectory is token-in/token-out: ``token_ids`` are
exactly the ids the generator sampled (``loss_mask == 1``) interleaved with the
tokenised observations and template tokens (``loss_mask == 0``).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from turnrl.errors import EndReason

FinishReason = Literal["stop", "length", "abort", "timeout"]

MAX_FRAME_BYTES = 64 * 1024 * 1024


class Task(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One environment item. ``group`` ties the n rollouts of one prompt together (GRPO)."""

    env: str
    item_id: int
    split: str = "train"
    group: int = 0


class SamplingParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 32
    stop_token_ids: tuple[int, ...] = ()


class GenerateRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
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
    # episodes that share a prompt (a GRPO group) share this key, so a server can prefill their prompt once
    group_key: str | None = None


class GenerateResult(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    request_id: str
    output_ids: list[int]
    logprobs: list[float]
    versions: list[int]
    finish_reason: FinishReason
    error: str | None = None


class EnvResult(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    observation: str
    reward: float = 0.0
    done: bool = False
    info: dict[str, float | int | str | bool] = {}


class Turn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One policy turn: the span of its tokens and what the environment answered.

    ``allowed`` holds the completions the turn was constrained to (None: free text). ``listed`` holds, for a
    free-text turn, the completions the env listed as valid, recorded for the learner and not enforced.
    """

    action_start: int
    action_end: int
    action_text: str
    observation: str
    reward: float
    valid: bool = True
    allowed: list[list[int]] | None = None
    listed: list[list[int]] | None = None


class Trajectory(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
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


# ---- generation service (ZeroMQ): calls and replies ---------------------------------------------------------
# One call or reply per frame, a tagged union on ``op``. Every reply carries the ``request_id`` of the call it
# answers; an error reply to a frame that could not be read carries ``request_id=None``.

InFlightPolicy = Literal["continue", "abort"]
ErrorCode = Literal["malformed", "too_large", "bad_request", "duplicate", "internal"]


class ServiceCall(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, tag_field="op"):
    request_id: str


class GenerateCall(ServiceCall, tag="generate"):
    """``timeout_s``: past it the request ends with finish reason ``timeout`` and the tokens sampled so far."""

    request: GenerateRequest
    timeout_s: float | None = None


class AbortCall(ServiceCall, tag="abort"):
    """Abort the caller's own requests ``targets`` (or every request of every caller with ``all=True``)."""

    targets: list[str] = []
    all: bool = False


class PauseCall(ServiceCall, tag="pause"):
    """``in_place`` keeps running requests where they are; ``abort`` ends them with finish reason ``abort``."""

    mode: Literal["in_place", "abort"] = "in_place"


class ResumeCall(ServiceCall, tag="resume"):
    pass


class TensorData(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A tensor as raw little-endian bytes (never pickled)."""

    dtype: str
    shape: list[int]
    data: bytes


class UpdateWeightsCall(ServiceCall, tag="update_weights"):
    """New weights from a model directory (``path``) or named tensors; the weight version becomes ``version``
    (default: current + 1). ``in_flight`` overrides the service's policy for requests running across the update."""

    path: str | None = None
    tensors: dict[str, TensorData] | None = None
    version: int | None = None
    in_flight: InFlightPolicy | None = None


class StatsCall(ServiceCall, tag="stats"):
    pass


class ShutdownCall(ServiceCall, tag="shutdown"):
    pass


ServiceCallKind = GenerateCall | AbortCall | PauseCall | ResumeCall | UpdateWeightsCall | StatsCall | ShutdownCall


class ServiceReply(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, tag_field="op"):
    request_id: str | None


class GenerateReply(ServiceReply, tag="result"):
    """``retry``: aborted by a weight update under the ``abort`` policy; the same request may be sent again."""

    result: GenerateResult
    retry: bool = False


class AckReply(ServiceReply, tag="ack"):
    weight_version: int
    affected: int = 0


class ServiceStats(ServiceReply, tag="stats"):
    weight_version: int
    paused: bool
    running: int
    waiting: int
    steps: int
    tokens_generated: int
    requests_finished: int
    errors_replied: int
    busy_seconds: float
    max_running: int
    prefill_tokens: int = 0
    reused_tokens: int = 0
    shared_prefill_tokens: int = 0
    prefix_lookups: int = 0
    prefix_hits: int = 0


class ErrorReply(ServiceReply, tag="error"):
    code: ErrorCode
    message: str


ServiceReplyKind = GenerateReply | AckReply | ServiceStats | ErrorReply


def encode(message: msgspec.Struct) -> bytes:
    return msgspec.msgpack.encode(message)


def decode(data: bytes, kind: type[msgspec.Struct]) -> msgspec.Struct:
    """Strict decode; raises ``msgspec.ValidationError``/``DecodeError`` on any bad frame."""
    if len(data) > MAX_FRAME_BYTES:
        raise msgspec.ValidationError(f"frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
    return msgspec.msgpack.decode(data, type=kind, strict=True)


# ---- env workers (engine <-> EnvWorker process) ------------------------------------------------------
EnvOp = Literal["create", "reset", "step", "valid_actions", "close"]


class EnvCall(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One call on an env hosted by an EnvWorker; ``env_id`` is chosen by the engine.

    ``create`` uses ``family`` and ``options``; ``reset`` uses ``item_id``; ``step`` uses ``action``.
    """

    call_id: int
    op: EnvOp
    env_id: int
    family: str = ""
    options: dict[str, str | int | float | bool] = {}
    item_id: int = 0
    action: str = ""


class EnvReply(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag="reply"):
    """The answer to one ``EnvCall`` (``call_id`` -1: a frame that could not be decoded)."""

    call_id: int
    observation: str | None = None
    result: EnvResult | None = None
    actions: list[str] | None = None
    system_prompt: str | None = None
    error: str | None = None


class WorkerHeartbeat(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag="heartbeat"):
    """Sent by an EnvWorker every heartbeat interval, whatever its envs are doing."""

    worker: str
    envs: int
    pid: int


WorkerMessage = EnvReply | WorkerHeartbeat
