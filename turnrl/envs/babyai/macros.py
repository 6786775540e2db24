"""High-level BabyAI actions: each available action text maps to a list of primitive actions.

Invariant: an action is offered only if it can be carried out from the current
state: path finding runs on the true grid over (position, direction) states with
the primitive moves left/right/forward, never stepping into a cell that cannot be
entered. "go to X n" ends facing X; "pick up X n" ends facing X and picks it up;
"go through D n" walks onto an open door and one step past it; "toggle and go
through D n" walks to face a closed (or, carrying the matching key, locked) door,
opens it and walks through it; "put C next to X n" (carrying C) walks to face the
nearest empty cell beside X and drops C there, so C ends next to X.
"""

from __future__ import annotations

from collections import deque

from turnrl.envs.babyai.view import PICKABLE_TYPES, AgentView, SeenObject

LEFT, RIGHT, FORWARD, PICKUP, DROP, TOGGLE = 0, 1, 2, 3, 4, 5
DIR_VECTORS = ((1, 0), (0, 1), (-1, 0), (0, -1))


def _passable(grid, x: int, y: int) -> bool:
    if not (0 <= x < grid.width and 0 <= y < grid.height):
        return False
    cell = grid.get(x, y)
    return cell is None or cell.can_overlap()


def shortest_path(
    grid, start: tuple[int, int], start_dir: int, target: tuple[int, int], arrive: bool
) -> list[int] | None:
    """Primitive actions from (start, start_dir) to face ``target`` (or stand on it when ``arrive``)."""
    origin = (start[0], start[1], start_dir)
    parent: dict[tuple[int, int, int], tuple[tuple[int, int, int], int] | None] = {origin: None}
    queue = deque([origin])
    while queue:
        state = queue.popleft()
        x, y, d = state
        dx, dy = DIR_VECTORS[d]
        reached = (x, y) == target if arrive else (x + dx, y + dy) == target
        if reached:
            path = []
            while parent[state] is not None:
                state, action = parent[state]
                path.append(action)
            return path[::-1]
        moves = [((x, y, (d - 1) % 4), LEFT), ((x, y, (d + 1) % 4), RIGHT)]
        nx, ny = x + dx, y + dy
        if _passable(grid, nx, ny):
            moves.insert(0, ((nx, ny, d), FORWARD))
        for nxt, action in moves:
            if nxt not in parent:
                parent[nxt] = (state, action)
                queue.append(nxt)
    return None


def _front_cell(env):
    fx, fy = env.front_pos
    return env.grid.get(int(fx), int(fy))


def available_actions(env, view: AgentView) -> dict[str, list[int]]:
    """Ordered mapping from action text to primitive actions for the current state."""
    grid = env.grid
    pos = (int(env.agent_pos[0]), int(env.agent_pos[1]))
    direction = int(env.agent_dir)
    actions: dict[str, list[int]] = {"turn left": [LEFT], "turn right": [RIGHT]}
    front = _front_cell(env)
    if front is None or front.can_overlap():
        actions["move forward"] = [FORWARD]
    carrying = env.carrying

    def path_to(obj: SeenObject, arrive: bool = False) -> list[int] | None:
        return shortest_path(grid, pos, direction, obj.pos, arrive)

    for obj in view.objects:
        if obj.type in ("lava",):
            continue
        if obj.type == "door":
            door = grid.get(*obj.pos)
            if door.is_open:
                path = path_to(obj, arrive=True)
                if path is not None:
                    dx, dy = DIR_VECTORS[_dir_after(direction, path)]
                    extra = [FORWARD] if _passable(grid, obj.pos[0] + dx, obj.pos[1] + dy) else []
                    actions[f"go through {obj.label}"] = path + extra
            else:
                can_open = not door.is_locked or (
                    carrying is not None and carrying.type == "key" and carrying.color == door.color
                )
                path = path_to(obj)
                if path is not None and can_open:
                    actions[f"toggle and go through {obj.label}"] = [*path, TOGGLE, FORWARD, FORWARD]
            path = path_to(obj)
            if path is not None:
                actions[f"go to {obj.label}"] = path
            continue
        path = path_to(obj, arrive=obj.type == "goal")
        if path is None:
            continue
        actions[f"go to {obj.label}"] = path
        if obj.type in PICKABLE_TYPES and carrying is None:
            actions[f"pick up {obj.label}"] = [*path, PICKUP]
    if carrying is not None:
        carried = f"{carrying.color} {carrying.type}"
        for obj in view.objects:
            path = _path_to_drop_beside(grid, pos, direction, obj.pos)
            if path is not None:
                actions[f"put {carried} next to {obj.label}"] = [*path, DROP]
    if front is not None and front.type in ("door", "box"):
        actions["toggle"] = [TOGGLE]
    if carrying is not None and front is None:
        actions["drop"] = [DROP]
    return actions


def _path_to_drop_beside(grid, pos: tuple[int, int], direction: int, target: tuple[int, int]) -> list[int] | None:
    """The shortest path that ends facing an empty cell next to ``target`` (None if there is none)."""
    best: list[int] | None = None
    for dx, dy in DIR_VECTORS:
        cell = (target[0] + dx, target[1] + dy)
        if not (0 <= cell[0] < grid.width and 0 <= cell[1] < grid.height):
            continue
        if grid.get(*cell) is not None:
            continue
        path = shortest_path(grid, pos, direction, cell, arrive=False)
        if path is not None and (best is None or len(path) < len(best)):
            best = path
    return best


def _dir_after(direction: int, path: list[int]) -> int:
    for action in path:
        if action == LEFT:
            direction = (direction - 1) % 4
        elif action == RIGHT:
            direction = (direction + 1) % 4
    return direction
