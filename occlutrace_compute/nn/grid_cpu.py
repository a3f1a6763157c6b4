"""CPU build of kernels/grid_knn.cu (g++ with kernels/cpu_shim.h, OpenMP), loaded with ctypes.

It runs the GPU kernel's exact search code on the CPU, so tests check the kernel's logic against
brute force on every machine and benchmarks can compare it with the CPU backends.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch

from occlutrace_compute.nn.grid_build import DEFAULT_CELLS_PER_POINT, prepare_call
from occlutrace_compute.nn.kernel_files import kernel_path

LIBRARY_NAME = "libgrid_knn_cpu.so"
_CTYPE = {np.int64: ctypes.c_longlong, np.int32: ctypes.c_int}


def compile_library(build_dir: Path, compiler: str = "g++") -> Path:
    """Compile grid_knn.cu for the CPU into build_dir; raises RuntimeError with the compiler output."""
    exe = shutil.which(compiler)
    if exe is None:
        raise RuntimeError(f"C++ compiler {compiler!r} not found")
    source, shim = kernel_path("grid_knn.cu"), kernel_path("cpu_shim.h")
    out = Path(build_dir) / LIBRARY_NAME
    cmd = [exe, "-O3", "-fopenmp", "-shared", "-fPIC", "-Wall", "-Werror",
           "-x", "c++", "-include", str(shim), str(source), "-o", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"compiling {source} for the CPU failed:\n{proc.stderr}")
    return out


class CpuGridKnn:
    """The kernel's search over a torch-built grid, same call shape as the knn backends."""

    def __init__(self, library: Path, threads: int | None = None) -> None:
        """`threads`: OpenMP threads for the search (default: OpenMP's, all cores)."""
        self._lib = ctypes.CDLL(str(library))
        if threads is not None:
            self._lib.grid_knn_cpu_set_threads(ctypes.c_int(threads))
        self._fns = {torch.float32: self._lib.grid_knn_cpu_f32, torch.float64: self._lib.grid_knn_cpu_f64}
        for fn in self._fns.values():
            fn.restype = ctypes.c_int
            fn.argtypes = (
                [ctypes.c_void_p] * 9 + [ctypes.c_longlong, ctypes.c_longlong, ctypes.c_int] + [ctypes.c_void_p] * 2
            )

    def __call__(
        self,
        query: torch.Tensor,
        ref: torch.Tensor,
        query_lengths: torch.Tensor,
        ref_lengths: torch.Tensor,
        k: int,
        cells_per_point: float = DEFAULT_CELLS_PER_POINT,
        sort_queries: bool = True,
    ):
        from occlutrace_compute.nn.api import KnnResult

        if query.device.type != "cpu":
            raise ValueError(f"the CPU kernel build needs CPU tensors, got {query.device}")
        call = prepare_call(query, ref, query_lengths, ref_lengths, k, cells_per_point, sort_queries)
        args = [
            ctypes.c_void_p(a.data_ptr()) if isinstance(a, torch.Tensor) else _CTYPE[type(a)](int(a)) for a in call.args
        ]
        if self._fns[query.dtype](*args) != 0:
            raise ValueError(f"grid knn kernel supports 1 <= k <= 64, got k={k}")
        return KnnResult(call.dists2, call.idx)
