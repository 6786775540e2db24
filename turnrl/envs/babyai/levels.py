"""The 40 BabyAI levels of AgentGym and the item-id -> (level, seed) mapping.

Invariant: ``agentgym_task(item_id)`` is a pure function: item ``i`` is level
``AGENTGYM_LEVELS[i % 40]`` (AgentGym's ``levels[i % 40 + 1]``) with seed ``i // 40``.
Each level resolves to the newest registered minigrid version of its name
(minigrid 3 retired a few ``-v0`` ids, e.g. ``GoToObjS6`` is ``-v1`` now).
"""

from __future__ import annotations

import re
from functools import cache

import gymnasium as gym
import minigrid  # noqa: F401  (registers the BabyAI ids)

AGENTGYM_LEVELS: tuple[str, ...] = (
    "GoToRedBallGrey",
    "GoToRedBall",
    "GoToRedBallNoDists",
    "GoToObjS6",
    "GoToLocalS8N7",
    "GoToObjMazeS7",
    "GoToImpUnlock",
    "GoToSeqS5R2",
    "GoToRedBlueBall",
    "GoToDoor",
    "GoToObjDoor",
    "Open",
    "OpenRedDoor",
    "OpenDoorLoc",
    "OpenRedBlueDoorsDebug",
    "OpenDoorsOrderN4Debug",
    "Pickup",
    "UnblockPickup",
    "PickupLoc",
    "PickupDistDebug",
    "PickupAbove",
    "PutNextLocalS6N4",
    "PutNextS7N4Carrying",
    "Unlock",
    "UnlockLocalDist",
    "KeyInBox",
    "UnlockPickupDist",
    "BlockedUnlockPickup",
    "UnlockToUnlock",
    "ActionObjDoor",
    "FindObjS7",
    "KeyCorridorS6R3",
    "OneRoomS20",
    "MoveTwoAcrossS8N9",
    "SynthS5R2",
    "SynthLoc",
    "SynthSeq",
    "MiniBossLevel",
    "BossLevel",
    "BossLevelNoUnlock",
)

ALL_LEVELS = "all"  # the BabyAIEnv level that means "AgentGym's 40 levels, chosen by item id"


def agentgym_task(item_id: int) -> tuple[str, int]:
    """(level name, seed) of AgentGym item ``item_id``."""
    if item_id < 0:
        raise ValueError(f"item_id must be >= 0, got {item_id}")
    return AGENTGYM_LEVELS[item_id % len(AGENTGYM_LEVELS)], item_id // len(AGENTGYM_LEVELS)


@cache
def gym_id(level: str) -> str:
    """The gymnasium id of a level name (``GoToLocal`` -> ``BabyAI-GoToLocal-v0``), newest version."""
    if level.startswith("BabyAI-"):
        return level
    pattern = re.compile(rf"BabyAI-{re.escape(level)}-v(\d+)")
    versions = [int(m.group(1)) for name in gym.registry if (m := pattern.fullmatch(name))]
    if not versions:
        raise ValueError(f"unknown BabyAI level {level!r}")
    return f"BabyAI-{level}-v{max(versions)}"
