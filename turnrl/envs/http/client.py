"""A turnrl env that drives a remote AgentGym-style HTTP env server as if it were local.

Invariant: one ``HttpEnv`` owns at most one remote env id at a time: it is
created at the first ``reset``, reused by later resets, and closed by ``close``
(safe to call twice). Every server failure, whether a 4xx/5xx status (our server)
or a 200 answer carrying ``{"error": ...}`` (AgentGym's originals), raises
``HttpEnvError`` naming the route, so the engine records the episode as failed
instead of training on an error text. Field names differ per server family and
are data (``RemoteProtocol``), chosen by name: ``agentgym`` (BabyAI, TextCraft,
SciWorld, ALFWorld: ``id``/``data_idx``; also turnrl's own ``serve-env``),
``agentgym-sciworld`` (reward = score / 100), ``searchqa`` and ``webarena``
(``env_idx``).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import httpx
import msgspec

from turnrl.envs.base import Env
from turnrl.envs.registry import EnvSpec, TaskSplits, register_env
from turnrl.errors import HttpEnvError
from turnrl.protocol import EnvResult


class RemoteProtocol(msgspec.Struct, frozen=True, kw_only=True):
    id_field: str = "id"  # the env id's name in bodies and queries
    create_id_key: str | None = "id"  # where /create puts the id (None: the whole answer is the id)
    item_field: str = "data_idx"  # the item id's name in the /reset body
    reset_extra: dict[str, int | str] = {}
    done_field: str = "done"
    strip_action_marker: bool = True  # send the bare command (AgentGym's BabyAI/SciWorld clients do)
    observe_after_reset: bool = False  # the first observation comes from GET /observation
    reward_from_score_percent: bool = False  # reward = score / 100 (AgentGym's SciWorld reward is a delta)


PROTOCOLS: dict[str, RemoteProtocol] = {
    "agentgym": RemoteProtocol(),
    "agentgym-sciworld": RemoteProtocol(reward_from_score_percent=True),
    "searchqa": RemoteProtocol(
        id_field="env_idx", create_id_key=None, item_field="id", strip_action_marker=False, observe_after_reset=True
    ),
    "webarena": RemoteProtocol(
        id_field="env_idx",
        create_id_key="env_idx",
        item_field="idx",
        reset_extra={"seed": 0},
        done_field="terminated",
        strip_action_marker=False,
        observe_after_reset=True,
    ),
}


def strip_marker(text: str) -> str:
    """The command after the last "Action:" (first line), case kept; the text itself if there is no marker."""
    idx = text.lower().rfind("action:")
    if idx < 0:
        return text.strip()
    rest = text[idx + len("action:") :].strip()
    return rest.splitlines()[0].strip() if rest else ""


class HttpEnv(Env):
    def __init__(
        self,
        base_url: str,
        protocol: str | RemoteProtocol = "agentgym",
        family: str = "remote",
        system_prompt: str = "",
        timeout_s: float = 300.0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if isinstance(protocol, str):
            if protocol not in PROTOCOLS:
                raise ValueError(f"unknown protocol {protocol!r}; choose from: {', '.join(PROTOCOLS)}")
            protocol = PROTOCOLS[protocol]
        self.base_url = base_url.rstrip("/")
        self.protocol = protocol
        self.family = family
        self.system_prompt = system_prompt
        self.timeout_s = timeout_s
        self.env_id: Any = None
        self._client: httpx.AsyncClient | None = None

    async def reset(self, item_id: int) -> str:
        p = self.protocol
        if self.env_id is None:
            created = await self._call("POST", "create", {})
            self.env_id = created if p.create_id_key is None else created[p.create_id_key]
        answer = await self._call("POST", "reset", {p.item_field: int(item_id), **p.reset_extra})
        if p.observe_after_reset or not isinstance(answer, dict) or "observation" not in answer:
            return _as_text(await self._call("GET", "observation"))
        text = _as_text(answer["observation"])
        if answer.get("task_description"):
            text = f"{answer['task_description']}\n{text}"
        return text

    async def step(self, action_text: str) -> EnvResult:
        if self.env_id is None:
            raise RuntimeError("step() before reset()")
        p = self.protocol
        action = strip_marker(action_text) if p.strip_action_marker else action_text
        answer = await self._call("POST", "step", {"action": action})
        score = answer.get("score", answer.get("reward", 0.0))
        reward = max(float(score), 0.0) / 100 if p.reward_from_score_percent else float(answer.get("reward", 0.0))
        info = {
            "score": score if isinstance(score, int | float) else 0.0,
            "success": bool(answer.get("success", reward > 0)),
            "valid": bool(answer.get("valid", True)),
        }
        return EnvResult(
            observation=_as_text(answer.get("observation", "")),
            reward=reward,
            done=bool(answer.get(p.done_field, False)),
            info=info,
        )

    async def valid_actions(self) -> list[str] | None:
        if self.env_id is None:
            return None
        try:
            answer = await self._call("GET", "valid_actions")
        except HttpEnvError:  # servers other than ours do not list actions
            return None
        return list(answer.get("valid_actions", [])) or None

    async def close(self) -> None:
        if self.env_id is not None:
            # already gone (reaped, or a server without /close) is fine
            with contextlib.suppress(HttpEnvError, httpx.HTTPError):
                await self._call("POST", "close", {})
            self.env_id = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _call(self, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s)
        id_field = self.protocol.id_field
        if method == "GET":
            response = await self._client.get(f"/{route}", params={id_field: self.env_id})
        else:
            payload = dict(body or {})
            if route != "create":
                payload[id_field] = self.env_id
            response = await self._client.post(f"/{route}", json=payload)
        try:
            answer = response.json()
        except json.JSONDecodeError:
            answer = response.text
        if response.status_code >= 400 or (isinstance(answer, dict) and "error" in answer):
            message = answer.get("error", answer) if isinstance(answer, dict) else answer
            raise HttpEnvError(f"{method} /{route} -> {response.status_code}: {message}")
        return answer


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def register_remote(
    family: str,
    base_url: str,
    splits: TaskSplits,
    default_turn_cap: int,
    protocol: str = "agentgym",
    system_prompt: str = "",
    description: str = "",
) -> EnvSpec:
    """Register a family served by a remote server, e.g. AgentGym's WebArena:
    ``register_remote("webarena", "http://127.0.0.1:8000", TaskSplits(range(50, 812), range(0, 50)), 15,
    protocol="webarena")``; then ``make_env("webarena")`` gives a ``HttpEnv`` on it."""

    def factory(**options) -> HttpEnv:
        settings = {
            "base_url": base_url,
            "protocol": protocol,
            "family": family,
            "system_prompt": system_prompt,
            **options,
        }
        return HttpEnv(**settings)

    return register_env(
        EnvSpec(
            family=family,
            factory=factory,
            splits=splits,
            default_turn_cap=default_turn_cap,
            description=description or f"remote {protocol} env server at {base_url}",
        )
    )
