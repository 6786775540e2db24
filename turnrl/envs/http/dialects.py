"""AgentGym's per-family HTTP dialects, as data: field names, answer shapes, what ``/create`` does.

AgentGym runs one server per family and its clients (``agentenv/envs/*.py``) differ in small ways:

- the ``id`` families (BabyAI, TextCraft, SciWorld): bodies name the env ``id``, ``/reset`` takes
  ``data_idx``, ``/create`` answers ``{"id": n}`` (TextCraft's also carries the first observation: a new env
  starts on the goal of its own id, or on the ``commands``/``goal`` of the create body), a step answers
  ``done``; ``GET /observation`` answers BabyAI's whole state as an object, the others the text alone;
- the ``env_idx`` families: SearchQA's ``/create {"id": item}`` answers the bare integer, ``/reset
  {"env_idx", "id"}`` answers the observation text; WebArena's ``/create`` answers ``{"env_idx": n}``,
  ``/reset {"env_idx", "seed", "idx"}`` answers ``{"observation", "sites", "object"}`` and a step answers
  ``terminated`` and ``truncated`` instead of ``done``; both send the model's whole reply as the action.

Invariant: a dialect only renames and reshapes; every answer still carries our own fields too (``score``,
``valid``, ``success``), and every error is still a 4xx/5xx with ``{"error"}`` (AgentGym's clients treat a
non-200 and a 200 ``{"error"}`` alike: the episode ends). ``dialect_for(family)`` picks a family's dialect.
"""

from __future__ import annotations

from typing import Literal

import msgspec

ResetAnswer = Literal["payload", "text", "webarena"]
ObservationAnswer = Literal["text", "payload"]


class Dialect(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    id_field: str = "id"  # the env id's name in bodies and in the /observation query
    item_field: str = "data_idx"  # the item id's name in the /reset body
    reset_extra: tuple[str, ...] = ()  # other integer fields the /reset body must carry (WebArena's seed)
    create_key: str | None = "id"  # the key of the id in /create's answer (None: the bare integer)
    create_item_field: str | None = None  # a /create body field naming the item the new env starts on
    create_starts_on_own_id: bool = False  # a new env starts on item == its id (TextCraft), or a custom task
    reset_answer: ResetAnswer = "payload"
    done_field: str = "done"  # the name of "done" in a step's answer
    observation_answer: ObservationAnswer = "text"
    raw_action: bool = False  # the action is the model's whole reply (else a bare command, "Action:" optional)


DIALECTS: dict[str, Dialect] = {
    "agentgym": Dialect(name="agentgym"),
    "babyai": Dialect(name="babyai", observation_answer="payload"),
    "textcraft": Dialect(name="textcraft", create_starts_on_own_id=True),
    "sciworld": Dialect(name="sciworld"),
    "searchqa": Dialect(
        name="searchqa",
        id_field="env_idx",
        item_field="id",
        create_key=None,
        create_item_field="id",
        reset_answer="text",
        raw_action=True,
    ),
    "webarena": Dialect(
        name="webarena",
        id_field="env_idx",
        item_field="idx",
        reset_extra=("seed",),
        create_key="env_idx",
        reset_answer="webarena",
        done_field="terminated",
        raw_action=True,
    ),
}

# turnrl family -> the AgentGym dialect its server speaks by default
FAMILY_DIALECTS: dict[str, str] = {
    "babyai": "babyai",
    "textcraft": "textcraft",
    "sciworld": "sciworld",
    "search": "searchqa",
    "web": "webarena",
}


def get_dialect(name: str) -> Dialect:
    try:
        return DIALECTS[name]
    except KeyError:
        raise ValueError(f"unknown dialect {name!r}; choose from: {', '.join(DIALECTS)}") from None


def dialect_for(family: str) -> Dialect:
    """The dialect ``serve-env family`` speaks by default (AgentGym's ``id`` dialect for other families)."""
    return DIALECTS[FAMILY_DIALECTS.get(family, "agentgym")]
