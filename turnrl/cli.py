"""Command line: ``turnrl train | eval | view | serve-env | env-worker | bench rollout``.

Invariant: a bad value on the command line (unknown env or algorithm, negative
steps, a model path that is not a model directory, a malformed option) prints one
line ``turnrl: error: ...`` to stderr and exits with status 2, before any work
starts and without a traceback.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import click
import typer

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Multi-turn RL for LLM agents."
)


class UsageFailure(Exception):
    """A bad command-line value: reported in one line, exit status 2."""


def _fail(message: str) -> None:
    raise UsageFailure(message)


@app.callback()
def _root() -> None:
    """turnrl: train LLM agents with multi-turn reinforcement learning."""


@app.command("serve-env")
def serve_env(
    family: str = typer.Argument(..., help="Environment family to serve (babyai, textcraft, sciworld, search, web)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback unless told otherwise)."),
    port: int = typer.Option(8000, help="TCP port."),
    max_envs: int = typer.Option(256, help="Most live envs at once; /create beyond it answers 429."),
    idle_timeout: float = typer.Option(
        3600.0, help="Seconds after which an unused env is closed (longer than AgentGym-RL's 2400 s client timeout)."
    ),
    dialect: str | None = typer.Option(
        None,
        help="AgentGym dialect to speak (default: the family's own; agentgym, babyai, textcraft, sciworld, "
        "searchqa, webarena).",
    ),
    measure_memory: bool = typer.Option(True, help="Build two envs at start and print the memory one env costs."),
) -> None:
    """Serve one env family over AgentGym's HTTP protocol (/create, /reset, /step, /observation, /close), in that
    family's AgentGym dialect."""
    from turnrl.envs.http.capacity import measure_env_memory
    from turnrl.envs.http.server import build_app

    try:
        if not 0 < port < 65536:
            raise ValueError(f"--port must be in [1, 65535], got {port}")
        app_ = build_app(family, max_envs=max_envs, idle_timeout_s=idle_timeout, dialect=dialect)
    except ValueError as exc:
        _fail(str(exc))

    import uvicorn

    print(
        f"turnrl: serving {family} on http://{host}:{port} in the {app_.state.dialect.name} dialect "
        f"(max {max_envs} envs, idle timeout {idle_timeout:g} s)",
        file=sys.stderr,
        flush=True,
    )
    if measure_memory:
        memory = measure_env_memory(app_.state.pool.factory)
        print(f"turnrl: {memory.line(max_envs)}", file=sys.stderr, flush=True)
    uvicorn.run(app_, host=host, port=port, log_level="warning")


@app.command("env-worker")
def env_worker(
    bind: str = typer.Option("tcp://127.0.0.1:5555", help="tcp://HOST:PORT to listen on (PORT * picks a free one)."),
    threads: int = typer.Option(64, help="Threads for blocking env code."),
    heartbeat_s: float = typer.Option(0.2, help="Seconds between heartbeats."),
    plugin: Annotated[list[str] | None, typer.Option(help="Module to import first (registers env families).")] = None,
) -> None:
    """Serve env instances to a remote pool over ZeroMQ (config: env_workers.remote = ["tcp://HOST:PORT"])."""
    import asyncio
    import importlib

    from turnrl.envs.zmq.worker import check_bind_endpoint, serve

    try:
        check_bind_endpoint(bind)
        if threads < 1 or not heartbeat_s > 0:
            raise ValueError("--threads must be >= 1 and --heartbeat-s > 0")
    except ValueError as exc:
        _fail(str(exc))
    for module in plugin or []:
        importlib.import_module(module)
    asyncio.run(serve(bind, f"worker-{bind}", threads, heartbeat_s, bind=True))


