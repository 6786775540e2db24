"""Benchmark results on disk: any benchmark's JSON (written, or merged from parts run separately), and a rollout
benchmark's table and PNG (throughput and episodes in flight over time).

Invariant: reads result dicts only (``table`` and ``write_png`` the one of ``run_plan``); writes nothing but the
paths it is given.
"""

from __future__ import annotations

import json
from pathlib import Path


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:.0f}"


def table(result: dict) -> str:
    c = result["config"]
    title = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in c.items() if v is not None)
    lines = [
        f"rollout benchmark: {result['workload']} ({title})",
        f"{'mode':<14}{'wall s':>8}{'steps/s':>10}{'tokens/s':>10}{'busy':>6}{'batch':>7}"
        f"{'turn p50/p99 ms':>17}{'gen p50/p99 ms':>16}{'env p50/p99 ms':>16}{'peak':>6}",
    ]
    for mode, r in result["modes"].items():
        turn, gen, env = r["turn_latency_s"], r["generation_s"], r["env_s"]
        lines.append(
            f"{mode:<14}{r['wall_s']:>8.1f}{r['env_steps_per_s']:>10.1f}{r['tokens_per_s']:>10.0f}"
            f"{r['generator_busy_share']:>6.2f}{r['running_batch']:>7.1f}"
            f"{_ms(turn['p50']) + '/' + _ms(turn['p99']):>17}{_ms(gen['p50']) + '/' + _ms(gen['p99']):>16}"
            f"{_ms(env['p50']) + '/' + _ms(env['p99']):>16}{r['max_in_flight']:>6}"
            + ("  (time limit: cut short)" if r["truncated"] else "")
        )
    if result.get("async_over_lockstep") is not None:
        lines.append(f"async / lock-step (env steps/s): {result['async_over_lockstep']:.2f}")
    return "\n".join(lines)


def write_json(result: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=True))
    return path


def merge_parts(paths: list[Path], same: tuple[str, ...], section: str) -> dict:
    """One result from several JSON results of one benchmark run in disjoint parts (e.g. side by side).

    Every part must agree on the keys ``same``; the entries of ``section`` (a dict in each part) are joined in
    the order of ``paths``, and an entry found in two parts is refused.
    """
    parts = [json.loads(Path(p).read_text()) for p in paths]
    for part, path in zip(parts[1:], paths[1:], strict=True):
        if any(part[k] != parts[0][k] for k in same):
            raise ValueError(f"{path} is a different run ({', '.join(f'{k}={part[k]}' for k in same)})")
    merged = {k: parts[0][k] for k in same} | {section: {}}
    for part, path in zip(parts, paths, strict=True):
        for name, entry in part[section].items():
            if name in merged[section]:
                raise ValueError(f"{path}: {name!r} is in two of the files ({section})")
            merged[section][name] = entry
    return merged


def write_png(result: dict, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for mode, r in result["modes"].items():
        line = r["timeline"]
        top.plot(line["t_s"], line["env_steps_per_s"], label=mode)
        bottom.step(line["t_s"], line["in_flight"], where="post", label=mode)
    top.set_ylabel("env steps / s")
    top.set_title(f"rollout benchmark: {result['workload']}")
    top.legend()
    bottom.set_ylabel("episodes in flight")
    bottom.set_xlabel("seconds since the mode started")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
