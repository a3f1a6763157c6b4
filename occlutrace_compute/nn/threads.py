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
from threadpoolctl import ThreadpoolController


def thread_budget() -> int:
    """OMP_NUM_THREADS when set to a positive number, else every core."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        n = 0
    return n if n > 0 else (os.cpu_count() or 1)


_CONTROLLER: ThreadpoolController | None = None


def _pools() -> ThreadpoolController:
    """One scan of the loaded thread-pool libraries, made at the first cap: `threadpool_limits`
    scans them on every call (~0.7 ms; every registration pays it). The BLAS and the OpenMP
    runtimes (torch's, pykdtree's) are loaded by the time anything here is capped (their modules
    import them at the top), and the controller reads their current settings on every use."""
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


@contextmanager
def cpu_threads(n: int | None, tree_threads: int | None = None) -> Iterator[None]:
    """Run torch's and the BLAS's CPU ops on `n` threads (None or 0: leave them), restoring the
    process settings afterwards. The registration engines' per-iteration tensors are small, where
    fork/join costs more than it saves; and a BLAS thread left spinning after numpy's one matrix
    product doubled the sampling and hypothesis stages' time on 2 cores, so both are capped.

    `tree_threads` (None or 0: leave them) also caps the OpenMP runtimes, pykdtree's queries
    among them, for this thread only (OpenMP's setting is per calling thread): in a pair job the
    reference's distance index builds on the other core, and an OpenMP team waiting for a busy
    core spins (CPU lost) and stalls the query (bench/RESULTS.md, register stage)."""
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    limits = {"blas": n} | ({"openmp": tree_threads} if tree_threads else {})
    try:
        with _pools().limit(limits=limits):
            if tree_threads:
                # the OpenMP cap reached torch's own runtime too (torch would run on tree_threads):
                # torch keeps n (its libgomp is not pykdtree's copy; the exit restores both)
                torch.set_num_threads(n)
            yield
    finally:
        torch.set_num_threads(before)
