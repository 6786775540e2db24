"""The scripted oracle: a task's ``oracle`` steps, each resolved against the live accessibility tree.

Invariant: a step names its element by role and exact name (``("click", "link", "Cart")``), never by id, so
the script stays valid however the page numbers its elements; a step whose element is not on the page ends
the script (``play`` reports failure rather than guessing).
"""

from __future__ import annotations

import json

from turnrl.envs.web.env import WebEnv
from turnrl.envs.web.tasks import fill_urls


def find_element(tree: str, role: str, name: str) -> int | None:
    prefix = f"] {role} {json.dumps(name)}"
    for line in tree.splitlines():
        line = line.strip()
        if line.startswith("[") and (line.endswith(prefix) or f"{prefix} value:" in line):
            return int(line[1 : line.index("]")])
    return None


def resolve(step, tree: str, site_urls: dict[str, str]) -> str | None:
    """The action text performing ``step`` on the page whose tree is ``tree`` (None: element missing)."""
    kind = step[0]
    if kind == "goto":
        return f"goto [{fill_urls(step[1], site_urls)}]"
    if kind in ("go_back", "go_forward"):
        return kind
    if kind == "stop":
        return f"stop [{step[1]}]"
    element = find_element(tree, step[1], step[2])
    if element is None:
        return None
    if kind == "type":
        return f"type [{element}] [{step[3]}] [{step[4]}]"
    return f"{kind} [{element}]"


def play(env: WebEnv, item_id: int) -> tuple[bool, int]:
    """Run the task's oracle script; (success, steps taken)."""
    env.reset_sync(item_id)
    steps = 0
    for step in env.tasks[item_id]["oracle"]:
        action = resolve(step, env.tree, env.site_urls)
        if action is None:
            env.close_sync()
            return False, steps
        result = env.step_sync(f"Action: {action}")
        steps += 1
        if result.done:
            return bool(result.info["success"]), steps
    env.close_sync()
    return False, steps
