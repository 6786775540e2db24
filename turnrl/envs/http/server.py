"""An AgentGym-compatible HTTP server for one env family, in that family's AgentGym dialect.

Routes are AgentGym's: ``POST /create``, ``POST /reset``, ``POST /step``, ``GET /observation``,
``POST /close``, plus ``GET /``, ``GET /health`` and ``GET /valid_actions``. Field names and answer shapes
follow the family's dialect (``dialects.py``: ``id``/``data_idx`` for BabyAI, TextCraft and SciWorld,
``env_idx`` for SearchQA and WebArena, SearchQA's bare-integer create, WebArena's ``terminated``), chosen
from the family unless told otherwise. Every step answer also carries ``score``, ``valid`` and
``success``. For the ``id`` families the action may be the bare command (AgentGym's clients strip
"Action:") or the full reply; the ``env_idx`` families get the model's whole reply, as AgentGym sends it.
SciWorld's reset answers as AgentGym's does (``task_description`` and the "look around" ``observation``
apart, ``task_name``, ``var_num``).

Invariant, unlike the originals: every error is an HTTP 4xx/5xx with a JSON body ``{"error": ...}``
(unknown id 404, malformed body 422 -- a missing, mistyped or unknown field, named --, bad item id or task
400, step after done 409, too many live envs 429, env failure 500); live envs are capped and idle ones reaped
(``EnvTable``); env work runs in worker threads; the server binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any

import msgspec
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from turnrl.envs.http.dialects import Dialect, dialect_for, get_dialect
from turnrl.envs.http.env_table import DEFAULT_IDLE_TIMEOUT_S, DEFAULT_MAX_ENVS, EnvTable, Slot
from turnrl.envs.registry import get_env_spec
from turnrl.errors import EnvTableFull, UnknownEnv

# Options the server gives each family's factory (AgentGym's item mapping for BabyAI).
SERVER_ENV_OPTIONS: dict[str, dict[str, Any]] = {"babyai": {"level": "all"}}


class EpisodeOver(Exception):
    """A step on an env whose episode has ended (reset it first)."""


class Malformed(Exception):
    """A request body that does not fit the dialect (HTTP 422)."""


class Bodies:
    """The request bodies of one dialect, as msgspec structs with its field names."""

    def __init__(self, d: Dialect) -> None:
        create: list[tuple] = []
        if d.create_item_field:
            create.append((d.create_item_field, int | None, None))
        if d.create_starts_on_own_id:
            # AgentGym's TextCraft client also sends its data directory: accepted, and ignored (ours is shipped)
            create += [("commands", str | None, None), ("goal", str | None, None), ("minecraft_dir", str | None, None)]
        strict = {"forbid_unknown_fields": True}  # an unknown field is an error (422), as on every turnrl wire
        self.create = msgspec.defstruct("CreateBody", create, **strict)
        extra = [(name, int, 0) for name in d.reset_extra]
        self.reset = msgspec.defstruct("ResetBody", [(d.id_field, int), (d.item_field, int), *extra], **strict)
        self.step = msgspec.defstruct("StepBody", [(d.id_field, int), ("action", str)], **strict)
        self.close = msgspec.defstruct("CloseBody", [(d.id_field, int)], **strict)


async def _read(request: Request, kind: type, empty_ok: bool = False) -> Any:
    raw = await request.body()
    if empty_ok and not raw.strip():
        return kind()
    try:
        return msgspec.json.decode(raw, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise Malformed(str(exc)) from None


def _as_reply(action: str) -> str:
    return action if "action:" in action.lower() else f"Action: {action}"


def _start(slot: Slot, text: str) -> None:
    slot.observation, slot.reward, slot.score, slot.done, slot.started = text, 0.0, 0.0, False, True


def _reset(family: str, d: Dialect, item: int, slot: Slot) -> Any:
    text = slot.env.reset_sync(item)
    _start(slot, text)
    if d.reset_answer == "text":
        return text
    if d.reset_answer == "webarena":
        task = getattr(slot.env, "task", None) or {}
        return {"observation": text, "sites": list(task.get("sites", [])), "object": task.get("intent", "")}
    payload: dict[str, Any] = {"observation": text, "reward": 0.0, "score": 0, "done": False, "deleted": False}
    if family == "sciworld":
        env = slot.env
        payload.update(
            observation=text[len(env.task_description) + 1 :],
            task_description=env.task_description,
            task_name=env.task_name,
            var_num=env.variation,
        )
    return payload


def _custom_task(commands: str, goal: str, slot: Slot) -> str:
    text = slot.env.reset_custom(commands, goal)
    _start(slot, text)
    return text


def _step(d: Dialect, action: str, slot: Slot) -> dict[str, Any]:
    if not slot.started or slot.done:
        raise EpisodeOver("the episode has ended; reset this env first" if slot.started else "reset this env first")
    result = slot.env.step_sync(action if d.raw_action else _as_reply(action))
    score = result.info.get("score", 0)
    slot.observation, slot.reward, slot.score, slot.done = result.observation, result.reward, score, result.done
    answer: dict[str, Any] = {"observation": result.observation, "reward": result.reward, "score": score}
    answer[d.done_field] = result.done
    if d.done_field == "terminated":
        answer["truncated"] = False
    if d.reset_answer != "payload":
        answer["info"] = None
    answer.update(valid=result.info.get("valid", True), success=result.info.get("success", False))
    return answer


def _observation(d: Dialect, slot: Slot) -> Any:
    if d.observation_answer == "text":
        return slot.observation
    return {
        "observation": slot.observation if slot.started else "Environment not initialized",
        "reward": slot.reward,
        "score": slot.score,
        "done": slot.done,
        "deleted": False,
    }


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, **extra})


def build_app(
    family: str,
    max_envs: int = DEFAULT_MAX_ENVS,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    env_options: dict[str, Any] | None = None,
    dialect: str | None = None,
) -> FastAPI:
    """The ASGI app serving ``family`` in its AgentGym dialect (or ``dialect``); raises ``ValueError`` for
    an unknown family or dialect, or bad limits."""
    spec = get_env_spec(family)
    d = dialect_for(family) if dialect is None else get_dialect(dialect)
    bodies = Bodies(d)
    options = {**SERVER_ENV_OPTIONS.get(family, {}), **(env_options or {})}
    pool = EnvTable(functools.partial(spec.factory, **options), max_envs=max_envs, idle_timeout_s=idle_timeout_s)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        reaper = asyncio.create_task(pool.reaper())
        try:
            yield
        finally:
            reaper.cancel()
            await pool.close_all()

    app = FastAPI(title=f"turnrl {family} env server ({d.name} dialect)", lifespan=lifespan)
    app.state.pool = pool
    app.state.dialect = d

    @app.exception_handler(Malformed)
    async def _malformed(_: Request, exc: Malformed):
        return _error(422, "malformed request", detail=str(exc), dialect=d.name)

    @app.exception_handler(UnknownEnv)
    async def _unknown(_: Request, exc: UnknownEnv):
        return _error(404, f"no live env with id {exc.args[0]} (never created, closed, or reaped when idle)")

    @app.exception_handler(EnvTableFull)
    async def _full(_: Request, exc: EnvTableFull):
        return _error(429, str(exc))

    @app.exception_handler(ValueError)
    async def _bad_value(_: Request, exc: ValueError):
        return _error(400, str(exc))

    @app.exception_handler(EpisodeOver)
    async def _over(_: Request, exc: EpisodeOver):
        return _error(409, str(exc))

    @app.exception_handler(Exception)
    async def _failed(_: Request, exc: Exception):
        return _error(500, f"{type(exc).__name__}: {exc}")

    @app.get("/")
    async def hello() -> str:
        return f"This is environment {family}."

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "family": family,
            "dialect": d.name,
            "live_envs": len(pool),
            "max_envs": pool.max_envs,
            "idle_timeout_s": pool.idle_timeout_s,
            "reaped": pool.reaped,
        }

    async def _close_quietly(env_id: int) -> None:
        with contextlib.suppress(UnknownEnv):
            await pool.close(env_id)

    @app.post("/create")
    async def create(request: Request) -> Any:
        body = await _read(request, bodies.create, empty_ok=True)
        custom = (getattr(body, "commands", None), getattr(body, "goal", None))
        if (custom[0] is None) != (custom[1] is None):
            raise Malformed("give both 'commands' and 'goal', or neither")
        item = getattr(body, d.create_item_field, None) if d.create_item_field else None
        if item is not None and item < 0:
            raise ValueError(f"{d.create_item_field} must be >= 0, got {item}")
        env_id = await pool.create()
        answer: dict[str, Any] = {d.create_key or "id": env_id}
        try:  # a create that starts an episode either succeeds whole or leaves no env behind
            if custom[0] is not None:
                answer.update(observation=await pool.call(env_id, functools.partial(_custom_task, *custom)))
            elif d.create_starts_on_own_id or item is not None:
                start = env_id if item is None else item
                text = await pool.call(env_id, lambda slot: _reset(family, d, start, slot))
                answer.update(observation=text if isinstance(text, str) else text["observation"])
            if d.create_starts_on_own_id:
                answer.update(done=False, reward=0)
        except BaseException:
            await _close_quietly(env_id)
            raise
        return env_id if d.create_key is None else answer

    @app.post("/reset")
    async def reset(request: Request) -> Any:
        body = await _read(request, bodies.reset)
        item = getattr(body, d.item_field)
        if item < 0:
            raise ValueError(f"{d.item_field} must be >= 0, got {item}")
        return await pool.call(getattr(body, d.id_field), functools.partial(_reset, family, d, item))

    @app.post("/step")
    async def step(request: Request) -> dict[str, Any]:
        body = await _read(request, bodies.step)
        return await pool.call(getattr(body, d.id_field), functools.partial(_step, d, body.action))

    @app.get("/observation")
    async def observation(request: Request) -> Any:
        return _observation(d, pool.slot(_query_id(request, d)))

    @app.get("/valid_actions")
    async def valid_actions(request: Request) -> dict[str, Any]:
        env_id = _query_id(request, d)
        actions = await pool.call(env_id, lambda slot: slot.env.valid_actions_sync() if slot.started else [])
        return {"valid_actions": actions}

    @app.post("/close")
    async def close(request: Request) -> dict[str, Any]:
        env_id = getattr(await _read(request, bodies.close), d.id_field)
        await pool.close(env_id)
        return {"closed": env_id}

    return app


def _query_id(request: Request, d: Dialect) -> int:
    value = request.query_params.get(d.id_field)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Malformed(f"query parameter {d.id_field!r} must be an integer, got {value!r}") from None
