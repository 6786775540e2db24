"""``turnrl view``: a run as one static HTML file (no server, no network).

Invariants: the page is self-contained (inline CSS, JS and SVG; it loads nothing);
every text from the run reaches the page through ``textContent``, never as markup;
each logged step's episodes sit in their own JSON block, parsed only when the step
is opened, and steps and episodes are listed in pages of bounded size, so a long
run's page opens as fast as a short one's.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from turnrl.engine.records.checkpoint import latest_checkpoint, load_trainer_state
from turnrl.engine.records.metrics import read_metrics
from turnrl.engine.records.trajectory_log import logged_steps, read_step

STEPS_PER_PAGE = 50
EPISODES_PER_PAGE = 25


def load_run(run_dir: str | Path) -> dict:
    run = Path(run_dir)
    if not run.is_dir():
        raise ValueError(f"run directory {str(run)!r} does not exist")
    metrics = run / "metrics.jsonl"
    logged = logged_steps(run)
    if not metrics.is_file() and not logged:
        raise ValueError(f"{str(run)!r} is not a turnrl run (no metrics.jsonl and no trajectories/)")
    rows = read_metrics(metrics) if metrics.is_file() else []
    return {
        "name": run.resolve().name,
        "config": _json_or_none(run / "config.json") or {},
        "rows": rows,
        "evals": _evals(run),
        "episodes": {step: read_step(path) for step, path in logged.items()},
    }


def _json_or_none(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _evals(run: Path) -> list[dict]:
    summary = _json_or_none(run / "summary.json")
    if summary and "evals" in summary:
        return summary["evals"]
    checkpoint = latest_checkpoint(run)
    return load_trainer_state(checkpoint).get("evals", []) if checkpoint else []


def success_svg(rows: list[dict], evals: list[dict], width: int = 720, height: int = 260) -> str:
    """The success curve: train success per step (line) and held-out success (dots)."""
    left, right, top, bottom = 48, 16, 14, 34
    steps = [r["step"] for r in rows] + [e["step"] for e in evals]
    lo, hi = (min(steps), max(steps)) if steps else (0, 1)
    span = max(hi - lo, 1)

    def x(step: float) -> float:
        return left + (step - lo) / span * (width - left - right)

    def y(rate: float) -> float:
        return top + (1 - rate) * (height - top - bottom)

    parts = [
        f'<svg id="curve" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="success rate per step">'
    ]
    for rate in (0, 0.25, 0.5, 0.75, 1):
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(rate):.1f}" y2="{y(rate):.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y(rate) + 4:.1f}" text-anchor="end">{rate:g}</text>'
        )
    for step in sorted({lo, hi, lo + span // 2}):
        parts.append(f'<text x="{x(step):.1f}" y="{height - 14}" text-anchor="middle">{step}</text>')
    parts.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 1}" text-anchor="middle">step</text>')
    train = [(r["step"], r["train/success_rate"]) for r in rows if "train/success_rate" in r]
    if train:
        points = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in train)
        parts.append(f'<polyline class="train" points="{points}"><title>train success (sampled)</title></polyline>')
    for e in evals:
        label = html.escape(f"held-out @ step {e['step']}: {e['success_rate']:.3f}")
        parts.append(
            f'<circle class="eval" cx="{x(e["step"]):.1f}" cy="{y(e["success_rate"]):.1f}" r="4">'
            f"<title>{label}</title></circle>"
        )
    parts.append(
        f'<text x="{width - right}" y="{top + 10}" text-anchor="end" class="legend">'
        '<tspan class="train-key">&#8212; train success</tspan>  '
        '<tspan class="eval-key">&#9679; held-out success</tspan></text></svg>'
    )
    return "".join(parts)


def _script_json(value) -> str:
    """JSON safe inside a ``<script>`` element: no ``<`` at all, so nothing in it can close the element."""
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c")


def render(run: dict) -> str:
    config = run["config"]
    env = config.get("env", {})
    title = f"{run['name']}: {env.get('family', '?')} {env.get('options', {}).get('level', '')}".strip()
    episodes = run["episodes"]
    index = [
        {
            "step": r["step"],
            "success": r.get("train/success_rate"),
            "reward": r.get("train/reward_mean"),
            "turns": r.get("train/turns_mean"),
            "turn_cap": r.get("turn_cap"),
            "logged": len(episodes.get(r["step"], [])),
        }
        for r in run["rows"]
    ]
    known = {r["step"] for r in run["rows"]}
    index += [
        {"step": s, "success": None, "reward": None, "turns": None, "turn_cap": None, "logged": len(eps)}
        for s, eps in episodes.items()
        if s not in known
    ]
    index.sort(key=lambda row: row["step"])
    blocks = "\n".join(
        f'<script type="application/json" id="step-{step}">{_script_json(eps)}</script>'
        for step, eps in sorted(episodes.items())
    )
    meta = {
        "algo": config.get("algo", {}).get("name"),
        "steps": len(run["rows"]),
        "evals": [[e["step"], e["success_rate"]] for e in run["evals"]],
    }
    return (
        _PAGE.replace("__TITLE__", html.escape(title))
        .replace("__META__", html.escape(json.dumps(meta)))
        .replace("__SVG__", success_svg(run["rows"], run["evals"]))
        .replace("__INDEX__", _script_json(index))
        .replace("__BLOCKS__", blocks)
        .replace("__STEPS_PER_PAGE__", str(STEPS_PER_PAGE))
        .replace("__EPISODES_PER_PAGE__", str(EPISODES_PER_PAGE))
    )


def write_view(run_dir: str | Path, out: str | Path | None = None) -> Path:
    run = load_run(run_dir)
    path = Path(out) if out is not None else Path(run_dir) / "view.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(run), encoding="utf-8")
    return path


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 16px 24px; color: #222; }
h1 { font-size: 18px; margin: 0 0 4px; } h2 { font-size: 15px; margin: 18px 0 6px; }
#meta { color: #666; margin-bottom: 8px; }
svg text { font-size: 11px; fill: #555; } svg .grid { stroke: #e4e4e4; }
svg .train { fill: none; stroke: #1f5fa8; stroke-width: 1.5; } svg .eval { fill: #d1495b; }
svg .train-key { fill: #1f5fa8; } svg .eval-key { fill: #d1495b; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; text-align: right; border-bottom: 1px solid #eee; }
tr.pick { cursor: pointer; } tr.pick:hover { background: #eef4fb; } tr.current { background: #dbe8f7; }
.pager button { margin: 0 4px; } .pager { margin: 6px 0; }
.turn { border-left: 3px solid #9bb7d4; padding: 4px 10px; margin: 8px 0; }
.turn.invalid { border-color: #d1495b; }
pre { white-space: pre-wrap; margin: 2px 0; background: #f7f7f7; padding: 4px 6px; }
.action { color: #1f5fa8; font-weight: 600; } .ok { color: #2a7d3f; } .fail { color: #b02a37; }
</style></head>
<body>
<h1>__TITLE__</h1>
<div id="meta" data-meta="__META__"></div>
<h2>Success per step</h2>
__SVG__
<h2>Steps</h2>
<div id="steps-pager" class="pager"></div>
<table id="steps"><thead><tr><th>step</th><th>train success</th><th>reward</th><th>turns</th>
<th>turn cap</th><th>episodes logged</th></tr></thead><tbody></tbody></table>
<h2 id="episodes-title">Episodes</h2>
<div id="episodes-pager" class="pager"></div>
<table id="episodes"><thead><tr><th>#</th><th>item</th><th>group</th><th>success</th><th>reward</th><th>turns</th>
<th>end reason</th></tr></thead><tbody></tbody></table>
<div id="episode"></div>
<script type="application/json" id="steps-index">__INDEX__</script>
__BLOCKS__
<script>
"use strict";
const STEPS_PER_PAGE = __STEPS_PER_PAGE__, EPISODES_PER_PAGE = __EPISODES_PER_PAGE__;
const index = JSON.parse(document.getElementById("steps-index").textContent);
const meta = JSON.parse(document.getElementById("meta").dataset.meta);
const parsed = new Map();
let currentStep = null;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}
function fmt(v, digits) { return v === null || v === undefined ? "-" : Number(v).toFixed(digits); }
function pager(box, total, size, page, go) {
  box.replaceChildren();
  const pages = Math.max(1, Math.ceil(total / size));
  if (pages === 1) return;
  const prev = el("button", "previous"); prev.disabled = page === 0; prev.onclick = () => go(page - 1);
  const next = el("button", "next"); next.disabled = page >= pages - 1; next.onclick = () => go(page + 1);
  box.append(prev, el("span", `page ${page + 1} of ${pages}`), next);
}
function episodesOf(step) {
  if (!parsed.has(step)) {
    const block = document.getElementById(`step-${step}`);
    parsed.set(step, block ? JSON.parse(block.textContent) : []);
  }
  return parsed.get(step);
}
function showSteps(page) {
  const body = document.querySelector("#steps tbody");
  body.replaceChildren();
  for (const row of index.slice(page * STEPS_PER_PAGE, (page + 1) * STEPS_PER_PAGE)) {
    const tr = el("tr", null, row.logged ? "pick" : "");
    tr.dataset.step = row.step;
    if (row.step === currentStep) tr.classList.add("current");
    tr.append(el("td", row.step), el("td", fmt(row.success, 3)), el("td", fmt(row.reward, 3)),
              el("td", fmt(row.turns, 2)), el("td", row.turn_cap ?? "-"), el("td", row.logged));
    if (row.logged) tr.onclick = () => { currentStep = row.step; showSteps(page); showEpisodes(row.step, 0); };
    body.append(tr);
  }
  pager(document.getElementById("steps-pager"), index.length, STEPS_PER_PAGE, page, showSteps);
}
function showEpisodes(step, page) {
  const episodes = episodesOf(step);
  document.getElementById("episodes-title").textContent = `Episodes of step ${step} (${episodes.length})`;
  const body = document.querySelector("#episodes tbody");
  body.replaceChildren();
  episodes.slice(page * EPISODES_PER_PAGE, (page + 1) * EPISODES_PER_PAGE).forEach((ep, i) => {
    const number = page * EPISODES_PER_PAGE + i;
    const tr = el("tr", null, "pick");
    tr.dataset.episode = number;
    tr.append(el("td", number), el("td", ep.item_id), el("td", ep.group),
              el("td", ep.success ? "yes" : "no", ep.success ? "ok" : "fail"), el("td", fmt(ep.reward, 3)),
              el("td", ep.turns.length), el("td", ep.end_reason));
    tr.onclick = () => showEpisode(step, number);
    body.append(tr);
  });
  pager(document.getElementById("episodes-pager"), episodes.length, EPISODES_PER_PAGE, page,
        (p) => showEpisodes(step, p));
  document.getElementById("episode").replaceChildren();
}
function showEpisode(step, number) {
  const ep = episodesOf(step)[number];
  const box = document.getElementById("episode");
  box.replaceChildren(el("h2", `Step ${step}, episode ${number}: item ${ep.item_id}`));
  const facts = el("p");
  facts.append(el("span", "end reason: "), el("b", ep.end_reason, "end-reason"), el("span", ", turn cap: "),
               el("b", ep.turn_cap, "turn-cap"), el("span", `, turns: ${ep.turns.length}, reward: `),
               el("b", fmt(ep.reward, 3)), el("span", ", success: "),
               el("b", ep.success ? "yes" : "no", ep.success ? "ok" : "fail"));
  box.append(facts, el("div", "prompt"), el("pre", ep.prompt, "prompt"));
  ep.turns.forEach((turn, i) => {
    const div = el("div", null, turn.valid ? "turn" : "turn invalid");
    div.append(el("div", `turn ${i + 1} - reward ${fmt(turn.reward, 3)}${turn.valid ? "" : " - invalid action"}`),
               el("pre", turn.action, "action"), el("pre", turn.observation, "observation"));
    box.append(div);
  });
  if (ep.error) box.append(el("pre", `error: ${ep.error}`, "fail"));
  box.scrollIntoView();
}
document.getElementById("meta").textContent =
  `algorithm ${meta.algo ?? "?"}, ${meta.steps} steps, held-out evaluations: ` +
  (meta.evals.map(([s, v]) => `${v.toFixed(3)} @ ${s}`).join(", ") || "none");
showSteps(0);
</script>
</body></html>
"""
