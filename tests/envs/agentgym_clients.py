"""Clients written from AgentGym's published protocol (its ``agentenv/envs/*.py``): the same routes, field
names, call order and client-side parsing, and the same strictness (every call must answer HTTP 200).

- ``IdClient`` (BabyAI, TextCraft, SciWorld): ``/create`` in the constructor (TextCraft's body
  ``{"commands", "goal"}``) reads ``["id"]``; bodies carry ``id``; ``reset(data_idx)``; ``step`` keeps the
  text after the one "Action:" and drops every character but letters, digits, commas and spaces (BabyAI
  and TextCraft do); the step's reward is ``score`` where the family sends one.
- ``SearchQAClient``: ``/create {"id": 0}`` answers the bare id; bodies carry ``env_idx``; ``reset(id)``
  sends ``{"id"}`` and gets the observation text; the whole reply is the action.
- ``WebArenaClient``: ``/create`` answers ``{"env_idx"}``; ``reset(idx)`` sends ``{"seed": 0, "idx"}``; a
  reply without a triple-backtick action never reaches the server; the reward counts only when
  ``terminated``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Step:
    state: str
    reward: float
    done: bool


class _Client:
    id_field = "id"

    def __init__(self, base: str) -> None:
        self.base = base
        self.env_id: Any = None

    def _post(self, path: str, data: dict[str, Any]) -> Any:
        data[self.id_field] = self.env_id
        response = httpx.post(f"{self.base}/{path}", json=data, timeout=300)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    def _get(self, path: str) -> Any:
        response = httpx.get(f"{self.base}/{path}?{self.id_field}={self.env_id}", timeout=300)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    def observe(self) -> Any:
        return self._get("observation")

    def close(self) -> Any:
        return self._post("close", {})


class IdClient(_Client):
    def __init__(self, base: str, create_body: dict[str, Any] | None = None, reward_key: str = "score") -> None:
        super().__init__(base)
        self.reward_key = reward_key
        created = httpx.post(f"{base}/create", json=create_body, timeout=300)
        assert created.status_code == 200, created.text
        self.created = created.json()
        self.env_id = self.created["id"]

    def reset(self, data_idx: int = 0) -> dict[str, Any]:
        return self._post("reset", {"data_idx": data_idx})

    def step(self, reply: str) -> Step:
        found = re.findall(r"Action:\s*(.*?)(?=\n|$)", reply, re.DOTALL)
        if len(found) > 1:
            return Step("Error: Only one 'Action' is allowed per response. Please adjust your response.", 0, False)
        action = found[-1] if found else ""
        action = " ".join(re.sub(r"[^A-Za-z0-9, ]+", "", action).split()).strip()
        answer = self._post("step", {"action": action})
        return Step(answer["observation"], answer[self.reward_key], answer["done"])


class SearchQAClient(_Client):
    id_field = "env_idx"

    def __init__(self, base: str) -> None:
        super().__init__(base)
        created = httpx.post(f"{base}/create", json={"id": 0}, timeout=300)
        assert created.status_code == 200, created.text
        self.env_id = created.json()

    def reset(self, id: int) -> Any:
        return self._post("reset", {"id": id})

    def step(self, reply: str) -> Step:
        answer = self._post("step", {"action": reply})
        return Step(answer["observation"], answer["reward"], answer["done"])


class WebArenaClient(_Client):
    id_field = "env_idx"

    def __init__(self, base: str) -> None:
        super().__init__(base)
        created = httpx.post(f"{base}/create", timeout=300)
        assert created.status_code == 200, created.text
        self.env_id = created.json()["env_idx"]

    def reset(self, idx: int) -> dict[str, Any]:
        answer = self._post("reset", {"seed": 0, "idx": idx})
        assert answer["observation"] != "TimeoutError"
        return answer

    def step(self, reply: str) -> Step:
        if not re.findall(r"```(.*?)```", reply, re.DOTALL):
            return Step("Cannot parse action from response.", 0, False)
        answer = self._post("step", {"action": reply})
        return Step(answer["observation"], answer["reward"] if answer["terminated"] else 0, answer["terminated"])