def _saved_config(out: str | None, steps: int | None):
    """The run's own saved config (validated like any config file), with --steps if given."""
    import json

    import msgspec

    from turnrl.config.toml_file import build

    if out is None:
        raise ValueError("--resume needs --out (the run directory to continue)")
    path = Path(out) / "config.json"
    if not path.is_file():
        raise ValueError(f"nothing to resume: {str(path)!r} does not exist")
    try:
        config = build(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: not a turnrl run config ({exc})") from None
    return msgspec.structs.replace(config, out=out, steps=config.steps if steps is None else steps)


def _file_config(path: str, overrides: list[str], *, steps: int | None, seed: int, out: str | None):
    """A TOML config with its overrides; --steps, a non-zero --seed and --out win over the file."""
    import msgspec

    from turnrl.config.toml_file import load

    config = load(path, overrides)
    changes = {"steps": steps, "seed": seed or None, "out": out}
    return msgspec.structs.replace(config, **{k: v for k, v in changes.items() if v is not None})


def _default_out(env: str) -> str:
    return str(Path("runs") / f"{env}-{time.strftime('%Y%m%d-%H%M%S')}")


@app.command()
def train(
    env: str = typer.Option("babyai", help="Environment family."),
    algo: str = typer.Option("grpo", help="Algorithm (advantage estimator)."),
    model: str | None = typer.Option(
        None, help="Local Hugging Face model directory (default: build the embedded tiny model with a format warm-up)."
    ),
    steps: int | None = typer.Option(None, help="RL steps (default: the env's demo length)."),
    seed: int = typer.Option(0, help="Random seed."),
    out: str | None = typer.Option(None, help="Run directory (default: runs/ENV-TIMESTAMP)."),
    level: str | None = typer.Option(
        None, help="BabyAI level (default GoToLocal); search: the hops, 1-4 or mix (default 1)."
    ),
    curriculum: str = typer.Option("fixed", help="Turn-cap curriculum: fixed, scaling_inter or adaptive."),
    curriculum_caps: str | None = typer.Option(None, help="Comma-separated turn caps (default: the env's)."),
    curriculum_scale: float = typer.Option(1.0, help="Multiplies the steps per curriculum stage."),
    generator: str = typer.Option(
        "local",
        help="Where generations come from: local (in process), service (a "
        "GenerationService process over ZeroMQ) or sglang.",
    ),
    sglang_urls: str | None = typer.Option(
        None, help="Comma-separated SGLang server base URLs (with --generator sglang)."
    ),
    resume: bool = typer.Option(
        False,
        help="Continue the run in --out from its latest checkpoint (its saved config is used; --steps may extend it).",
    ),
    config_file: str | None = typer.Option(
        None, "--config", help="A TOML run config (see examples/); --steps, --seed and --out still apply."
    ),
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override one config key, e.g. --set algo.learner.clip_high=0.28 (repeatable)."),
    ] = None,
) -> None:
    """Train a policy with multi-turn RL and evaluate it on held-out tasks."""
    import msgspec

    from turnrl.algorithms import get_advantage_estimator
    from turnrl.cli_progress import RichReporter
    from turnrl.config.curriculum import CurriculumConfig
    from turnrl.config.generation import GeneratorConfig
    from turnrl.config.toml_file import load as config_file_load
    from turnrl.engine.training.loop import Trainer
    from turnrl.envs import get_env_spec
    from turnrl.models import check_model_dir
    from turnrl.recipes import demo_config

    try:
        get_env_spec(env)
        get_advantage_estimator(algo)
        if model is not None:
            check_model_dir(model)
        if steps is not None and steps < 0:
            raise ValueError(f"--steps must be >= 0, got {steps}")
        caps = _parse_caps(curriculum_caps) if curriculum_caps else ()
        if resume:
            if config_file is not None or set_:
                raise ValueError("--resume continues with the run's saved config; --config and --set do not apply")
            config = _saved_config(out, steps)
        elif config_file is not None:
            flags = {
                "--env": env != "babyai",
                "--algo": algo != "grpo",
                "--model": model is not None,
                "--level": level is not None,
                "--curriculum": curriculum != "fixed",
                "--curriculum-caps": curriculum_caps is not None,
                "--curriculum-scale": curriculum_scale != 1.0,
                "--generator": generator != "local",
                "--sglang-urls": sglang_urls is not None,
            }
            if any(flags.values()):
                given = ", ".join(name for name, on in flags.items() if on)
                raise ValueError(
                    f"{given} cannot be combined with --config: set the key in the file or with --set "
                    "(e.g. --set env.family=textcraft)"
                )
            config = _file_config(config_file, set_ or [], steps=steps, seed=seed, out=out)
        else:
            config = demo_config(
                env,
                algo=algo,
                model=model,
                steps=steps,
                seed=seed,
                out=out or _default_out(env),
                level=level,
                curriculum=CurriculumConfig(kind=curriculum, caps=caps, scale=curriculum_scale),
            )
            serving = GeneratorConfig(kind=generator, urls=tuple(u for u in (sglang_urls or "").split(",") if u))
            config = msgspec.structs.replace(config, rollout=msgspec.structs.replace(config.rollout, generator=serving))
            if set_:
                config = config_file_load(None, set_, base=config)
        if config.model.path is not None:
            check_model_dir(config.model.path)
        reporter = RichReporter()
        trainer = Trainer(config, reporter, resume=resume)  # builds a probe env: bad env options fail here
    except ValueError as exc:
        _fail(str(exc))

    with reporter:
        summary = trainer.run()
    reporter.console.print(
        f"[bold]done[/bold] in {summary['wall_seconds']:.0f} s: held-out success "
        f"{summary['initial_success']:.3f} -> {summary['final_success']:.3f} on {summary['heldout_tasks']} tasks "
        f"(turn cap {summary['eval_turn_cap']}); outputs in {config.out}"
    )


