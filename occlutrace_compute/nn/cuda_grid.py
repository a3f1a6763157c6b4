"""GPU backend: our uniform-grid kernel (kernels/grid_knn.cu), compiled at run time by CuPy.

The grid is built with torch ops on the GPU (grid_build.py); the kernel reads torch's memory and
writes torch's output tensors through DLPack views on torch's current stream, so nothing is copied.
"""

from __future__ import annotations

import functools

import torch

from occlutrace_compute import cupy_runtime
from occlutrace_compute.nn.grid_build import DEFAULT_CELLS_PER_POINT, prepare_call
from occlutrace_compute.nn.kernel_files import kernel_source

MAX_K = 64
_KMAX = (1, 4, 8, 16, 32, 64)  # the kernel variants compiled in grid_knn.cu
_OPTIONS = ("--std=c++17", "--fmad=false")  # no FMA: distances match the direct-difference brute force
_THREADS = 256


def is_installed() -> bool:
    """CuPy importable, NVRTC loadable and a CUDA device visible (cupy_runtime.usable)."""
    return cupy_runtime.usable()


@functools.cache
def _module(device_index: int):
    import cupy

    with cupy.cuda.Device(device_index):
        return cupy.RawModule(code=kernel_source("grid_knn.cu"), options=_OPTIONS)


def _cupy_stream(cupy, stream: torch.cuda.Stream):
    """torch's stream as a CuPy stream (CuPy >= 14 speaks the CUDA stream protocol; 13 needs the pointer)."""
    if hasattr(cupy.cuda.Stream, "from_external") and hasattr(stream, "__cuda_stream__"):
        return cupy.cuda.Stream.from_external(stream)
    return cupy.cuda.ExternalStream(stream.cuda_stream, stream.device.index)


def kernel_name(dtype: torch.dtype, k: int) -> str:
    kmax = next((m for m in _KMAX if k <= m), None)
    if kmax is None or k < 1:
        raise ValueError(f"the cuda knn backend supports 1 <= k <= {MAX_K}, got k={k}")
    return f"grid_knn_{'f64' if dtype == torch.float64 else 'f32'}_k{kmax}"


def knn(
    query: torch.Tensor,
    ref: torch.Tensor,
    query_lengths: torch.Tensor,
    ref_lengths: torch.Tensor,
    k: int,
    cells_per_point: float = DEFAULT_CELLS_PER_POINT,
):
    import cupy

    from occlutrace_compute.nn.api import KnnResult

    if query.device.type != "cuda":
        raise ValueError(f"the cuda knn backend needs CUDA tensors, got {query.device}")
    work = torch.float64 if query.dtype == torch.float64 else torch.float32  # half inputs: search in float32
    name = kernel_name(work, k)
    call = prepare_call(query.to(work), ref.to(work), query_lengths, ref_lengths, k, cells_per_point)
    b, p = query.shape[:2]
    if b * p:
        dev = query.device.index if query.device.index is not None else torch.cuda.current_device()
        with cupy.cuda.Device(dev), _cupy_stream(cupy, torch.cuda.current_stream(dev)):
            kernel = _module(dev).get_function(name)
            args = tuple(cupy.from_dlpack(a) if isinstance(a, torch.Tensor) else a for a in call.args)
            kernel(((b * p + _THREADS - 1) // _THREADS,), (_THREADS,), args)  # on the current (torch's) stream
    return KnnResult(call.dists2.to(query.dtype), call.idx)
