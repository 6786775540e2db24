"""One ScienceWorld simulator in its own JVM, with a bounded heap.

Invariant: the JVM is started with ``-Xmx<heap_mb>m`` and the serial collector
(about a quarter of the default footprint), dies with the Python process that
started it, and ``close()`` stops it and reaps it (safe to call twice).

Determinism: the simulator keeps objects in hash-ordered collections keyed by
identity hash codes, which HotSpot draws from a per-thread generator whose state
depends on everything allocated before; so one item's room contents, listed
actions and gold path changed with what the JVM had loaded earlier. The JVM runs
with ``-XX:hashCode=2`` (every identity hash code is the same constant), which
makes those collections iterate in insertion order: a pure function of the item.
The simulator also draws from Scala's one global random generator (seeded by
``load``) on every step and every action listing (the names it gives ambiguous
objects), so a listing changed the steps after it; ``reseed`` sets that
generator, and the env reseeds it before each call from the item and the move
count.
"""

from __future__ import annotations

import subprocess

DEFAULT_HEAP_MB = 400
# identity hash codes that do not depend on the JVM's history (see the module docstring)
DETERMINISTIC_HASHES = ("-XX:+UnlockExperimentalVMOptions", "-XX:hashCode=2")


class SimulatorProcess:
    """The JVM and the py4j handle of its ``PythonInterface`` (the simulator's API)."""

    def __init__(self, heap_mb: int = DEFAULT_HEAP_MB) -> None:
        if heap_mb < 128:
            raise ValueError(f"heap_mb must be >= 128, got {heap_mb}")
        from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway
        from scienceworld.constants import BASEPATH, JAR_PATH

        port, self._process = launch_gateway(
            classpath=JAR_PATH,
            die_on_exit=True,
            cwd=BASEPATH,
            return_proc=True,
            javaopts=[f"-Xmx{heap_mb}m", "-XX:+UseSerialGC", *DETERMINISTIC_HASHES],
        )
        self._gateway = JavaGateway(
            gateway_parameters=GatewayParameters(auto_field=True, port=port), java_process=self._process
        )
        self.api = self._gateway.jvm.scienceworld.runtime.pythonapi.PythonInterface()
        self.pid = self._process.pid
        self._random = None

    def reseed(self, seed: int) -> None:
        """Set the simulator's global random generator (Scala's ``Random``) to ``seed``."""
        if self._random is None:
            self._random = getattr(getattr(self._gateway.jvm.scala.util, "Random$"), "MODULE$")
        self._random.setSeed(int(seed))

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def close(self) -> None:
        if self._process is None:
            return
        process, self._process = self._process, None
        try:
            self._gateway.shutdown()
            if process.poll() is None:  # the JVM leaves when it reads a line on stdin
                process.stdin.write(b"\n")
                process.stdin.flush()
            process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
        finally:
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
