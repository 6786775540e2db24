"""One failure vocabulary: why an episode ends, and the exceptions that cross a room or process boundary.

Invariants:
- every episode ends with exactly one ``EndReason``; the failures among them are ``ERROR_REASONS`` and each is
  caused by one family of exception below (``GenerationTimeout`` -> ``gen_timeout``, any other
  ``GenerationError`` -> ``gen_error``, ``EnvError`` or any exception from an env -> ``env_error``; the episode's
  own deadline -> ``aborted``);
- every exception raised across a boundary is a ``TurnRLError`` and also the builtin it refines
  (``GenerationTimeout`` is a ``TimeoutError``, ``UnknownEnv`` a ``KeyError``), so callers may catch either;
- a leaf: imports only the standard library.
"""

from __future__ import annotations

from typing import Literal, get_args

EndReason = Literal["done", "turn_cap", "length", "env_error", "gen_timeout", "gen_error", "aborted"]
END_REASONS: tuple[str, ...] = get_args(EndReason)
ERROR_REASONS = frozenset({"env_error", "gen_timeout", "gen_error", "aborted"})


class TurnRLError(Exception):
    """Base of every error turnrl raises across a boundary."""


# ---- generation --------------------------------------------------------------------------------------------------
class GenerationError(TurnRLError, RuntimeError):
    """A generator could not answer a request (the episode ends ``gen_error``)."""


class BadRequest(TurnRLError, ValueError):
    """A generation request no generator could serve as asked (bad ids, sampling values, lengths); names the
    field. Not an episode's failure but the caller's: it is raised, never turned into an end reason."""


class DuplicateRequest(BadRequest):
    """A request id that is already running for the same caller."""


class GenerationTimeout(GenerationError, TimeoutError):
    """A request ran past its deadline; ``result`` holds the tokens sampled until then (``gen_timeout``)."""

    def __init__(self, result):
        super().__init__(f"request {result.request_id!r} timed out after {len(result.output_ids)} tokens")
        self.result = result


class ServiceError(GenerationError):
    """The generation service answered a call with an error reply (``code`` is the protocol's ``ErrorCode``)."""

    def __init__(self, code: str, message: str, request_id: str | None = None):
        super().__init__(f"generation service error [{code}] for {request_id!r}: {message}")
        self.code, self.message, self.request_id = code, message, request_id


class SGLangError(GenerationError):
    """An SGLang server refused or failed a call."""


# ---- environments ------------------------------------------------------------------------------------------------
class EnvError(TurnRLError, RuntimeError):
    """An environment (local, in a worker process or behind HTTP) failed (the episode ends ``env_error``)."""


class EnvWorkerLost(EnvError):
    """The worker process hosting an env died or hung; the env's state is gone."""


class HttpEnvError(EnvError):
    """An AgentGym-style env server answered with an error or could not be reached."""


class EnvTableFull(TurnRLError):
    """An env server holds as many live envs as it may (HTTP 429)."""


class UnknownEnv(TurnRLError, KeyError):
    """No live env has this id (closed, reaped, or never created; HTTP 404)."""


# ---- checkpoints -------------------------------------------------------------------------------------------------
class CheckpointError(TurnRLError, ValueError):
    """A checkpoint that cannot be loaded as written: a missing or unreadable file, or one that would need pickle."""
