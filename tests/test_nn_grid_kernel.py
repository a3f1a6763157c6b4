"""The grid kernel (kernels/grid_knn.cu): its search code built for the CPU with the shim and
checked against brute force on every machine; PTX builds for Ampere and Hopper; GPU runs."""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from occlutrace_compute.nn import cuda_grid, knn
from occlutrace_compute.nn.grid_build import build_grid, grid_shape
from occlutrace_compute.nn.grid_cpu import CpuGridKnn, compile_library
from occlutrace_compute.nn.kernel_files import kernel_source, kernels_dir
from occlutrace_compute.nn.reference import knn_problems, stress_cases

CASES = stress_cases(seed=2, min_ref=64)
NVCC = shutil.which("nvcc") or next((p for p in ["/usr/local/cuda/bin/nvcc"] if Path(p).is_file()), None)


@pytest.fixture(scope="module")
def cpu_kernel(tmp_path_factory) -> CpuGridKnn:
    if shutil.which("g++") is None:
        pytest.skip("g++ not installed")
    # One thread: tests share a small, busy CPU, where spinning OpenMP threads only slow down.
    return CpuGridKnn(compile_library(tmp_path_factory.mktemp("grid_knn")), threads=1)


@pytest.mark.parametrize("cells_per_point", [0.02, 2.0, 60.0])  # many points per cell .. mostly empty cells
@pytest.mark.parametrize("k", [1, 5, 17, 64])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cpu_kernel_matches_brute_force(cpu_kernel, case, k, cells_per_point):
    res = cpu_kernel(case.query, case.ref, case.query_lengths, case.ref_lengths, k, cells_per_point)
    assert knn_problems(res, case.query, case.ref, case.query_lengths, case.ref_lengths, k) == []


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cpu_kernel_query_order_does_not_change_results(cpu_kernel, case):
    args = (case.query, case.ref, case.query_lengths, case.ref_lengths, 4)
    in_order, sorted_ = cpu_kernel(*args, sort_queries=False), cpu_kernel(*args, sort_queries=True)
    assert torch.equal(in_order.dists2, sorted_.dists2) and torch.equal(in_order.idx, sorted_.idx)


def test_cpu_kernel_float64_and_exact_distances(cpu_kernel):
    """Same formula as the torch brute force: float64 results equal bit for bit."""
    case = next(c for c in stress_cases(seed=4, dtype=torch.float64) if c.name == "clustered")
    args = (case.query, case.ref, case.query_lengths, case.ref_lengths)
    res = cpu_kernel(*args, 3)
    assert res.dists2.dtype == torch.float64
    assert torch.equal(res.dists2, knn(*args, k=3, backend="torch").dists2)
    assert knn_problems(res, *args, 3, rtol=1e-12) == []


def test_cpu_kernel_larger_surface_cloud(cpu_kernel):
    g = torch.Generator().manual_seed(5)
    t = torch.rand(1, 6000, 2, generator=g) * 6.0
    ref = torch.stack([t[..., 0], t[..., 1], torch.sin(t[..., 0]) * torch.cos(t[..., 1])], dim=2)  # a wavy sheet
    query = ref[:, :3000] + 0.05 * torch.randn(1, 3000, 3, generator=g)
    lengths_q, lengths_r = torch.tensor([3000]), torch.tensor([6000])
    res = cpu_kernel(query, ref, lengths_q, lengths_r, 8)
    assert knn_problems(res, query, ref, lengths_q, lengths_r, 8) == []


def test_cpu_kernel_empty_batches(cpu_kernel):
    none = cpu_kernel(torch.rand(2, 0, 3), torch.rand(2, 0, 3), torch.tensor([0, 0]), torch.tensor([0, 0]), 2)
    assert none.idx.shape == (2, 0, 2)
    no_items = cpu_kernel(
        torch.rand(0, 5, 3),
        torch.rand(0, 5, 3),
        torch.zeros(0, dtype=torch.int64),
        torch.zeros(0, dtype=torch.int64),
        1,
    )
    assert no_items.dists2.shape == (0, 5, 1)


def test_cpu_kernel_rejects_k_beyond_64(cpu_kernel):
    q, r = torch.rand(1, 4, 3), torch.rand(1, 70, 3)
    with pytest.raises(ValueError, match="k <= 64"):
        cpu_kernel(q, r, torch.tensor([4]), torch.tensor([70]), 65)


