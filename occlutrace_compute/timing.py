"""Stage timing: `with stopwatch(stages, "coarse"): ...` adds the block's wall time to
`stages["coarse"]`, so a stage's timing cannot drift from the code it times."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stopwatch(stages: dict[str, float], name: str) -> Iterator[None]:
    """Adds the block's wall time (seconds) to `stages[name]`, starting from 0: a stage timed
    twice (the mid level again in a local search round) sums. Recorded when the block raises too."""
    start = time.perf_counter()
    try:
        yield
    finally:
        stages[name] = stages.get(name, 0.0) + time.perf_counter() - start
