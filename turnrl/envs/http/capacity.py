"""What one more live env costs a server: resident memory, measured by building and resetting envs.

Invariant: ``measure_env_memory`` builds two envs with the server's own factory and resets each on one
item; the first pays the process's one-time costs (imports, recipe book, search index, browser), the second
is what each further env adds: the Python heap it holds (``tracemalloc``, numpy arrays included) plus the
growth of the memory of this process's children (SciWorld's JVMs, Chromium; proportional set size, so
pages they share count once). Both envs are closed
before it returns, also on failure. It is a measurement, not a limit: ``--max-envs`` times it is what a full
server holds.
"""

from __future__ import annotations

import contextlib
import gc
import os
import tracemalloc
from collections.abc import Callable

import msgspec
import psutil

from turnrl.envs.base import BlockingEnv


class EnvMemory(msgspec.Struct, frozen=True):
    family_rss_mb: float  # the server process and its children after the first env (one-time costs paid)
    per_env_mb: float  # what the second env added

    def line(self, max_envs: int) -> str:
        full = self.family_rss_mb + self.per_env_mb * (max_envs - 1)
        return (
            f"memory: {self.per_env_mb:.2f} MB per live env (measured at start), {self.family_rss_mb:.0f} MB "
            f"with one env; about {full / 1024:.1f} GB with {max_envs} live envs"
        )


def tree_rss_bytes(pid: int | None = None, children_only: bool = False) -> int:
    """Memory of a process and all its descendants (or of the descendants alone): the proportional set size
    where the system reports it (pages shared between processes, e.g. Chromium's, counted once overall),
    else the resident set."""
    root = psutil.Process(pid or os.getpid())
    total = 0
    for process in [*([] if children_only else [root]), *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += getattr(process.memory_full_info(), "pss", None) or process.memory_info().rss
    return total


def measure_env_memory(factory: Callable[[], BlockingEnv], item_id: int = 0) -> EnvMemory:
    envs: list[BlockingEnv] = []
    try:
        envs.append(factory())
        envs[0].reset_sync(item_id)
        gc.collect()
        before, children_before = tree_rss_bytes(), tree_rss_bytes(children_only=True)
        tracemalloc.start()
        try:
            envs.append(factory())
            envs[1].reset_sync(item_id)
            gc.collect()
            heap, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        children = tree_rss_bytes(children_only=True) - children_before
    finally:
        for env in envs:
            with contextlib.suppress(Exception):
                env.close_sync()
    return EnvMemory(family_rss_mb=before / 2**20, per_env_mb=(heap + max(children, 0)) / 2**20)