def test_grid_build_sorts_every_real_point_once():
    case = next(c for c in CASES if c.name == "ragged")
    grid = build_grid(case.ref, case.ref_lengths, cells_per_point=2.0)
    n_real = int(case.ref_lengths.sum())
    assert grid.sorted_ref.shape == (n_real, 3) and int(grid.cell_start[-1]) == n_real
    assert (grid.cell_start[1:] >= grid.cell_start[:-1]).all()
    for i, n in enumerate(case.ref_lengths.tolist()):  # each item's cells hold exactly its points
        first = int(grid.item_i[i, 3])
        last = first + int(grid.item_i[i, :3].prod())
        span = slice(int(grid.cell_start[first]), int(grid.cell_start[last]))
        assert sorted(grid.sorted_idx[span].tolist()) == list(range(n))
        assert torch.equal(grid.sorted_ref[span], case.ref[i, grid.sorted_idx[span].long()])


@pytest.mark.parametrize("case_name", ["ragged", "clustered", "planar"])
def test_empty_shells_equal_chebyshev_distance_to_occupied_cells(case_name):
    """cell_skip lets the kernel skip shells: it must never exceed the true empty-shell count."""
    import numpy as np

    case = next(c for c in CASES if c.name == case_name)
    grid = build_grid(case.ref, case.ref_lengths, cells_per_point=4.0)
    occupied = (grid.cell_start[1:] > grid.cell_start[:-1]).numpy()
    for i, n in enumerate(case.ref_lengths.tolist()):
        nx, ny, nz, first = grid.item_i[i].tolist()
        cells = np.stack(np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij"), -1).reshape(-1, 3)
        occ = occupied[first : first + nx * ny * nz]
        skip = grid.cell_skip[first : first + nx * ny * nz].numpy().astype(int)
        if n == 0:
            assert not occ.any()
            continue
        cheb = np.abs(cells[:, None, :] - cells[None, occ, :]).max(axis=2).min(axis=1)
        assert np.array_equal(skip, np.minimum(cheb, 64))


def test_grid_shape_handles_flat_and_degenerate_clouds():
    import numpy as np

    _, dims = grid_shape(np.zeros(3), np.array([10.0, 10.0, 0.0]), 10_000, 1.0)
    assert dims[2] == 1 and dims[0] == dims[1] > 1 and 0.5 * 10_000 <= dims.prod() <= 2 * 10_000
    assert grid_shape(np.ones(3), np.ones(3), 50, 1.0)[1].tolist() == [1, 1, 1]
    assert grid_shape(np.zeros(3), np.ones(3), 0, 1.0)[1].tolist() == [1, 1, 1]


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("source", sorted(kernels_dir().glob("*.cu")), ids=lambda p: p.name)
def test_kernel_compiles_to_ptx(source, arch, tmp_path):
    out = tmp_path / f"{source.stem}.ptx"
    proc = subprocess.run(
        [NVCC, "-ptx", f"-arch={arch}", "--Werror", "all-warnings", str(source), "-o", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert ".entry" in out.read_text()


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_gpu_kernel_parameters_match_the_python_launch(tmp_path):
    """Each GPU entry point takes exactly the arguments cuda_grid passes, in order and width:
    tensors and int64 as 64-bit, the int32 k as 32-bit (checked on the PTX, no GPU needed)."""
    import re

    import numpy as np

    from occlutrace_compute.nn.grid_build import prepare_call

    out = tmp_path / "grid_knn.ptx"
    source = kernels_dir() / "grid_knn.cu"
    subprocess.run([NVCC, "-ptx", "-arch=sm_80", str(source), "-o", str(out)], check=True, timeout=300)
    ptx = out.read_text()
    case = CASES[0]
    for dtype in (torch.float32, torch.float64):
        q, r = case.query.to(dtype), case.ref.to(dtype)
        call = prepare_call(q, r, case.query_lengths, case.ref_lengths, 3)
        expected = ["u32" if isinstance(a, np.int32) else "u64" for a in call.args]
        name = cuda_grid.kernel_name(dtype, 3)
        params = re.search(rf"\.entry {name}\((.*?)\)", ptx, re.DOTALL).group(1)
        assert re.findall(r"\.param \.(\w+) ", params) == expected


@pytest.mark.parametrize("name", sorted(p.name for p in kernels_dir().glob("*.cu")))
def test_runtime_source_has_the_shared_header_pasted_in_once(name, tmp_path, monkeypatch):
    """NVRTC gets source text and no folder: kernel_source pastes kernels/*.cuh in place of the
    include (once), so the text names no header, holds the helpers, and follows a changed header
    (CuPy's compile cache keys on this text)."""
    text = kernel_source(name)
    assert '#include "' not in text and text.count("ot_sqrt(double x)") == 1
    folder = tmp_path / "kernels"
    folder.mkdir()
    for f in kernels_dir().iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    with (folder / "device_common.cuh").open("a") as f:
        f.write('#include "device_common.cuh"\n// changed\n')  # a repeated include is pasted once
    source = folder / name
    text = source.read_text()
    # an include with a comment after it is still pasted (NVRTC has no folder to find it in)
    source.write_text(text.replace('#include "device_common.cuh"', '#include "device_common.cuh"  // helpers', 1))
    monkeypatch.setenv("OCCLUTRACE_KERNELS_DIR", str(folder))
    changed = kernel_source(name)
    assert changed.count("// changed") == 1 and changed.count("ot_sqrt(double x)") == 1


def _find_nvrtc() -> str | None:
    """libnvrtc from $OCCLUTRACE_NVRTC_LIB, the nvidia-cuda-nvrtc wheel, the CUDA toolkit or the loader path."""
    candidates = [os.environ.get("OCCLUTRACE_NVRTC_LIB", "")]
    try:
        import nvidia  # the namespace package of NVIDIA's pip wheels

        candidates += [c for p in nvidia.__path__ for c in glob.glob(f"{p}/*/lib/libnvrtc.so*")]
    except ImportError:
        pass
    candidates += glob.glob("/usr/local/cuda/lib64/libnvrtc.so*") + [ctypes.util.find_library("nvrtc") or ""]
    return next((c for c in candidates if c and "builtins" not in c and Path(c).exists()), None)


NVRTC = _find_nvrtc()


@pytest.mark.skipif(NVRTC is None, reason="libnvrtc not found (pip install nvidia-cuda-nvrtc to run)")
@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
def test_kernel_compiles_with_nvrtc_as_cupy_does(arch):
    """The backend's real compile path: NVRTC, no standard headers, the backend's own options."""
    lib = ctypes.CDLL(NVRTC)
    prog = ctypes.c_void_p()
    source = kernel_source("grid_knn.cu").encode()  # the text the backend hands CuPy
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), source, b"grid_knn.cu", 0, None, None) == 0
    try:
        options = [o.encode() for o in (*cuda_grid._OPTIONS, f"--gpu-architecture={arch}")]
        rc = lib.nvrtcCompileProgram(prog, len(options), (ctypes.c_char_p * len(options))(*options))
        log_size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(log_size))
        log = ctypes.create_string_buffer(log_size.value)
        lib.nvrtcGetProgramLog(prog, log)
        assert rc == 0, log.value.decode(errors="replace")
        ptx_size = ctypes.c_size_t()
        lib.nvrtcGetPTXSize(prog, ctypes.byref(ptx_size))
        ptx = ctypes.create_string_buffer(ptx_size.value)
        lib.nvrtcGetPTX(prog, ptx)
        for k in (1, 4, 8, 16, 32, 64):
            for suffix in ("f32", "f64"):
                assert f".entry grid_knn_{suffix}_k{k}(".encode() in ptx.value
        assert cuda_grid.kernel_name(torch.float32, 3) == "grid_knn_f32_k4"
        assert cuda_grid.kernel_name(torch.float64, 33) == "grid_knn_f64_k64"
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


@pytest.mark.gpu
@pytest.mark.parametrize("k", [1, 5, 17, 64])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cuda_backend_matches_torch_brute_force_on_gpu(case, k):
    pytest.importorskip("cupy")
    args = [t.cuda() for t in (case.query, case.ref, case.query_lengths, case.ref_lengths)]
    res = knn(*args, k=k, backend="cuda")
    brute = knn(*args, k=k, backend="torch")
    assert res.dists2.is_cuda and res.idx.is_cuda
    assert torch.equal(res.dists2, brute.dists2)  # --fmad=false: same floats as the direct formula
    assert knn_problems(res, *args, k) == []


@pytest.mark.gpu
def test_auto_backend_on_gpu_is_the_kernel():
    pytest.importorskip("cupy")
    from occlutrace_compute.nn import available_backends

    assert available_backends("cuda")[0] == "cuda"
