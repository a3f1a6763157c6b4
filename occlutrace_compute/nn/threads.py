"""How many threads this process may keep busy, and `cpu_threads` to cap torch and the BLAS.

Ray gives a `num_cpus=1` task OMP_NUM_THREADS=1; the kd-trees (pykdtree's OpenMP) follow it by
themselves, and our own thread pools (side-by-side sampling) ask here, so N tasks on N cores do
not each run N threads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from threadpoolctl import threadpool_limits


def thread_budget() -> int:
    """OMP_NUM_THREADS when set to a positive number, else every core."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        n = 0
    return n if n > 0 else (os.cpu_count() or 1)


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run torch's and the BLAS's CPU ops on `n` threads (None or 0: leave them), restoring the
    process settings afterwards. The registration engines' per-iteration tensors are small, where
    fork/join costs more than it saves; and a BLAS thread left spinning after numpy's one matrix
    product doubled the sampling and hypothesis stages' time on 2 cores, so both are capped."""
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)
