"""Whether our CUDA kernels can run here through CuPy: CuPy importable, NVRTC loadable (the
kernels compile at first use) and a CUDA device visible. One check for the kNN grid kernel
(nn/cuda_grid.py) and the distance kernel (analysis/distance_device.py); this module imports
neither torch nor CuPy until asked, so the distance path can ask before the registration's imports."""

from __future__ import annotations

import functools


@functools.cache
def usable() -> bool:
    """True when CuPy, NVRTC and a CUDA device are all there (cached: asked once per process)."""
    try:
        import cupy

        cupy.cuda.nvrtc.getVersion()
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False
