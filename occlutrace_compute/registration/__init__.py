"""Rigid registration of a rescan onto an earlier scan of the same arch, from any pose.

Works on arrays and tensors only. `register` aligns one pair, `register_batch` many pairs in
one padded batch (the GPU throughput path); both return `RegistrationResult` whose `matrix`
maps MOVING into FIXED.

The names below are imported on first use (PEP 562): the engine imports torch (~1.9 s CPU), and
a process that only reads a result (`registration.result`) or refines on a region
(`registration.region`) need not pay for it (`occlutrace align` registers in a process of its
own, jobs/registrar.py, and unpickles the result in the command's process).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from occlutrace_compute.registration.engine import register, register_batch
    from occlutrace_compute.registration.options import RegistrationOptions
    from occlutrace_compute.registration.result import ChangedRegion, RegistrationResult
    from occlutrace_compute.registration.sampling import sample_surface, voxel_downsample

# exported name -> the submodule that defines it
_EXPORTS = {
    "register": "engine",
    "register_batch": "engine",
    "RegistrationOptions": "options",
    "ChangedRegion": "result",
    "RegistrationResult": "result",
    "sample_surface": "sampling",
    "voxel_downsample": "sampling",
}

__all__ = [
    "ChangedRegion",
    "RegistrationOptions",
    "RegistrationResult",
    "register",
    "register_batch",
    "sample_surface",
    "voxel_downsample",
]


def __getattr__(name: str) -> Any:
    """The exported names, imported from their submodule on first use (then cached here). Any
    other name is an AttributeError, so `from occlutrace_compute.registration import features`
    still imports the submodule."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
