"""glibc's heap kept for the next array instead of handed back to the kernel after each one.

Why: a job makes hundreds of short-lived (N,) and (F,) numpy temporaries of 1-20 MB. glibc serves
each block above its mmap threshold (128 kB at start, raised by itself only up to the largest
block freed so far) with a fresh mmap, and trims the heap's top as soon as 2x that threshold lies
free: either way the next array's pages are faulted in again, zero-filled by the kernel. On a
150k-vertex pair job that was ~0.15-0.2 s of system CPU of ~2 s (100k page faults; bench/RESULTS.md,
fifth session). With blocks up to 32 MB (glibc's ceiling for the threshold) taken from the heap, a
trim only past 256 MB free and the heap grown 64 MB at a time, the same job faults ~10k pages.

Threads share one malloc arena per core (M_ARENA_MAX; glibc's default is 8 per core), so the
freed heap one of a job's short-lived threads kept serves the next thread instead of each arena
keeping its own.

Cost, measured on 8 pair jobs of 150k vertices in one process (bench/RESULTS.md, fifth session):
resident size between jobs 600-710 MiB instead of 440-510 MiB (the freed heap kept), peak
1104-1136 instead of 1054 MiB (+5-8 %; +20 % without the arena cap); system CPU per job
0.01-0.05 s instead of 0.13-0.18 s. Applied once per process (`keep_heap()`), glibc only
(elsewhere, and with OCCLUTRACE_KEEP_HEAP=0, nothing changes). Settings already made through
MALLOC_* environment variables are left alone.

The bound (`held_heap`, entered by every job through pipeline.one_blas_thread): once no job of
this process has run for IDLE_S (1 s; OCCLUTRACE_HEAP_IDLE_S, 0 = as soon as the last job ends),
glibc's `malloc_trim(0)` hands the freed heap back to the kernel: the free top of the main heap
and every free page inside all arenas. So a long-lived process (a Ray worker, `batch`, `serve`)
keeps at most its largest job's freed heap (<= that job's peak) while jobs follow each other
within IDLE_S, and less than glibc's defaults keep once idle. Not handed back: what is live, and
the free top of each thread arena's last heap (< 64 MB each; glibc's malloc_trim shrinks only
the main heap's top). Measured, 8 pair jobs of 150k vertices in one process, two runs
(bench/bench_heap.py; bench/RESULTS.md, sixth session): resident after each idle second 358-373
MiB, against 634-857 MiB kept without the bound and 435-612 MiB on glibc's defaults; peak
840-900 MiB (without the bound 846-857). Cost: jobs back to back within IDLE_S pay nothing (0.005-
0.015 s of system CPU per job; trimming as each job ends instead made the next one fault its heap
in again: 0.09-0.11 s); the first job after an idle period faults its heap in again (0.12-0.16 s
of system CPU, as on glibc's defaults). The trim itself runs on one daemon thread, outside every
job's stages: ~1 ms per 100 MB handed back, ~10 us with nothing to hand back, and never where
keep_heap set nothing (not glibc, OCCLUTRACE_KEEP_HEAP=0, all set by the operator's MALLOC_*).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

DISABLE_ENV = "OCCLUTRACE_KEEP_HEAP"
IDLE_ENV = "OCCLUTRACE_HEAP_IDLE_S"
IDLE_S = 1.0  # a process with no job for this long is idle: its freed heap goes back
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -2, -3, -8
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 256 * 1024 * 1024
TOP_PAD = 64 * 1024 * 1024
_ENV_NAMES = {
    _M_TRIM_THRESHOLD: "MALLOC_TRIM_THRESHOLD_",
    _M_TOP_PAD: "MALLOC_TOP_PAD_",
    _M_MMAP_THRESHOLD: "MALLOC_MMAP_THRESHOLD_",
    _M_ARENA_MAX: "MALLOC_ARENA_MAX",
}


def _arenas() -> int:
    """One malloc arena per core the process may use (OMP_NUM_THREADS when set), at least 2."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        n = 0
    return max(2, n if n > 0 else (os.cpu_count() or 1))


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (musl's mallopt is a stub and it has no malloc_trim)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


@functools.lru_cache(maxsize=1)
def keep_heap() -> dict[str, int]:
    """Sets glibc's malloc thresholds once for this process (see the module docstring); returns
    what was set ({} where nothing was: not glibc, disabled, or all given by the environment).
    O(1); call before a job's threads start (mallopt locks every arena, so later is also safe)."""
    libc = _glibc()
    if os.environ.get(DISABLE_ENV, "1") == "0" or libc is None:
        return {}
    mallopt = libc.mallopt
    done: dict[str, int] = {}
    # The mmap threshold first, and nothing else if it fails: a trim threshold alone switches
    # glibc's self-raising mmap threshold off at 128 kB (every array an mmap: 5x the faults).
    for param, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_TOP_PAD, TOP_PAD),
        (_M_ARENA_MAX, _arenas()),
    ):
        name = _ENV_NAMES[param]
        if name in os.environ:  # the operator's own setting wins
            continue
        if mallopt(param, value) != 1:
            break
        done[name] = value
    return done


