"""Count what a call asks of torch: operations dispatched, device->host transfers, uploads.

The CPU stand-in for "does this batch path keep the GPU fed": on a GPU every torch call is a
kernel launch (a few microseconds of host time) and every transfer a synchronisation, so a path
whose counts grow with the batch size pays per pair on the host. `OpCounter` is a
`TorchFunctionMode`: it sees every torch function and tensor method called from Python (not the
ops torch runs inside them) and times them, so the host time outside torch can be told apart.

Transfers counted: `.item()`, `.tolist()`, `.cpu()` and `.numpy()` (also on CPU tensors, where
they would be transfers on a GPU), `.to("cpu")` of a device tensor, `bool/int/float()` of a tensor,
`nonzero`, `unique`, `masked_select` (data-dependent sizes: a synchronisation), and indexing with a
boolean mask (a nonzero in disguise). Uploads: `torch.from_numpy`, `torch.tensor`, `torch.as_tensor`.
Overhead: ~10 us of host time per counted call (see `OpCounter`).
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode

_TRANSFERS = {
    "item",
    "tolist",
    "cpu",
    "numpy",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
    "nonzero",
    "masked_select",
    "unique",
    "argwhere",
}
_UPLOADS = {"from_numpy", "tensor", "as_tensor"}


def _name(func) -> str:
    return getattr(func, "__name__", None) or str(func)


def _has_bool_index(args: tuple) -> bool:
    """Whether a __getitem__/__setitem__ index holds a boolean tensor (a data-dependent shape)."""
    if len(args) < 2:
        return False
    idx = args[1]
    items = idx if isinstance(idx, tuple) else (idx,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


def _to_host(args: tuple, kwargs: dict) -> bool:
    """Whether a `.to(...)` call moves a non-CPU tensor to the CPU."""
    if not args or not isinstance(args[0], torch.Tensor) or args[0].device.type == "cpu":
        return False
    for a in list(args[1:]) + list(kwargs.values()):
        if isinstance(a, (str, torch.device)) and torch.device(a).type == "cpu":
            return True
    return False


@dataclass
class Counts:
    ops: int = 0
    transfers: int = 0
    uploads: int = 0
    torch_seconds: float = 0.0  # time inside the counted torch calls
    excluded_seconds: float = 0.0  # host time in calls set apart by `excluded` (less their torch time)
    # The same on this thread's CPU clock (`time.thread_time`): blind to other processes' load.
    torch_thread_seconds: float = 0.0
    excluded_thread_seconds: float = 0.0
    by_name: Counter = field(default_factory=Counter)
    transfers_by_name: Counter = field(default_factory=Counter)


_ORDINARY, _TRANSFER, _INDEX, _TO = 0, 1, 2, 3


def _kind(name: str) -> int:
    if name in _TRANSFERS:
        return _TRANSFER
    if name in ("__getitem__", "__setitem__"):
        return _INDEX
    return _TO if name == "to" else _ORDINARY


class OpCounter(TorchFunctionMode):
    """with OpCounter() as c: ...; then c.counts. Nested torch calls made inside a counted call are
    not counted again (the mode is off while a call runs).

    Its own cost is part of what it measures as host time: torch's dispatch to a Python mode
    (~6 us a call on this CPU, unavoidable) plus this method (~4 us: names and kinds are looked up
    once per function, then cached)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = Counts()
        self._seen: dict = {}  # func -> (name, kind, is upload)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        c = self.counts
        seen = self._seen.get(func)
        if seen is None:
            name = _name(func)
            seen = self._seen[func] = (name, _kind(name), name in _UPLOADS)
        name, kind, upload = seen
        c.ops += 1
        c.by_name[name] += 1
        if kind and (
            kind == _TRANSFER
            or (kind == _INDEX and _has_bool_index(args))
            or (kind == _TO and _to_host(args, kwargs or {}))
        ):
            c.transfers += 1
            c.transfers_by_name[name] += 1
        if upload:
            c.uploads += 1
        t, tt = time.perf_counter(), time.thread_time()
        try:
            return func(*args, **(kwargs or {}))
        finally:
            c.torch_thread_seconds += time.thread_time() - tt
            c.torch_seconds += time.perf_counter() - t


@contextmanager
def excluded(counter: OpCounter, targets: list[tuple[object, str]]) -> Iterator[None]:
    """Time calls of `targets` ((owner, attribute name) pairs, e.g. the kd-tree searches, which a
    GPU replaces by device kernels) into `counter.counts.excluded_seconds`, less the torch time
    inside them (already in `torch_seconds`). Restores the attributes afterwards."""
    saved = [(owner, name, getattr(owner, name)) for owner, name in targets]
    depth = [0]

    def wrap(fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if depth[0]:
                return fn(*args, **kwargs)
            depth[0] += 1
            c = counter.counts
            t, torch_before = time.perf_counter(), c.torch_seconds
            tt, torch_thread_before = time.thread_time(), c.torch_thread_seconds
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                c.excluded_seconds += time.perf_counter() - t - (c.torch_seconds - torch_before)
                c.excluded_thread_seconds += time.thread_time() - tt - (c.torch_thread_seconds - torch_thread_before)

        return timed

    try:
        for owner, name, fn in saved:
            setattr(owner, name, wrap(fn))
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)
