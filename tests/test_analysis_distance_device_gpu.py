"""The device distance kernel on a CUDA GPU against its CPU twin and analysis/distance.py.

Its own file without hypothesis or conftest fixtures: the GPU machine's check
(`pytest -m gpu --noconftest`, ../shared/device/run_gpu_checks.sh) has neither. Skipped without
CUDA (conftest marks `gpu` tests skipped; here also when run with --noconftest)."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from occlutrace_compute.analysis import distance_device as dd
from occlutrace_compute.analysis.distance import SurfaceIndex
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.synth import make_arch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not dd.cuda_available(), reason="needs a CUDA GPU with CuPy and NVRTC"),
]


def _uneven() -> Mesh:
    """An arch (fine) plus one face spanning it and a few slivers."""
    arch = make_arch("upper", 2, 0.3).mesh
    rng = np.random.default_rng(1)
    huge = np.array([[-80.0, -80, -6], [80, -80, -6], [0, 90, -6]])
    start = rng.uniform(-20, 20, (30, 3))
    along = rng.normal(size=(30, 3))
    along /= np.linalg.norm(along, axis=1)[:, None]
    sliver = np.concatenate([start, start + 12 * along, start + 6 * along + 1e-3 * rng.normal(size=(30, 3))])
    n = arch.n_vertices
    faces = np.concatenate([
        arch.faces, [[n, n + 1, n + 2]], np.stack([np.arange(30), np.arange(30) + 30, np.arange(30) + 60], 1) + n + 3,
    ])  # fmt: skip
    return Mesh(np.concatenate([arch.vertices, huge, sliver]), faces.astype(np.int64))


def _points(mesh: Mesh, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    near = mesh.vertices[rng.choice(mesh.n_vertices, n)] + rng.normal(0, 0.5, (n, 3))
    lo, hi = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)
    return np.concatenate([near, rng.uniform(lo - 5, hi + 5, (n // 4, 3))])


@pytest.mark.parametrize("normals_from", ["faces", "vertices"])
@pytest.mark.parametrize("cutoff", [None, 0.0, 0.3, 1.5])
def test_cuda_equals_the_cpu_twin_and_distance_py(normals_from, cutoff):
    mesh = _uneven()
    pts = _points(mesh, 8_000, 2)
    index = dd.DeviceSurfaceIndex(mesh, normals_from, device="cuda")
    gpu, work = index.query_counted(pts, cutoff)
    assert work is not None and work.max() <= 2 * index.tree.n_leaf - 1 + mesh.n_faces
    if shutil.which("g++"):
        cpu_twin = dd.DeviceSurfaceIndex(mesh, normals_from, device="cpu-twin").query(pts, cutoff)
        # The same source, --fmad=false against -ffp-contract=off, IEEE double on both.
        np.testing.assert_array_equal(gpu.distance, cpu_twin.distance)
        np.testing.assert_array_equal(gpu.closest, cpu_twin.closest)
        np.testing.assert_array_equal(gpu.face, cpu_twin.face)
        np.testing.assert_array_equal(gpu.on_boundary, cpu_twin.on_boundary)
    cpu = SurfaceIndex(mesh, normals_from).query(pts, cutoff)
    both = np.isfinite(cpu.distance) & np.isfinite(gpu.distance)
    np.testing.assert_allclose(np.abs(gpu.distance[both]), np.abs(cpu.distance[both]), rtol=0, atol=1e-6)
    clear = both & (np.abs(cpu.distance) > 1e-6)
    np.testing.assert_array_equal(np.sign(gpu.distance[clear]), np.sign(cpu.distance[clear]))
    if cutoff is not None:
        edge = np.abs(np.abs(np.nan_to_num(cpu.distance, nan=np.inf)) - cutoff) <= 1e-6
        np.testing.assert_array_equal(np.isfinite(gpu.distance)[~edge], np.isfinite(cpu.distance)[~edge])


def test_cuda_scan_sized_query_is_fast_and_says_how_fast():
    mesh = make_arch("upper", 3, 0.15).mesh
    scan = make_arch("upper", 3, 0.16).mesh.vertices
    index = dd.DeviceSurfaceIndex(mesh, device="cuda")
    index.query(scan[:1000])  # compile and warm up
    t0 = time.perf_counter()
    res = index.query(scan, max_distance=1.0)
    took = time.perf_counter() - t0
    print(
        f"\ncuda distances: {len(scan)} points vs {mesh.n_faces} faces in {took * 1000:.1f} ms (host in/out included)"
    )
    assert np.isfinite(res.distance).mean() > 0.9
    assert took < 5.0  # a hang guard, not a benchmark (bench/bench_distance.py --device cuda)
