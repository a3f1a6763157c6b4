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
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

DISABLE_ENV = "OCCLUTRACE_KEEP_HEAP"
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
def keep_heap() -> dict[str, int]:
    """Sets glibc's malloc thresholds once for this process (see the module docstring); returns
    what was set ({} where nothing was: not glibc, disabled, or all given by the environment).
    O(1); call before a job's threads start (mallopt locks every arena, so later is also safe)."""
    if os.environ.get(DISABLE_ENV, "1") == "0" or not sys.platform.startswith("linux"):
        return {}
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl's mallopt is a stub)
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
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
