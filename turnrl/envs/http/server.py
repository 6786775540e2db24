"""An AgentGym-compatible HTTP server for one env family.

Routes and field names are AgentGym's for BabyAI, TextCraft and SciWorld:
``POST /create`` -> ``{"id": n}``; ``POST /reset {"id", "data_idx"}``;
``POST /step {"id", "action"}`` -> ``{"observation", "reward", "score", "done"}``
(plus ``valid`` and ``success``); ``GET /observation?id=n`` -> the last
observation; ``POST /close {"id"}``; ``GET /`` and ``GET /health``. The action
may be the bare command (AgentGym's clients strip "Action:") or the full reply.
SciWorld's reset answers as AgentGym's does (``task_description`` and the "look
around" ``observation`` apart, ``task_name``, ``var_num``); BabyAI items map to
AgentGym's 40 levels.

Invariant, unlike the originals: every error is an HTTP 4xx/5xx with a JSON body
``{"error": ...}`` (unknown id 404, malformed body 422 -- a missing, mistyped or unknown field, named in
``detail`` --, bad item id 400, step after done 409, too many live envs 429, env failure 500); live envs are capped
and idle ones reaped (``EnvTable``); env work runs in worker threads; the server
binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from turnrl.envs.http.env_table import EnvTable, Slot
from turnrl.envs.registry import get_env_spec
from turnrl.errors import EnvTableFull, UnknownEnv

# Options the server gives each family's factory (AgentGym's item mapping for BabyAI).
SERVER_ENV_OPTIONS: dict[str, dict[str, Any]] = {"babyai": {"level": "all"}}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown field is an error (422), as on every turnrl wire


class IdBody(_Body):
    id: int


class ResetBody(_Body):
    id: int
    data_idx: int


class StepBody(_Body):
    id: int
    action: str


class EpisodeOver(Exception):
    """A step on an env whose episode has ended (reset it first)."""


def _as_reply(action: str) -> str:
    return action if "action:" in action.lower() else f"Action: {action}"


def _reset(family: str, item: int, slot: Slot) -> dict[str, Any]:
    text = slot.env.reset_sync(item)
    slot.observation, slot.done, slot.started = text, False, True
    payload: dict[str, Any] = {"observation": text, "reward": 0.0, "score": 0, "done": False}
    if family == "sciworld":
        env = slot.env
        payload.update(
            observation=text[len(env.task_description) + 1 :],
            task_description=env.task_description,
            task_name=env.task_name,
            var_num=env.variation,
        )
    return payload


def _step(action: str, slot: Slot) -> dict[str, Any]:
    if not slot.started or slot.done:
        raise EpisodeOver("the episode has ended; reset this env first" if slot.started else "reset this env first")
    result = slot.env.step_sync(_as_reply(action))
    slot.observation, slot.done = result.observation, result.done
    return {
        "observation": result.observation,
        "reward": result.reward,
        "score": result.info.get("score", 0),
        "done": result.done,
        "valid": result.info.get("valid", True),
        "success": result.info.get("success", False),
    }


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


def build_app(
    family: str, max_envs: int = 64, idle_timeout_s: float = 600.0, env_options: dict[str, Any] | None = None
) -> FastAPI:
    """The ASGI app serving ``family`` (raises ``ValueError`` for an unknown family or bad limits)."""
    spec = get_env_spec(family)
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

    app = FastAPI(title=f"turnrl {family} env server", lifespan=lifespan)
    app.state.pool = pool

    @app.exception_handler(RequestValidationError)
    async def _malformed(_: Request, exc: RequestValidationError):
        return JSONResponse(status_code=422, content={"error": "malformed request", "detail": exc.errors()})

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
            "live_envs": len(pool),
            "max_envs": pool.max_envs,
            "reaped": pool.reaped,
        }

    @app.post("/create")
    async def create() -> dict[str, Any]:
        return {"id": await pool.create(), "observation": ""}

    @app.post("/reset")
    async def reset(body: ResetBody) -> dict[str, Any]:
        if body.data_idx < 0:
            raise ValueError(f"data_idx must be >= 0, got {body.data_idx}")
        return await pool.call(body.id, functools.partial(_reset, family, body.data_idx))

    @app.post("/step")
    async def step(body: StepBody) -> dict[str, Any]:
        return await pool.call(body.id, functools.partial(_step, body.action))

    @app.get("/observation")
    async def observation(id: int) -> str:  # AgentGym's query name
        return pool.slot(id).observation

    @app.get("/valid_actions")
    async def valid_actions(id: int) -> dict[str, Any]:
        actions = await pool.call(id, lambda slot: slot.env.valid_actions_sync() if slot.started else [])
        return {"valid_actions": actions}

    @app.post("/close")
    async def close(body: IdBody) -> dict[str, Any]:
        await pool.close(body.id)
        return {"closed": body.id}

    return app


def serve(
    family: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_envs: int = 64,
    idle_timeout_s: float = 600.0,
    env_options: dict[str, Any] | None = None,
) -> None:
    """Run the server in the foreground (blocks until interrupted)."""
    import uvicorn

    app = build_app(family, max_envs=max_envs, idle_timeout_s=idle_timeout_s, env_options=env_options)
    uvicorn.run(app, host=host, port=port, log_level="warning")
