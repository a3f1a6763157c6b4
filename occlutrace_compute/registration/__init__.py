"""Rigid registration of a rescan onto an earlier scan of the same arch, from any pose.

Works on arrays and tensors only. `register` aligns one pair, `register_batch` many pairs in
one padded batch (the GPU throughput path); both return `RegistrationResult` whose `matrix`
maps MOVING into FIXED.
"""

from occlutrace_compute.registration.engine import register, register_batch
from occlutrace_compute.registration.options import RegistrationOptions
from occlutrace_compute.registration.result import ChangedRegion, RegistrationResult
from occlutrace_compute.registration.sampling import sample_surface, voxel_downsample

__all__ = [
    "ChangedRegion",
    "RegistrationOptions",
    "RegistrationResult",
    "register",
    "register_batch",
    "sample_surface",
    "voxel_downsample",
]
