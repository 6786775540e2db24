"""WebArena's action grammar, parsed from the policy's reply.

Invariant: ``parse`` returns a ``WebAction`` or raises ``ValueError`` whose message says what is accepted;
the typed text and the stop answer keep their case and inner brackets. The action is the text after the
last ``Action:`` (first line) or inside the last ```...``` block (WebArena's "In summary, the next action I
will perform is ```click [12]```"); failing both, the whole reply.
"""

from __future__ import annotations

import re

import msgspec

GRAMMAR = (
    "click [id] | type [id] [text] [press_enter 0|1] | hover [id] | press [keys] | scroll [up|down] | "
    "goto [url] | go_back | go_forward | stop [answer]"
)

PATTERNS = {
    "click": re.compile(r"click \[(\d+)\]"),
    "hover": re.compile(r"hover \[(\d+)\]"),
    "type": re.compile(r"type \[(\d+)\] \[(.*?)\](?: \[([01])\])?", re.S),
    "press": re.compile(r"press \[(.+)\]"),
    "scroll": re.compile(r"scroll \[(up|down)\]", re.I),
    "goto": re.compile(r"goto \[(.+)\]"),
    "go_back": re.compile(r"go_back"),
    "go_forward": re.compile(r"go_forward"),
    "stop": re.compile(r"stop(?: \[(.*)\])?", re.S),
}


class WebAction(msgspec.Struct, frozen=True):
    kind: str
    element: int = 0
    text: str = ""
    press_enter: bool = False

    def __str__(self) -> str:
        if self.kind in ("click", "hover"):
            return f"{self.kind} [{self.element}]"
        if self.kind == "type":
            return f"type [{self.element}] [{self.text}] [{int(self.press_enter)}]"
        if self.kind in ("press", "scroll", "goto", "stop"):
            return f"{self.kind} [{self.text}]"
        return self.kind


def action_text(reply: str) -> str:
    idx = reply.lower().rfind("action:")
    if idx >= 0:
        rest = reply[idx + len("action:") :].strip()
        return rest.splitlines()[0].strip() if rest else ""
    fenced = re.findall(r"```(.*?)```", reply, re.S)
    return (fenced[-1] if fenced else reply).strip()


def parse(reply: str) -> WebAction:
    text = action_text(reply)
    for kind, pattern in PATTERNS.items():
        m = pattern.fullmatch(text)
        if m is None:
            continue
        if kind in ("click", "hover"):
            return WebAction(kind, element=int(m.group(1)))
        if kind == "type":
            return WebAction(kind, element=int(m.group(1)), text=m.group(2), press_enter=m.group(3) != "0")
        if kind == "scroll":
            return WebAction(kind, text=m.group(1).lower())
        if kind in ("press", "goto", "stop"):
            return WebAction(kind, text=(m.group(1) or "").strip())
        return WebAction(kind)
    raise ValueError(f"could not parse the action {text[:80]!r}; expected one of: {GRAMMAR}")