@app.command("eval")
def eval_(
    model: str | None = typer.Option(
        None,
        help="A model directory, or a run directory (its latest checkpoint); with --split agentgym it may be "
        "left out (each family's embedded default model, built from its own text).",
    ),
    env: str | None = typer.Option(
        None,
        help="Environment family (default: the run's, else babyai; with --split agentgym: every family, or a list).",
    ),
    split: str = typer.Option(
        "test", help="Task split: test, train, or agentgym (the AgentGym-RL paper's evaluation sets, every family)."
    ),
    k: int = typer.Option(1, "-k", help="Avg@k / Pass@k."),
    n: int | None = typer.Option(None, "-n", help="Sampled episodes per task, n >= k (default: k)."),
    tasks: int | None = typer.Option(None, help="Evaluate the first N tasks of the split (default: all)."),
    turn_cap: int | None = typer.Option(None, help="Turn cap (default: the run's eval cap, else the env's)."),
    temperature: float = typer.Option(1.0, help="Sampling temperature."),
    decoding: str = typer.Option(
        "auto",
        help="auto (a run's own decoding; free text for a model directory), constrained (valid actions only) or free.",
    ),
    level: str | None = typer.Option(
        None, help="BabyAI level (default: the run's, else GoToLocal; 'all': AgentGym's 40 levels)."
    ),
    seed: int = typer.Option(0, help="Sampling seed."),
    device: str = typer.Option("auto", help="auto (cuda when available), cpu or cuda."),
    warmup_episodes: int = typer.Option(
        32, help="With --split agentgym and no --model: random-action episodes of each embedded model's warm-up."
    ),
    json_path: str | None = typer.Option(None, "--json", help="Write the report (with every episode) as JSON."),
    markdown: str | None = typer.Option(None, help="Write the markdown table here (default: beside --json)."),
) -> None:
    """Evaluate a model: k sampled episodes per task, Avg@k and Pass@k per task category and overall; with
    --split agentgym, every family on the paper's evaluation sets beside the paper's figures."""
    import json

    from turnrl.config.eval import EvalAtKConfig
    from turnrl.envs import get_env_spec

    try:
        if split == "agentgym":
            from turnrl.engine.eval.paper import PAPER

            families = list(PAPER) if env is None else [f.strip() for f in env.split(",") if f.strip()]
            for family in families:
                get_env_spec(family)
                if family not in PAPER:
                    raise ValueError(f"{family!r} has no AgentGym evaluation set; choose from: {', '.join(PAPER)}")
            if warmup_episodes < 1:
                raise ValueError(f"--warmup-episodes must be >= 1, got {warmup_episodes}")
        elif model is None:
            raise ValueError("--model is required (it may be left out only with --split agentgym)")
        cfg = EvalAtKConfig(
            model=model or "",
            env=env if split != "agentgym" else families[0],
            split=split,
            k=k,
            n=n,
            tasks=tasks,
            turn_cap=turn_cap,
            temperature=temperature,
            decoding=decoding,
            seed=seed,
            options={"level": level} if level is not None else {},
            device=device,
        )
        if split != "agentgym":
            from turnrl.engine.eval.at_k import plan_eval

            plan = plan_eval(cfg)
        elif model is not None:
            from turnrl.engine.eval.at_k import resolve_model

            resolve_model(model)
    except ValueError as exc:
        _fail(str(exc))

    if split == "agentgym":
        text, report = _eval_agentgym(cfg, families, warmup_episodes, json_path)
    else:
        from turnrl.engine.eval.at_k import evaluate_at_k
        from turnrl.engine.eval.pass_at_k import markdown_table

        report = evaluate_at_k(plan)
        table = markdown_table(report["table"], report["k"])
        header = (
            f"{report['env']} {report['split']}: {report['tasks']} tasks x {report['n']} samples, "
            f"T={report['temperature']:g}, turn cap {report['turn_cap']}, {report['decoding']}\n\n"
        )
        text = header + table
    print(text, end="")
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2, sort_keys=True))
        markdown = markdown or str(Path(json_path).with_suffix(".md"))
    if markdown is not None:
        Path(markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown).write_text(text)


