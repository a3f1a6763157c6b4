"""Stage timing: `with stopwatch(stages, "coarse"): ...` adds the block's wall time to
`stages["coarse"]` (and, given `cpu`, the process's CPU seconds, all threads, to `cpu["coarse"]`),
so a stage's timing cannot drift from the code it times."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stopwatch(stages: dict[str, float], name: str, cpu: dict[str, float] | None = None) -> Iterator[None]:
    """Adds the block's wall time (seconds) to `stages[name]`, starting from 0: a stage timed
    twice (the mid level again in a local search round) sums. Recorded when the block raises too.
    `cpu`, if given, gets the process CPU seconds of the block the same way (benchmarks)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        stages[name] = stages.get(name, 0.0) + time.perf_counter() - start
        if cpu is not None:
            cpu[name] = cpu.get(name, 0.0) + time.process_time() - start_cpu
