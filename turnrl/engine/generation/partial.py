"""Partial rollouts: a request aborted by a weight update resumes from the output it already had.

Invariant: ``merge(partial, continuation(request, partial) answered)`` is the answer to ``request`` that one
uninterrupted generation would have given under the same per-token weights: the partial tokens are kept as they
were sampled (ids, log-probs, versions) and only the rest is generated, with the remaining token budget and, for a
constrained request, only the completions that extend the partial output.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

from turnrl.errors import GenerationError, GenerationTimeout
from turnrl.protocol import GenerateRequest, GenerateResult

Send = Callable[[GenerateRequest], Awaitable[tuple[GenerateResult, bool]]]


async def generate_resuming(send: Send, request: GenerateRequest, attempts: int) -> GenerateResult:
    """Answer ``request`` through ``send`` (one submission -> its result and whether a weight update aborted it),
    resuming an aborted one from its partial output, at most ``attempts`` submissions. A service-side timeout
    raises ``GenerationTimeout`` with the tokens sampled so far."""
    partial: GenerateResult | None = None
    pending = request
    for _ in range(attempts):
        answer, retry = await send(pending)
        result = merge(partial, answer)
        if retry:
            partial, pending = result, continuation(request, result)
            if pending is None:
                return finished_by_budget(result)
            continue
        if result.finish_reason == "timeout":
            raise GenerationTimeout(result)
        return result
    raise GenerationError(f"request {request.request_id!r} aborted by {attempts} weight updates in a row")


def continuation(request: GenerateRequest, partial: GenerateResult) -> GenerateRequest | None:
    """The request that generates the rest of ``request`` after ``partial``; None when nothing is left."""
    done = list(partial.output_ids)
    allowed = None
    if request.allowed is not None:
        allowed = [c[len(done) :] for c in request.allowed if c[: len(done)] == done and len(c) > len(done)]
        if not allowed:
            return None
    left = request.sampling.max_new_tokens - len(done)
    if left < 1 and allowed is None:
        return None
    sampling = msgspec.structs.replace(request.sampling, max_new_tokens=max(left, 1))
    return GenerateRequest(
        request_id=request.request_id,
        input_ids=list(request.input_ids) + done,
        sampling=sampling,
        session_id=request.session_id,
        group_key=request.group_key,
        allowed=allowed,
    )


def merge(partial: GenerateResult | None, rest: GenerateResult) -> GenerateResult:
    if partial is None:
        return rest
    return GenerateResult(
        request_id=rest.request_id,
        output_ids=list(partial.output_ids) + list(rest.output_ids),
        logprobs=list(partial.logprobs) + list(rest.logprobs),
        versions=list(partial.versions) + list(rest.versions),
        finish_reason=rest.finish_reason,
        error=rest.error,
    )


def finished_by_budget(partial: GenerateResult) -> GenerateResult:
    """An aborted partial output that already used the whole budget ends as ``length``."""
    return msgspec.structs.replace(partial, finish_reason="length")