def _eval_agentgym(cfg, families: list[str], warmup_episodes: int, json_path: str | None) -> tuple[str, dict]:
    """Every family on its agentgym split; (the table with its header, the per-family reports)."""
    import tempfile

    from turnrl.agentgym_eval import run_agentgym_eval
    from turnrl.engine.eval.paper import paper_table

    def announce(family: str) -> None:
        print(f"turnrl: evaluating {family} on its agentgym split", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="turnrl-agentgym-") as scratch:
        workdir = Path(json_path).with_suffix("") if json_path else Path(scratch)
        reports = run_agentgym_eval(cfg, families, workdir, warmup_episodes, on_family=announce)
    model = cfg.model or f"the embedded default model of each family ({warmup_episodes} warm-up episodes)"
    header = (
        f"agentgym evaluation sets: {model}; {cfg.samples} samples per task, k={cfg.k}, T={cfg.temperature:g}"
        + (f", first {cfg.tasks} tasks per family" if cfg.tasks else "")
        + "\n\n"
    )
    return header + paper_table(reports), reports


bench_app = typer.Typer(no_args_is_help=True, help="Measure rollout throughput on your own setup.")
app.add_typer(bench_app, name="bench")


def _env_options(items: list[str]) -> dict[str, str]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--env-option must be KEY=VALUE, got {item!r}")
        options[key] = value
    return options


