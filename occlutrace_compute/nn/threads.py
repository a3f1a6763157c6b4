"""How many threads this process may keep busy.

Ray gives a `num_cpus=1` task OMP_NUM_THREADS=1; the kd-trees (pykdtree's OpenMP) follow it by
themselves, and our own thread pools (side-by-side sampling) ask here, so N tasks on N cores do
not each run N threads.
"""

from __future__ import annotations

import os


def thread_budget() -> int:
    """OMP_NUM_THREADS when set to a positive number, else every core."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        n = 0
    return n if n > 0 else (os.cpu_count() or 1)