def _idle_seconds() -> float:
    """IDLE_S, or OCCLUTRACE_HEAP_IDLE_S when it is a number >= 0 (0: trim as the last job ends;
    at most 1e6 s, ~12 days: a larger or infinite one means never, and a wait must be finite)."""
    try:
        value = float(os.environ.get(IDLE_ENV, IDLE_S))
    except ValueError:
        return IDLE_S
    return min(value, 1e6) if value >= 0 else IDLE_S  # NaN fails the comparison too


class _HeldHeap:
    """The bound on keep_heap (module docstring): a count of this process's running jobs; when
    the last one ends, one long-lived daemon thread hands the freed heap back after IDLE_S unless
    a job starts first. O(1) per job start and end (a lock and a notify: no thread per job)."""

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):  # a child starts with no job and no trimmer thread
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._jobs = 0
        self._due: float | None = None  # time.monotonic() of the pending trim; None: none pending
        self._thread: threading.Thread | None = None
        self._epoch = object()  # this process's: a span entered before a fork is not the child's
        self.trims = 0  # heaps handed back so far (benchmarks, tests)
        self.trimmed = threading.Event()  # set by each trim that found no job, cleared by each job's start

    @contextmanager
    def __call__(self) -> Iterator[None]:
        """One job's span: its heap is kept (keep_heap) while it or any other job runs."""
        kept = bool(keep_heap())
        with self._cond:
            epoch = self._epoch
            self._jobs += 1
            self._due = None
            self.trimmed.clear()
        try:
            yield
        finally:
            at_once = False
            with self._cond:
                # A child forked inside this span starts with no job: the span is not counted
                # there (counting it down left -1 jobs, and the child never trimmed again).
                mine = epoch is self._epoch
                self._jobs -= mine
                if mine and self._jobs == 0 and kept:
                    delay = _idle_seconds()
                    at_once = delay == 0
                    if not at_once:
                        self._due = time.monotonic() + delay
                        if self._thread is None or not self._thread.is_alive():
                            self._thread = threading.Thread(target=self._trimmer, name="occlutrace-heap", daemon=True)
                            self._thread.start()
                        self._cond.notify()
            if at_once:
                self._trim()

    def _trimmer(self) -> None:
        """The daemon thread: sleeps until a trim is due (or for ever while none is), then trims."""
        cond = self._cond
        with cond:
            while cond is self._cond:  # the process's own state (not a pre-fork copy)
                if self._due is None:
                    cond.wait()
                elif (left := self._due - time.monotonic()) > 0:
                    cond.wait(left)
                else:
                    self._due = None
                    cond.release()
                    try:
                        self._trim()
                    finally:
                        cond.acquire()

    def _trim(self) -> None:
        """malloc_trim(0) unless a job runs (then its own end trims), outside the lock: a job
        starting meanwhile does not wait for it."""
        with self._cond:
            if self._jobs:
                return
        libc = _glibc()
        if libc is not None:  # kept implies glibc; checked for the type
            libc.malloc_trim(0)
        with self._cond:
            self.trims += 1
            if not self._jobs:
                self.trimmed.set()


held_heap = _HeldHeap()
