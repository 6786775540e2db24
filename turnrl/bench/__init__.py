"""``turnrl bench``: rollout throughput on the user's own setup, async against lock-step on the same tasks.

- ``latency_model``: the fixed agentic workload (a waiting env, a continuous-batching generator in real time)
- ``probe``: timing wrappers around the generator, the envs and their pool
- ``run``: ``BenchPlan``, ``run_mode``, ``run_plan`` (both modes, one result dict)
- ``setup``: a plan from ``RolloutBenchConfig`` (registered family or remote server, any generator)
- ``presets``: the published workloads (``--workload agentic`` ...)
- ``report``: the table, the JSON and the PNG

Invariant: imports only rooms below it (engine, envs, models, config); the command line and ``bench/rollout.py``
are thin callers of ``run_plan``, so the published figures and the command are one thing.
"""
