"""The fixed agentic workload now lives in the package (``turnrl.bench.latency_model``); this name stays for
scripts and tests that import it from a source checkout."""

from turnrl.bench.latency_model import LatencyModelGenerator, SyntheticEnv, Workload, WorkloadConfig

__all__ = ["LatencyModelGenerator", "SyntheticEnv", "Workload", "WorkloadConfig"]
