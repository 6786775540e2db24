"""What the BabyAI agent sees, as data and as text.

Invariant: only cells inside the agent's partial view *and* marked visible by
minigrid's occlusion mask are described; positions are relative to the agent
("N steps in front", "M steps to your right/left"); objects of the same name are
numbered 1, 2, ... from nearest to farthest, and those numbers are the ones the
high-level actions use.
"""

from __future__ import annotations

from dataclasses import dataclass

DESCRIBED_TYPES = ("key", "ball", "box", "door", "goal", "lava")
PICKABLE_TYPES = ("key", "ball", "box")


@dataclass(frozen=True)
class SeenObject:
    name: str  # "red ball", "blue closed door"
    index: int  # 1-based among objects of the same name, nearest first
    type: str
    color: str
    pos: tuple[int, int]  # absolute grid position
    front: int  # steps in front of the agent (negative never happens: view is forward)
    right: int  # steps to the right (negative: left)

    @property
    def label(self) -> str:
        return f"{self.name} {self.index}"


@dataclass(frozen=True)
class AgentView:
    objects: tuple[SeenObject, ...]
    wall_ahead: int | None  # distance to the first wall straight ahead, if visible
    carrying: str | None  # "red key" or None


def door_state(obj) -> str:
    if obj.is_locked:
        return "locked"
    return "open" if obj.is_open else "closed"


def object_name(obj) -> str:
    if obj.type == "door":
        return f"{obj.color} {door_state(obj)} door"
    return f"{obj.color} {obj.type}"


def observe(env) -> AgentView:
    """Build the agent's view from an unwrapped minigrid env."""
    grid, vis_mask = env.gen_obs_grid()
    size = env.agent_view_size
    ax, ay = int(env.agent_pos[0]), int(env.agent_pos[1])
    fx, fy = (int(v) for v in env.dir_vec)
    rx, ry = (int(v) for v in env.right_vec)
    found: list[tuple[int, int, int, object, tuple[int, int]]] = []
    wall_ahead: int | None = None
    for j in range(size):
        for i in range(size):
            front, right = size - 1 - j, i - size // 2
            if (front, right) == (0, 0) or not vis_mask[i, j]:
                continue
            cell = grid.get(i, j)
            if cell is None:
                continue
            pos = (ax + front * fx + right * rx, ay + front * fy + right * ry)
            if cell.type == "wall":
                if right == 0 and (wall_ahead is None or front < wall_ahead):
                    wall_ahead = front
            elif cell.type in DESCRIBED_TYPES:
                found.append((front + abs(right), front, right, cell, pos))
    found.sort(key=lambda f: (f[0], f[1], f[2]))
    counts: dict[str, int] = {}
    objects = []
    for _, front, right, cell, pos in found:
        name = object_name(cell)
        counts[name] = counts.get(name, 0) + 1
        objects.append(SeenObject(name, counts[name], cell.type, cell.color, pos, front, right))
    carrying = f"{env.carrying.color} {env.carrying.type}" if env.carrying is not None else None
    return AgentView(tuple(objects), wall_ahead, carrying)


def describe_position(obj: SeenObject) -> str:
    if obj.right == 0:
        return f"right in front of you {obj.front} steps away"
    side = "right" if obj.right > 0 else "left"
    return f"{obj.front} steps in front of you and {abs(obj.right)} steps to your {side}"


def render_view(view: AgentView) -> str:
    parts = []
    if view.objects:
        parts.append(
            "In front of you in this room, you can see several objects: "
            + " ".join(f"There is a {o.label} {describe_position(o)}." for o in view.objects)
        )
    else:
        parts.append("You cannot see any objects within sight.")
    if view.wall_ahead is not None:
        parts.append(f"You are facing a wall {view.wall_ahead} steps away.")
    parts.append(f"You are carrying a {view.carrying}." if view.carrying else "You are not carrying anything.")
    return " ".join(parts)