@bench_app.command("rollout")
def bench_rollout(
    env: str | None = typer.Option(None, help="A registered env family (babyai, textcraft, ...)."),
    env_url: str | None = typer.Option(None, help="Or the base URL of an AgentGym-style env server."),
    env_protocol: str = typer.Option("agentgym", help="The remote server's protocol (agentgym, searchqa, ...)."),
    env_option: Annotated[
        list[str] | None, typer.Option("--env-option", help="KEY=VALUE option of the family (repeatable).")
    ] = None,
    env_workers: int = typer.Option(0, help="Run the family's envs in this many EnvWorker processes (0: in process)."),
    generator: str = typer.Option("local", help="local (in process), service (a GenerationService process) or sglang."),
    sglang_urls: str | None = typer.Option(None, help="Comma-separated SGLang server base URLs (--generator sglang)."),
    model: str | None = typer.Option(None, help="A local HF model directory (default: the embedded tiny model)."),
    episodes: int | None = typer.Option(None, help="Episodes per mode (default 64; --quick 8)."),
    concurrency: int | None = typer.Option(None, help="Episodes at once: async slots, lock-step batch (default 16)."),
    max_turns: int | None = typer.Option(None, help="Turn cap (default: the env's)."),
    max_new_tokens: int = typer.Option(32, help="Tokens per reply at most."),
    time_limit: float | None = typer.Option(None, help="Seconds per mode; a mode cut short reports what it did."),
    repeats: int = typer.Option(1, help="Rounds of every mode, interleaved; each mode reports its median round."),
    workload: str | None = typer.Option(
        None, help="A fixed published workload instead of --env: agentic, agentic-overhead or agentic-scale."
    ),
    time_scale: float | None = typer.Option(None, help="--workload: shrink every latency (default 0.25; quick 0.05)."),
    quick: bool = typer.Option(
        False, help="A small run: 8 episodes, 8 at once, turn cap 4 (--workload: its quick size)."
    ),
    seed: int = typer.Option(0, help="Sampling seed."),
    json_path: str | None = typer.Option(None, "--json", help="Write the result as JSON."),
    png: str | None = typer.Option(None, help="Write throughput and episodes in flight over time as a PNG."),
) -> None:
    """Run the same tasks async and in lock-step; print env steps/s, tokens/s, generator busy share, running batch
    and turn latency (generation and env), and the async / lock-step ratio."""
    import asyncio

    from turnrl.bench.report import table, write_json, write_png
    from turnrl.bench.run import run_plan

    try:
        if workload is not None:
            from turnrl.bench.presets import preset_plan

            given = {
                "--env": env,
                "--env-url": env_url,
                "--env-option": env_option,
                "--env-workers": env_workers or None,
                "--generator": None if generator == "local" else generator,
                "--sglang-urls": sglang_urls,
                "--model": model,
                "--episodes": episodes,
                "--concurrency": concurrency,
                "--max-turns": max_turns,
            }
            clash = [flag for flag, value in given.items() if value]
            if clash:
                raise ValueError(f"--workload fixes the env, generator and sizes; {', '.join(clash)} do not apply")
            if repeats < 1:
                raise ValueError(f"--repeats must be >= 1, got {repeats}")
            plan = preset_plan(workload, quick=quick, time_scale=time_scale, time_limit_s=time_limit, repeats=repeats)
        else:
            from turnrl.bench.setup import build_plan
            from turnrl.config.bench import RolloutBenchConfig

            if time_scale is not None:
                raise ValueError("--time-scale applies only with --workload")
            config = RolloutBenchConfig(
                env=env,
                env_url=env_url,
                env_protocol=env_protocol,
                env_options=_env_options(env_option or []),
                env_workers=env_workers,
                generator=generator,
                sglang_urls=tuple(u for u in (sglang_urls or "").split(",") if u),
                model=model,
                episodes=episodes if episodes is not None else (8 if quick else 64),
                concurrency=concurrency if concurrency is not None else (8 if quick else 16),
                max_turns=max_turns if max_turns is not None else (4 if quick else None),
                max_new_tokens=max_new_tokens,
                time_limit_s=time_limit,
                repeats=repeats,
                seed=seed,
            )
            plan = build_plan(config)
    except ValueError as exc:
        _fail(str(exc))

    result = asyncio.run(run_plan(plan))
    print(table(result), flush=True)
    if json_path is not None:
        print(f"turnrl: wrote {write_json(result, json_path)}", file=sys.stderr)
    if png is not None:
        print(f"turnrl: wrote {write_png(result, png)}", file=sys.stderr)


@app.command()
def view(
    run_dir: str = typer.Argument(..., help="A run directory (metrics.jsonl, trajectories/)."),
    out: str | None = typer.Option(None, help="HTML file to write (default: RUN_DIR/view.html)."),
) -> None:
    """Write a static HTML report of a run: the success curve and every logged episode, turn by turn."""
    from turnrl.viewer import write_view

    try:
        path = write_view(run_dir, out)
    except ValueError as exc:
        _fail(str(exc))
    print(f"turnrl: wrote {path}", file=sys.stderr)


def _parse_caps(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--curriculum-caps must be comma-separated integers, got {text!r}") from None


def _usage_error_types() -> tuple[type[Exception], ...]:
    """Click's UsageError, whether typer uses click itself or its vendored copy."""
    found = {cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "UsageError"}
    found.add(click.exceptions.UsageError)
    return tuple(found)


def main(argv: list[str] | None = None) -> int:
    try:
        result = app(args=argv, standalone_mode=False)
    except UsageFailure as exc:
        print(f"turnrl: error: {exc}", file=sys.stderr)
        return 2
    except _usage_error_types() as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            print(exc.format_message(), file=sys.stderr)
            return 2
        print(f"turnrl: error: {exc.format_message()}", file=sys.stderr)
        return 2
    except typer.Abort:
        print("turnrl: aborted", file=sys.stderr)
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
