"""The device distance kernel (kernels/point_mesh_distance.cu) through its CPU twin (the same file
built with g++ and kernels/cpu_shim.h), on every machine: exact against a float64 brute force and
against analysis/distance.py on very uneven meshes, at random cutoffs, with signs, within its stated
work bound; its CUDA build's parameters against the launch (PTX, no GPU needed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import trimesh
from hypothesis import HealthCheck, given, settings, strategies as st
from test_analysis_surfaces import bumpy, height_field

from occlutrace_compute.analysis import distance_device as dd
from occlutrace_compute.analysis.distance import SurfaceIndex
from occlutrace_compute.analysis.triangles import (
    closest_on_triangles,
    feature_normal,
    mesh_features,
    on_boundary,
)
from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.nn.kernel_files import kernel_source, kernels_dir

NVCC = shutil.which("nvcc") or next((p for p in ["/usr/local/cuda/bin/nvcc"] if Path(p).is_file()), None)


@pytest.fixture(scope="module", autouse=True)
def _twin(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("g++ not installed")
    dd.compile_cpu_twin()  # once, before any timing-free assertions


def twin(mesh: Mesh, normals_from: str = "faces") -> dd.DeviceSurfaceIndex:
    # One thread: tests share a small, busy CPU.
    return dd.DeviceSurfaceIndex(mesh, normals_from, device="cpu-twin", threads=1)  # type: ignore[arg-type]


def uneven(seed: int) -> Mesh:
    """Fine 'teeth' (a 0.1 mm bumpy patch), coarse 'gingiva' (3 mm triangles) around it, one face
    spanning 150 mm under everything, and slivers (10 mm long, 0.5 um wide) through the fine part."""
    rng = np.random.default_rng(seed)
    fine = height_field(bumpy, 1.5, 31)
    xx, yy = np.meshgrid(np.linspace(1.5, 19.5, 7), np.linspace(-3.0, 3.0, 3))
    coarse_v = np.stack([xx.ravel(), yy.ravel(), 0.5 * np.cos(xx.ravel() / 3)], axis=1)
    i = np.arange(21).reshape(3, 7)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel()
    coarse_f = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    huge_v = np.array([[-75.0, -75, -5], [75, -75, -5], [0, 90, -5]])
    start = rng.uniform(-1.5, 1.5, (25, 3)) * [1, 1, 0.3]
    along = rng.normal(size=(25, 3))
    along /= np.linalg.norm(along, axis=1)[:, None]
    side = np.cross(along, rng.normal(size=(25, 3)))
    side /= np.linalg.norm(side, axis=1)[:, None]
    sliver_v = np.concatenate([start, start + 10 * along, start + 5 * along + 5e-4 * side])
    n0 = len(fine.vertices)
    sliver_f = np.stack([np.arange(25), np.arange(25) + 25, np.arange(25) + 50], axis=1) + n0 + 24
    v = np.concatenate([fine.vertices, coarse_v, huge_v, sliver_v])
    f = np.concatenate([fine.faces, coarse_f + n0, [[n0 + 21, n0 + 22, n0 + 23]], sliver_f])
    return Mesh(v, f.astype(np.int64))


def query_points(rng: np.random.Generator, n: int) -> np.ndarray:
    """Over the fine part, over the gingiva, beyond every edge and below the huge face."""
    fine = np.column_stack([rng.uniform(-2.5, 2.5, (n, 2)), rng.uniform(-3, 3, n)])
    wide = rng.uniform([-6, -6, -9], [24, 6, 6], (n, 3))
    return np.concatenate([fine, wide])


def brute_force(mesh: Mesh, points: np.ndarray, normals_from: str = "faces"):
    """Every point against every triangle in float64 (numpy's closest_on_triangles), signed like
    distance.py: (signed distance, closest point, face, on_boundary)."""
    n, m = len(points), mesh.n_faces
    v, f = mesh.vertices, mesh.faces
    tri = np.tile(f, (n, 1))
    res = closest_on_triangles(np.repeat(points, m, axis=0), v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]])
    sq = res.sq_distance.reshape(n, m)
    best = np.argmin(sq, axis=1)
    pick = np.arange(n) * m + best
    feat = mesh_features(mesh)
    if normals_from == "faces":
        normal = feature_normal(feat, f, best, res.region[pick])
    else:
        normal = np.einsum("pk,pkj->pj", res.bary[pick], feat.vertex_normals[f[best]])
    side = np.einsum("ij,ij->i", points - res.point[pick], normal)
    signed = np.where(side < 0, -1.0, 1.0) * np.sqrt(sq[np.arange(n), best])
    return signed, res.point[pick], best, on_boundary(feat, f, best, res.region[pick])


def tree_bound(index: dd.DeviceSurfaceIndex) -> int:
    return 2 * index.tree.n_leaf - 1 + index.mesh.n_faces


@pytest.mark.parametrize("normals_from", ["faces", "vertices"])
def test_twin_equals_float64_brute_force_bit_for_bit(normals_from):
    mesh = uneven(1)
    pts = query_points(np.random.default_rng(2), 300)
    want_d, want_p, want_f, want_b = brute_force(mesh, pts, normals_from)
    got, work = twin(mesh, normals_from).query_counted(pts)
    # Same formula, same order, no FMA: the winner's distance is the brute force's minimum exactly.
    np.testing.assert_array_equal(np.abs(got.distance), np.abs(want_d))
    same = got.face == want_f  # exact ties (a shared edge or vertex) may pick another face
    assert same.mean() > 0.8
    np.testing.assert_array_equal(got.closest[same], want_p[same])
    np.testing.assert_array_equal(got.on_boundary[same], want_b[same])
    np.testing.assert_allclose(got.closest, want_p, rtol=0, atol=1e-12)
    clear = np.abs(want_d) > 1e-9
    np.testing.assert_array_equal(np.sign(got.distance[clear]), np.sign(want_d[clear]))
    assert (got.distance < 0).any() and (got.distance > 0).any() and got.on_boundary.any()
    assert work is not None and work.max() <= tree_bound(twin(mesh)) and work.min() >= 1


def test_twin_matches_distance_py_and_trimesh_on_an_arch_like_scan():
    from occlutrace_compute.synth import make_arch

    mesh = make_arch("upper", 1, 0.5).mesh
    rng = np.random.default_rng(3)
    pts = mesh.vertices[rng.choice(mesh.n_vertices, 1500, replace=False)] + rng.normal(0, 0.4, (1500, 3))
    got = twin(mesh).query(pts)
    cpu = SurfaceIndex(mesh).query(pts)
    # distance.py ranks candidates in float32 (it may keep a triangle tied within that rounding),
    # then recomputes in float64: ours is never farther, and within a nanometre.
    assert (np.abs(got.distance) <= np.abs(cpu.distance) + 1e-12).all()
    np.testing.assert_allclose(np.abs(got.distance), np.abs(cpu.distance), rtol=0, atol=1e-6)
    clear = np.abs(cpu.distance) > 1e-6
    np.testing.assert_array_equal(np.sign(got.distance[clear]), np.sign(cpu.distance[clear]))
    same = got.face == cpu.face
    np.testing.assert_array_equal(got.distance[same], cpu.distance[same])
    np.testing.assert_array_equal(got.on_boundary[same], cpu.on_boundary[same])
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    _, tm_dist, _ = trimesh.proximity.closest_point(tm, pts)
    np.testing.assert_allclose(np.abs(got.distance), tm_dist, rtol=0, atol=1e-6)


def _needle() -> trimesh.Trimesh:
    """A closed tetrahedron 10 mm long, 1 mm wide: around its tip, the closest feature is the tip
    vertex (or an edge) and a face normal signs about half of the outside points wrong."""
    v = np.array([[0.0, 0, 10], [1, 0, 0], [-0.5, 0.866, 0], [-0.5, -0.866, 0]])
    tm = trimesh.Trimesh(v, [[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]], process=False)
    tm.fix_normals()
    return tm


@pytest.mark.parametrize("shape", ["sphere", "needle"])
def test_closed_mesh_sign_is_inside_outside(shape):
    rng = np.random.default_rng(4)
    if shape == "sphere":
        tm = trimesh.creation.icosphere(subdivisions=3, radius=5.0)
        pts = rng.uniform(-8, 8, (3000, 3))
        # Points near vertices and edges too, where only pseudo-normals sign right.
        pts[:500] = tm.vertices[rng.choice(len(tm.vertices), 500)] * rng.uniform(0.9, 1.1, (500, 1))
    else:
        tm = _needle()
        pts = np.concatenate(
            [[0, 0, 10] + rng.normal(0, 0.3, (1000, 3)), rng.uniform([-1.5, -1.5, -1], [1.5, 1.5, 11], (1000, 3))]
        )
    mesh = Mesh(np.asarray(tm.vertices), np.asarray(tm.faces, dtype=np.int64))
    got = twin(mesh).query(pts)
    inside = tm.contains(pts)
    clear = np.abs(got.distance) > 1e-6
    np.testing.assert_array_equal(got.distance[clear] < 0, inside[clear])
    assert not got.on_boundary.any() and inside.any() and not inside.all()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), cutoff=st.floats(0.0, 4.0), rounding=st.booleans(), pick=st.floats(0, 1))
def test_uneven_meshes_any_cutoff_exact_and_within_the_bound(seed, cutoff, rounding, pick):
    mesh = uneven(seed % 5)
    index = twin(mesh)
    if rounding:  # cutoffs where (limit + rho) - rho < limit for distance.py's rho
        rho = SurfaceIndex(mesh).rho
        c = np.linspace(0.05, 3.0, 20_000)
        bad = c[(c + rho) - rho < c]
        cutoff = float(bad[int(pick * (len(bad) - 1))])
    pts = query_points(np.random.default_rng(seed), 60)
    got, work = index.query_counted(pts, max_distance=cutoff)
    want, _, _, _ = brute_force(mesh, pts)
    near, far = np.abs(want) <= cutoff, np.abs(want) > cutoff
    np.testing.assert_array_equal(np.abs(got.distance[near]), np.abs(want[near]))
    assert np.isnan(got.distance[far]).all() and (got.face[far] == -1).all() and np.isnan(got.closest[far]).all()
    clear = near & (np.abs(want) > 1e-9)
    np.testing.assert_array_equal(np.sign(got.distance[clear]), np.sign(want[clear]))
    assert work is not None and work.max() <= tree_bound(index)
    cpu = SurfaceIndex(mesh).query(pts, max_distance=cutoff)
    both = np.isfinite(cpu.distance) & np.isfinite(got.distance)
    np.testing.assert_allclose(np.abs(got.distance[both]), np.abs(cpu.distance[both]), rtol=0, atol=1e-6)
    edge = np.abs(np.abs(want) - cutoff) <= 1e-6  # only within distance.py's float32 rounding of it
    np.testing.assert_array_equal(np.isfinite(got.distance)[~edge], np.isfinite(cpu.distance)[~edge])


def test_points_beyond_the_cutoff_outside_the_mesh_box_cost_one_box_test():
    """The stated best case, which a search without the cutoff in its bound would not meet."""
    mesh = height_field(bumpy, 3.0, 61)
    index = twin(mesh)
    pts = np.random.default_rng(5).uniform(-3, 3, (400, 3)) + [0, 0, 20]  # 20 mm above a 1 mm-high patch
    res, work = index.query_counted(pts, max_distance=2.0)
    assert np.isnan(res.distance).all()
    assert work is not None and (work == 1).all()
    _, work_all = index.query_counted(pts)
    assert work_all is not None and (work_all > 10).all()  # without a cutoff it has to search


def test_work_per_point_is_logarithmic_on_a_fine_surface():
    """Bounded by construction (every node once); on a fine scan-like surface far below it."""
    mesh = height_field(bumpy, 3.0, 121)  # 28.8k triangles
    index = twin(mesh)
    pts = np.random.default_rng(6).uniform([-3, -3, -0.5], [3, 3, 1.5], (2000, 3))
    _, work = index.query_counted(pts, max_distance=0.5)
    assert work is not None and work.max() <= tree_bound(index)
    assert np.median(work) < 0.02 * mesh.n_faces


def test_tree_holds_every_face_once_with_boxes_that_contain_them():
    for seed in range(3):
        mesh = uneven(seed)
        tree = dd.build_tree(mesh.vertices, mesh.faces)
        lf = tree.leaf_faces
        np.testing.assert_array_equal(np.sort(lf[lf >= 0]), np.arange(mesh.n_faces))
        leaves = lf.reshape(tree.n_leaf, dd.LEAF_SIZE)
        assert ((leaves >= 0).sum(axis=1) >= 1).all()  # no empty leaf: padding spread by the splits
        # padding only at the end of a leaf (the kernel stops at the first -1)
        assert all(np.all(np.diff((row < 0).astype(int)) >= 0) for row in leaves)
        for leaf, faces in enumerate(leaves):
            corners = mesh.vertices[mesh.faces[faces[faces >= 0]]].reshape(-1, 3)
            node = tree.node_box[tree.n_leaf + leaf]
            assert (corners >= node[:3]).all() and (corners <= node[3:]).all()
        parent, child = tree.node_box[1 : tree.n_leaf], tree.node_box[2 : 2 * tree.n_leaf].reshape(-1, 2, 6)
        assert (parent[:, :3] <= child[:, :, :3].min(axis=1)).all() and (
            parent[:, 3:] >= child[:, :, 3:].max(axis=1)
        ).all()
        assert tree.depth == int(np.log2(tree.n_leaf)) and tree.n_leaf * dd.LEAF_SIZE < 2 * mesh.n_faces + dd.LEAF_SIZE


@pytest.mark.parametrize("n_faces", [1, 2, 3, 5, 9, 33])
def test_tiny_meshes_and_empty_queries(n_faces):
    rng = np.random.default_rng(n_faces)
    mesh = Mesh(rng.normal(size=(3 * n_faces, 3)), np.arange(3 * n_faces).reshape(-1, 3))
    index = twin(mesh)
    pts = rng.normal(size=(50, 3)) * 2
    want, _, _, _ = brute_force(mesh, pts)
    np.testing.assert_array_equal(np.abs(index.query(pts).distance), np.abs(want))
    empty = index.query(np.zeros((0, 3)))
    assert empty.distance.shape == (0,) and empty.closest.shape == (0, 3)


def test_degenerate_triangles_and_a_point_on_the_surface():
    v = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0], [0, 1, 0], [3, 3, 3]])
    f = np.array([[0, 1, 2], [3, 4, 3], [0, 1, 3], [5, 5, 5]])  # a segment, a point, a real one, a point
    mesh = Mesh(v, f)
    pts = np.array([[0.2, 0.2, 0.0], [0.5, -1, 0], [3, 3, 4], [0, 1, 1], [5, 5, 5]])
    want, _, _, _ = brute_force(mesh, pts)
    got = twin(mesh).query(pts)
    np.testing.assert_array_equal(np.abs(got.distance), np.abs(want))
    assert abs(got.distance[0]) <= 1e-15  # on the real triangle (rounding of the closest point)


def test_bad_input_is_rejected_clearly():
    mesh = uneven(0)
    index = twin(mesh)
    with pytest.raises(ValueError, match="shape"):
        index.query(np.zeros((4, 2)))
    with pytest.raises(InputRejected, match="non-finite"):
        index.query(np.array([[0.0, np.nan, 0.0]]))
    with pytest.raises(ValueError, match="max_distance"):
        index.query(np.zeros((1, 3)), max_distance=-1.0)
    with pytest.raises(InputRejected, match="no triangles"):
        twin(Mesh(np.zeros((3, 3)), np.zeros((0, 3), dtype=np.int64)))
    with pytest.raises(InputRejected, match="non-finite"):
        twin(Mesh(np.array([[0.0, 0, 0], [1, 0, np.inf], [0, 1, 0]]), np.array([[0, 1, 2]])))
    with pytest.raises(ValueError, match="normals_from"):
        twin(mesh, "edges")
    with pytest.raises(ValueError, match="device"):
        dd.DeviceSurfaceIndex(mesh, device="tpu")  # type: ignore[arg-type]


def test_auto_without_a_gpu_is_distance_py_and_cuda_refuses_clearly(monkeypatch):
    monkeypatch.setattr(dd, "cuda_available", lambda: False)
    assert dd.resolve_backend("auto") == "numpy"
    mesh = uneven(0)
    pts = query_points(np.random.default_rng(7), 40)
    auto = dd.signed_distance(pts, mesh, max_distance=1.0)
    np.testing.assert_array_equal(auto.distance, SurfaceIndex(mesh).query(pts, 1.0).distance)
    with pytest.raises(RuntimeError, match="cuda"):
        dd.DeviceSurfaceIndex(mesh, device="cuda")
    monkeypatch.setattr(dd, "cuda_available", lambda: True)
    assert dd.resolve_backend("auto") == "cuda"


def test_cpu_twin_build_is_cached_by_source(tmp_path):
    first = dd.compile_cpu_twin(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert dd.compile_cpu_twin(tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert list(tmp_path.iterdir()) == [first]  # no temporary left behind


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_cuda_kernel_parameters_match_the_launch(tmp_path):
    """The GPU entry point takes exactly what query passes, in order and width (checked on the PTX:
    pointers and int64 as 64-bit integers, ints as 32-bit, doubles as f64), no GPU needed."""
    out = tmp_path / "pmd.ptx"
    subprocess.run(
        [NVCC, "-ptx", "-arch=sm_80", str(kernels_dir() / dd.KERNEL), "-o", str(out)], check=True, timeout=300
    )
    params = re.search(r"\.entry point_mesh_distance\((.*?)\)", out.read_text(), re.DOTALL).group(1)
    arrays = {np.dtype(np.float64): "u64"}
    sample = (
        [np.zeros(1)] * 2
        + [1]
        + [np.zeros(1)] * 2
        + [1, 4]
        + [np.zeros(1)] * 8
        + [1.0, 1.0, 0]
        + [np.zeros(1)] * 4
        + [None]
    )
    want = []
    for x in dd.cuda_args(sample):
        if isinstance(x, np.ndarray):
            want.append(arrays[x.dtype])
        else:
            want.append({np.dtype(np.int64): "u64", np.dtype(np.uint64): "u64", np.dtype(np.int32): "u32",
                         np.dtype(np.float64): "f64"}[x.dtype])  # fmt: skip
    assert re.findall(r"\.param \.(\w+) ", params) == want


def test_surface_index_for_a_jobs_device(monkeypatch):
    mesh = uneven(2)
    pts = query_points(np.random.default_rng(8), 30)
    monkeypatch.setattr(dd, "cuda_available", lambda: False)
    assert isinstance(dd.surface_index(mesh, device="cpu"), SurfaceIndex)
    assert isinstance(dd.surface_index(mesh, device="auto"), SurfaceIndex)  # no GPU: distance.py
    on_twin = dd.surface_index(mesh, device="cpu-twin")
    assert isinstance(on_twin, dd.DeviceSurfaceIndex) and on_twin.backend == "cpu-twin"
    want, _, _, _ = brute_force(mesh, pts)
    np.testing.assert_array_equal(np.abs(on_twin.query(pts).distance), np.abs(want))
    with pytest.raises(RuntimeError, match="cuda"):
        dd.surface_index(mesh, device="cuda")
    with pytest.raises(ValueError, match="device"):
        dd.surface_index(mesh, device="gpu")


def test_kernel_compiles_with_nvrtc_as_cupy_does():
    """The CUDA path's real compile: NVRTC, no standard headers, the module's own options."""
    import ctypes

    from test_nn_grid_kernel import NVRTC

    if NVRTC is None:
        pytest.skip("libnvrtc not found (pip install nvidia-cuda-nvrtc to run)")
    lib = ctypes.CDLL(NVRTC)
    prog = ctypes.c_void_p()
    source = kernel_source(dd.KERNEL).encode()  # the text the module hands CuPy
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), source, dd.KERNEL.encode(), 0, None, None) == 0
    try:
        options = [o.encode() for o in (*dd.CUDA_OPTIONS, "--gpu-architecture=compute_90")]
        rc = lib.nvrtcCompileProgram(prog, len(options), (ctypes.c_char_p * len(options))(*options))
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        assert rc == 0, log.value.decode(errors="replace")
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetPTX(prog, ptx)
        assert b".entry point_mesh_distance(" in ptx.value
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def test_cpu_twin_refuses_a_cache_folder_others_can_write(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(RuntimeError, match="not private"):
        dd.compile_cpu_twin(shared)
    assert list(shared.iterdir()) == []


def test_the_jobs_reference_index_helper_takes_a_device_index():
    """pipeline._reference_index(surface_index, loading) builds `features` and deviation checks
    `.mesh`: the device index has both (the job passes partial(surface_index, device=...))."""
    from concurrent.futures import Future
    from functools import partial
    from types import SimpleNamespace

    from occlutrace_compute.analysis.deviation import deviation
    from occlutrace_compute.jobs.pipeline import _reference_index

    mesh = height_field(bumpy, 3.0, 41)
    loading: Future = Future()
    loading.set_result(SimpleNamespace(mesh=mesh))
    index = _reference_index(partial(dd.surface_index, device="cpu-twin"), loading)
    assert isinstance(index, dd.DeviceSurfaceIndex) and index.mesh is mesh
    moved = Mesh(mesh.vertices + [0.0, 0.0, 0.02], mesh.faces)
    on_twin = deviation(moved, mesh, reference_index=index)  # type: ignore[arg-type]
    on_cpu = deviation(moved, mesh)
    np.testing.assert_allclose(on_twin.distance, on_cpu.distance, rtol=0, atol=1e-6, equal_nan=True)


class _DeviceArray(np.ndarray):
    """A stand-in for a CuPy array: host memory, but a type the fake launch can tell apart."""


def _fake_cupy(launches: list):
    """A CuPy stand-in (mocks only the GPU): arrays are _DeviceArray, the launch checks the grid and
    every argument's type as CuPy would pack it, then runs the CPU twin on the same memory."""
    import contextlib
    import ctypes
    import types

    lib = dd._cpu_library(str(dd.compile_cpu_twin()))

    def dev(a):
        return np.ascontiguousarray(a).view(_DeviceArray)

    def kernel(grid, block, args):
        n = int(args[2])
        assert grid[0] * block[0] >= n and block[0] <= 1024
        c_args = []
        for i, x in enumerate(args):
            if isinstance(x, np.ndarray):
                assert isinstance(x, _DeviceArray), f"argument {i} is host memory"
                c_args.append(ctypes.c_void_p(x.ctypes.data))
            elif i in dd._INT64_ARGS:
                assert type(x) is np.int64, i
                c_args.append(int(x))
            elif i in dd._INT32_ARGS:
                assert type(x) is np.int32, i
                c_args.append(int(x))
            elif i in dd._FLOAT64_ARGS:
                assert type(x) is np.float64, i
                c_args.append(ctypes.c_double(float(x)))
            else:
                assert type(x) is np.uint64 and x == 0, f"argument {i}: {type(x)}"  # a null pointer
                c_args.append(None)
        launches.append(n)
        lib.point_mesh_distance_cpu(*c_args)

    cuda = types.SimpleNamespace(
        Device=lambda i: contextlib.nullcontext(), runtime=types.SimpleNamespace(getDevice=lambda: 0)
    )
    fake = types.SimpleNamespace(
        cuda=cuda,
        asarray=dev,
        ascontiguousarray=dev,
        full=lambda shape, value, dtype=np.float64: dev(np.full(shape, value, dtype=dtype)),
        zeros=lambda shape, dtype=np.float64: dev(np.zeros(shape, dtype=dtype)),
        asnumpy=lambda a: np.asarray(a).view(np.ndarray).copy(),
    )
    return fake, kernel


@pytest.mark.parametrize("count_work", [False, True])
def test_cuda_branch_with_a_fake_cupy_gives_the_twins_answers(monkeypatch, count_work):
    """The CUDA branch of DeviceSurfaceIndex (uploads, argument types, launch grid, null work
    pointer, download) on every run, against a CuPy stand-in that runs the twin."""
    import sys

    launches: list[int] = []
    fake, kernel = _fake_cupy(launches)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(dd, "cuda_available", lambda: True)
    monkeypatch.setattr(dd, "_cuda_function", lambda index: kernel)
    mesh = uneven(3)
    pts = query_points(np.random.default_rng(9), 200)
    on_cuda = dd.DeviceSurfaceIndex(mesh, device="cuda")
    assert on_cuda.backend == "cuda"
    got, work = on_cuda.query_counted(pts, 0.7, count_work=count_work)
    want, work_twin = twin(mesh).query_counted(pts, 0.7)
    assert launches == [len(pts)]
    assert type(got.distance) is np.ndarray and got.on_boundary.dtype == bool
    np.testing.assert_array_equal(got.distance, want.distance)
    np.testing.assert_array_equal(got.closest, want.closest)
    np.testing.assert_array_equal(got.face, want.face)
    assert (work is None) if not count_work else np.array_equal(work, work_twin)
    assert dd.DeviceSurfaceIndex(mesh, device="cuda").query(np.zeros((0, 3))).distance.shape == (0,)
    assert launches == [len(pts)]  # nothing launched for no points


def test_a_face_with_two_equal_first_corners_is_its_segment():
    # the kernel's edge-AB test held vacuously when a == b: every point got corner a
    v = np.array([[0.0, 0, 0], [10, 0, 0]])
    mesh = Mesh(v, np.array([[0, 0, 1]]))
    pts = np.array([[5.0, 1, 0], [9.0, 0, 2], [12.0, 0, 0], [-1.0, 0, 0]])
    got = twin(mesh).query(pts)
    np.testing.assert_allclose(np.abs(got.distance), [1.0, 2.0, 2.0, 1.0], atol=1e-12)


def _segment_distance(p: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Distance of p[i] to segment x[i]-y[i] by the textbook clamp (not the code under test)."""
    t = np.clip(np.einsum("ij,ij->i", p - x, y - x) / np.einsum("ij,ij->i", y - x, y - x), 0.0, 1.0)
    return np.linalg.norm(p - (x + t[:, None] * (y - x)), axis=1)


def test_straight_line_faces_give_the_numpy_answer_bit_for_bit():
    # zero-area faces with three distinct collinear corners (the loader drops them; an index
    # built from arrays does not): the kernel's side fallback is numpy's, bit for bit, and both
    # are the distance to the nearest side
    rng = np.random.default_rng(8)
    o, d = rng.normal(0, 5, (40, 3)), rng.normal(0, 1, (40, 3))
    v = np.concatenate([o + s * d for s in rng.uniform(-3, 3, (3, 40, 1))])
    f = np.arange(120).reshape(3, 40).T
    mesh = Mesh(v, f)
    pts = rng.normal(0, 5, (300, 3))
    want_d, _, _, _ = brute_force(mesh, pts)
    got = twin(mesh).query(pts)
    np.testing.assert_array_equal(np.abs(got.distance), np.abs(want_d))
    n, m = len(pts), len(f)
    p = np.repeat(pts, m, axis=0)
    a, b, c = (np.tile(v[f[:, k]], (n, 1)) for k in range(3))
    sides = np.minimum.reduce([_segment_distance(p, x, y) for x, y in ((a, b), (b, c), (c, a))])
    np.testing.assert_allclose(np.abs(got.distance), sides.reshape(n, m).min(axis=1), rtol=1e-9, atol=1e-9)
