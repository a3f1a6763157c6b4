"""How many threads a tree search may use in this process.

Ray gives a `num_cpus=1` task OMP_NUM_THREADS=1; scipy's `workers=-1` would ignore that and run
N threads in each of N tasks. Honour the process's thread budget when one is set.
"""

from __future__ import annotations

import os


def tree_workers() -> int:
    """scipy cKDTree `workers`: OMP_NUM_THREADS when set, else every core (-1)."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return -1
    return n if n > 0 else -1


def thread_budget() -> int:
    """Threads this process may keep busy: OMP_NUM_THREADS when set, else every core."""
    n = tree_workers()
    return n if n > 0 else (os.cpu_count() or 1)
