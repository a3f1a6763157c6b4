"""Exact point-to-mesh distance: ours (SurfaceIndex) beside libigl's point_mesh_squared_distance,
same points, same run, on synthetic arch scans (fine teeth, coarser gingiva).

Cases:
- far: 400 points 2.5-4 mm off the arch (no surface within any cutoff), at the cutoffs the
  product uses (0.2/0.5/1.0/1.5/2.0 mm) and at cutoffs where (limit + rho) - rho < limit (the
  rounding that made the old stopping rule scan the whole mesh);
- mixed: 400 points 0-4 mm off the arch at the same cutoffs;
- scan: every vertex of a second, independent scan of the same arch (~50 um apart), as in a
  deviation map (cutoff 1 mm) and without a cutoff.

libigl has no cutoff: it always returns the exact distance (AABB tree built per call: both the
build and the query are timed, ours likewise builds its index in "build+query").

Device path (analysis/distance_device.py, kernels/point_mesh_distance.cu): its CPU twin (the same
kernel source built with g++, --threads OpenMP threads, default 1) is a column of the same run,
and the CUDA build with --device cuda. --warp adds NVIDIA Warp's mesh_query_point_sign_normal
(float32 meshes; CPU, or CUDA with --device cuda) when warp-lang is importable: the measured
alternative to our kernel (not a dependency).
--pair DIR instead: the pair job's own deviation query (bench_job_stages' data, e.g.
/tmp/occlutrace-stages/pair_ply_binary: MOVING placed by its true pose, every vertex against FIXED
at the deviation's search cutoff 3 mm), ours one thread and two (as deviation() runs it) beside
libigl on the same points, and the work counts (neighbours asked, triangle tests: load-free);
--old CHECKOUT adds that checkout's distance.py (its SurfaceIndex, in turn in the same run: the
before/after of a change; a SurfaceIndex that signs from the whole mesh's features gets them
built and timed first, as its deviation did).
--bite DIR instead: the contact stage's distance work (bench_job_stages' bite data, e.g.
/tmp/occlutrace-stages/bite_ply_binary): each arch's vertices against the other arch at 0.5 mm,
index build and query CPU per side, beside libigl on the same points (and --old's). Each row is printed once: the median of --repeat runs.
Usage: python bench/bench_distance.py [--spacing 0.15] [--repeat 3] [--threads 1] [--device cuda] [--warp]
       python bench/bench_distance.py --pair DIR [--repeat 5] [--old /work/main]
       python bench/bench_distance.py --bite DIR [--repeat 5] [--old /work/main]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np

from occlutrace_compute.analysis.distance import SurfaceIndex
from occlutrace_compute.analysis.distance_device import DeviceSurfaceIndex
from occlutrace_compute.analysis.triangles import mesh_features
from occlutrace_compute.synth import make_arch

T = TypeVar("T")
CPU: dict[int, float] = {}  # CPU seconds (all threads) of the best run of each timed call, by id of its result


def _best(fn: Callable[[], T], repeat: int) -> tuple[float, T]:  # repeat >= 1
    """Best wall seconds of `repeat` runs (a shared machine: the least disturbed run); its CPU
    seconds go to CPU[id(result)]."""
    best, cpu = np.inf, 0.0
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall = time.perf_counter() - t0
        if wall < best:
            best, cpu = wall, time.process_time() - c0
    CPU[id(out)] = cpu
    return best, out


def _build_and_query(mesh, points: np.ndarray, cutoff: float | None):
    return SurfaceIndex(mesh).query(points, max_distance=cutoff)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spacing", type=float, default=0.15)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="OpenMP threads of the kernel's CPU twin")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: add the kernel's CUDA build")
    ap.add_argument("--warp", action="store_true", help="add NVIDIA Warp's mesh query as a column")
    ap.add_argument(
        "--pair", type=Path, help="a pair case folder (fixed.*, moving.*, truth.json): the job's query only"
    )
    ap.add_argument("--bite", type=Path, help="a bite case folder (upper.*, lower.*): the contact queries only")
    ap.add_argument(
        "--old", type=Path, help="with --pair/--bite: also another checkout's distance.py (e.g. /work/main)"
    )
    args = ap.parse_args()
    import igl

    if args.pair is not None:
        pair_case(args.pair, args.repeat, args.old)
        return
    if args.bite is not None:
        bite_case(args.bite, args.repeat, args.old)
        return

    mesh = make_arch("upper", 3, args.spacing).mesh
    v, f = np.ascontiguousarray(mesh.vertices), np.ascontiguousarray(mesh.faces.astype(np.int64))
    t_build, index = _best(lambda: SurfaceIndex(mesh), args.repeat)
    print(
        f"arch: {mesh.n_vertices} vertices, {mesh.n_faces} faces; rho {index.rho:.4f} mm; our index build {t_build:.3f} s; "
        f"best of {args.repeat}"
    )
    DeviceSurfaceIndex(mesh, device="cpu-twin")  # compiles the twin once (cached), outside the timings
    t_dev, twin = _best(lambda: DeviceSurfaceIndex(mesh, device="cpu-twin", threads=args.threads), args.repeat)
    devices = {f"twin({args.threads} thr)": twin}
    line = f"device index build (tree + features; host numpy): cpu twin {t_dev:.3f} s"
    if args.device == "cuda":
        t_cuda, devices["cuda"] = _best(lambda: DeviceSurfaceIndex(mesh, device="cuda"), args.repeat)
        line += f", cuda {t_cuda:.3f} s (incl. upload)"
    print(line)
    warp = _warp_query(mesh, args.device) if args.warp else None
    rng = np.random.default_rng(0)
    normals = mesh_features(mesh).vertex_normals
    sel = rng.choice(mesh.n_vertices, 400, replace=False)
    sign = rng.choice([-1.0, 1.0], 400)[:, None]
    far = mesh.vertices[sel] + sign * normals[sel] * rng.uniform(2.5, 4.0, 400)[:, None]
    mixed = mesh.vertices[sel] + sign * normals[sel] * rng.uniform(0.0, 4.0, 400)[:, None]
    c = np.linspace(0.2, 2.0, 20_000)
    rounding = c[(c + index.rho) - index.rho < c]
    cutoffs = [0.2, 0.5, 1.0, 1.5, 2.0, *rounding[[0, len(rounding) // 2, -1]]]
    for name, pts in (("far", far), ("mixed", mixed)):
        t_igl, igl_out = _best(partial(igl.point_mesh_squared_distance, pts, v, f), args.repeat)
        exact = np.sqrt(igl_out[0])
        worst, err = 0.0, 0.0
        for cutoff in cutoffs:
            t, res = _best(partial(index.query, pts, max_distance=cutoff), args.repeat)
            worst = max(worst, t)
            near = exact <= cutoff - 1e-9
            assert np.isnan(res.distance[exact > cutoff + 1e-9]).all()
            err = max(err, float(np.max(np.abs(np.abs(res.distance[near]) - exact[near]), initial=0.0)))
        dev_text = []
        for dev_name, dev in devices.items():
            d_worst, d_err = 0.0, 0.0
            for cutoff in cutoffs:
                t, res = _best(partial(dev.query, pts, max_distance=cutoff), args.repeat)
                d_worst = max(d_worst, t)
                near = exact <= cutoff - 1e-9
                assert np.isnan(res.distance[exact > cutoff + 1e-9]).all()
                d_err = max(d_err, float(np.max(np.abs(np.abs(res.distance[near]) - exact[near]), initial=0.0)))
            dev_text.append(f"{dev_name} worst {d_worst * 1000:.1f} ms (max |dev - libigl| {d_err * 1000:.2e} um)")
        print(
            f"{name}: 400 points, {len(cutoffs)} cutoffs (3 of them rounding: {', '.join(f'{x:.6f}' for x in cutoffs[5:])} mm): "
            f"ours worst {worst * 1000:.1f} ms per query (max |ours - libigl| {err * 1000:.2e} um); "
            f"libigl {t_igl * 1000:.1f} ms (no cutoff, AABB built per call); {'; '.join(dev_text)}"
        )

    scan = make_arch("upper", 3, args.spacing * 1.07).mesh.vertices  # an independent sampling
    t_igl, igl_out = _best(lambda: igl.point_mesh_squared_distance(scan, v, f), args.repeat)
    sq, c_igl = igl_out[0], CPU[id(igl_out)]
    for cutoff in (1.0, None):
        t_q, res = _best(partial(index.query, scan, max_distance=cutoff), args.repeat)
        t_all, both = _best(partial(_build_and_query, mesh, scan, cutoff), args.repeat)
        ok = np.isfinite(res.distance)
        err = np.max(np.abs(np.abs(res.distance[ok]) - np.sqrt(sq[ok])))
        print(
            f"scan: {len(scan)} points vs the arch, cutoff {cutoff}: ours query {t_q:.3f} s (cpu {CPU[id(res)]:.3f}), "
            f"build+query {t_all:.3f} s (cpu {CPU[id(both)]:.3f}); libigl {t_igl:.3f} s (cpu {c_igl:.3f}); "
            f"max |ours - libigl| {err * 1000:.2e} um"
        )
        for dev_name, dev in devices.items():
            t_d, got = _best(partial(dev.query, scan, max_distance=cutoff), args.repeat)
            same_nan = np.array_equal(np.isnan(got.distance), np.isnan(res.distance))
            both_ok = ok & np.isfinite(got.distance)
            d_err = np.max(np.abs(np.abs(got.distance[both_ok]) - np.sqrt(sq[both_ok])))
            d_ours = np.max(np.abs(got.distance[both_ok] - res.distance[both_ok]))
            print(
                f"  {dev_name}: query {t_d:.3f} s (cpu {CPU[id(got)]:.3f}); max |dev - libigl| {d_err * 1000:.2e} um, "
                f"max |dev - ours| (signed) {d_ours * 1000:.2e} um, same NaNs as ours: {same_nan}"
            )
        if warp is not None:
            t_w, w_dist = _best(partial(warp, scan, 1e6 if cutoff is None else cutoff), args.repeat)
            both_ok = ok & np.isfinite(w_dist)
            w_err = np.max(np.abs(np.abs(w_dist[both_ok]) - np.sqrt(sq[both_ok])))
            flip = both_ok & (np.sign(w_dist) != np.sign(res.distance))
            print(
                f"  warp (float32, {args.device}): query {t_w:.3f} s (cpu {CPU[id(w_dist)]:.3f}); max |warp - libigl| "
                f"{w_err * 1000:.2e} um; sign differs from ours at {int(flip.sum())} of {int(both_ok.sum())} points "
                f"(|distance| there up to {np.max(np.abs(res.distance[flip]), initial=0) * 1000:.2f} um)"
            )


class _Counting:
    """The index's kd-tree, counting the neighbours asked for (points x k per query)."""

    def __init__(self, tree) -> None:
        self.tree, self.asked = tree, 0

    def query(self, p, k, distance_upper_bound):
        self.asked += len(p) * k
        return self.tree.query(p, k=k, distance_upper_bound=distance_upper_bound)


def _old_distance(checkout: Path):
    """distance.py of another checkout (e.g. /work/main) as its own module, for a same-run A/B:
    its SurfaceIndex on this checkout's triangles.py and mesh model."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("old_distance", checkout / "occlutrace_compute/analysis/distance.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pair_case(folder: Path, repeat: int, old: Path | None = None) -> None:
    """The deviation query of a pair job, ours (and `old`'s) beside libigl, runs in turn (same points)."""
    import igl

    from occlutrace_compute.analysis.deviation import FAR_FACTOR, _query_halves
    from occlutrace_compute.analysis.distance import one_openmp_thread
    from occlutrace_compute.meshes import load_mesh

    fixed, moving = (load_mesh(data=next(folder.glob(f"{r}.*")).read_bytes(), name=r).mesh for r in ("fixed", "moving"))
    pose = np.asarray(json.loads((folder / "truth.json").read_text())["T_fixed_moving"])
    pts = moving.transformed(pose).vertices
    v, f = np.ascontiguousarray(fixed.vertices), np.ascontiguousarray(fixed.faces.astype(np.int64))
    cutoff = FAR_FACTOR * 1.0
    rows: dict[str, list[tuple[float, float]]] = {}  # one (wall, CPU) per run and row

    def timed(name: str, fn: Callable[[], T]) -> T:
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        rows.setdefault(name, []).append((time.perf_counter() - w, time.process_time() - c))
        return out

    def one_thread(index: SurfaceIndex):
        with one_openmp_thread():
            return index.query(pts, max_distance=cutoff)

    contenders = {"ours": SurfaceIndex}
    if old is not None:
        contenders[f"old ({old})"] = _old_distance(old).SurfaceIndex
    results = {}
    for _ in range(repeat):  # in turn, so that a busy moment hits every contender alike
        for name, cls in contenders.items():
            index = timed(f"{name}: index build", partial(cls, fixed, name="reference"))
            if not hasattr(index, "_feature_signs"):  # a query that signs from the whole mesh's
                # features: its deviation built them first (with one thread; ours needs none)
                with one_openmp_thread():
                    timed(f"{name}: the whole mesh's features", lambda: index.features)
            results[name] = timed(f"{name}: query, 1 thread", partial(one_thread, index))
            timed(f"{name}: query, 2 threads (deviation)", partial(_query_halves, index, pts, cutoff))
        sq = timed("libigl: build + query", partial(igl.point_mesh_squared_distance, pts, v, f))[0]
    res = results["ours"]
    ok = np.isfinite(res.distance)
    err = np.max(np.abs(np.abs(res.distance[ok]) - np.sqrt(sq[ok])))
    print(
        f"pair {folder.name}: {len(pts)} points vs {fixed.n_faces} faces, cutoff {cutoff} mm; "
        f"max |ours - libigl| {err * 1000:.2e} um"
    )
    for name, cls in contenders.items():
        index = cls(fixed, name="reference")
        asked, pairs = _work(index, pts, cutoff)
        other = results[name]
        same = np.array_equal(np.isnan(other.distance), np.isnan(res.distance))
        diff = np.nanmax(np.abs(other.distance - res.distance))
        print(
            f"  {name}: rho {index.rho:.4f} mm, {index._n_proxies} proxies; {asked} neighbours asked, "
            f"{pairs} triangle tests; same NaNs as ours: {same}, max |signed difference| {diff * 1000:.2e} um"
        )
    print(f"median of {repeat} (wall / CPU s):")
    for name, got in rows.items():
        walls, cpus = zip(*got)
        print(f"  {name}: {np.median(walls):.3f} / {np.median(cpus):.3f}")
    for name in contenders:  # what the deviation pays on one thread: build (+ features) + query
        parts = [r for r in rows if r.startswith(f"{name}: ") and "2 threads" not in r]
        total = sum(float(np.median([c for _, c in rows[r]])) for r in parts)
        print(f"  {name}: build + features + 1-thread query, CPU {total:.3f}")


def bite_case(folder: Path, repeat: int, old: Path | None = None) -> None:
    """The contact stage's distance work: each arch's vertices (the lower by its true pose, in
    occlusion) against the other arch's index at the contact cutoff (0.5 mm), built as contacts
    builds it, one thread, index build and query CPU (thread_time), ours and
    `old`'s in turn, beside libigl (no cutoff) on the same points."""
    import igl

    from occlutrace_compute.analysis.distance import one_openmp_thread
    from occlutrace_compute.meshes import load_mesh

    upper, lower = (load_mesh(data=next(folder.glob(f"{r}.*")).read_bytes(), name=r).mesh for r in ("upper", "lower"))
    lower = lower.transformed(
        np.asarray(json.loads((folder / "truth.json").read_text())["T_upper_lower"])
    )  # in occlusion
    cutoff = 0.5
    from occlutrace_compute.analysis import distance

    # each contender's index for a side as its contacts builds it: over the other arch's faces
    # near this arch where the checkout has faces_near (the selection timed with the build)
    contenders = {"ours": distance}
    if old is not None:
        contenders[f"old ({old})"] = _old_distance(old)

    def built_for(module, other, points: np.ndarray, name: str):
        near = getattr(module, "faces_near", None)
        if near is None:
            return module.SurfaceIndex(other, name=name)
        return module.SurfaceIndex(other, name=name, faces=near(other, points, cutoff))

    rows: dict[str, list[float]] = {}
    answers: dict[str, list[np.ndarray]] = {}
    with one_openmp_thread():
        for _ in range(repeat):
            for name, module in contenders.items():
                answers[name] = []
                for side, (mesh, other) in {"upper": (upper, lower), "lower": (lower, upper)}.items():
                    c = time.thread_time()
                    index = built_for(module, other, mesh.vertices, side)
                    rows.setdefault(f"{name}: {side} index build", []).append(time.thread_time() - c)
                    c = time.thread_time()
                    answers[name].append(index.query(mesh.vertices, max_distance=cutoff).distance)
                    rows.setdefault(f"{name}: {side} query", []).append(time.thread_time() - c)
            for side, (mesh, other) in {"upper": (upper, lower), "lower": (lower, upper)}.items():
                c = time.thread_time()
                igl.point_mesh_squared_distance(mesh.vertices, other.vertices, other.faces.astype(np.int64))
                rows.setdefault(f"libigl: {side} build + query (no cutoff)", []).append(time.thread_time() - c)
    for name in contenders:
        same = all(np.array_equal(np.isnan(a), np.isnan(b)) for a, b in zip(answers[name], answers["ours"]))
        diff = max(float(np.nanmax(np.abs(a - b), initial=0.0)) for a, b in zip(answers[name], answers["ours"]))
        print(f"  {name}: same NaNs as ours: {same}, max |signed difference| {diff * 1000:.2e} um")
    print(f"bite {folder.name}: upper {upper.n_vertices} / lower {lower.n_vertices} vertices, cutoff {cutoff} mm; "
          f"CPU s (thread_time), median of {repeat}:")  # fmt: skip
    for name, got in rows.items():
        print(f"  {name}: {np.median(got):.3f}")
    for name in contenders:
        total = sum(float(np.median(v)) for r, v in rows.items() if r.startswith(f"{name}: "))
        print(f"  {name}: both sides, builds + queries: {total:.3f}")


def _work(index: SurfaceIndex, pts: np.ndarray, cutoff: float) -> tuple[int, int]:
    """Neighbours asked of the tree and triangle tests of one query (load-free work counts)."""
    counting = _Counting(index._tree)
    index._tree = counting  # type: ignore[assignment]
    pairs = 0
    score = index._sq_to_faces

    def counted(p32: np.ndarray, faces: np.ndarray) -> np.ndarray:
        nonlocal pairs
        pairs += len(faces)
        return score(p32, faces)

    index._sq_to_faces = counted  # type: ignore[method-assign]
    index.query(pts, max_distance=cutoff)
    return counting.asked, pairs


def _warp_query(mesh, device: str):
    """NVIDIA Warp's signed mesh query as a callable (points, cutoff) -> signed distances (NaN
    beyond the cutoff); kernel compiled and mesh built here, outside the timings."""
    import warp as wp

    wp.config.quiet = True
    wp.init()
    dev = "cuda:0" if device == "cuda" else "cpu"

    @wp.kernel
    def query(mesh_id: wp.uint64, pts: wp.array(dtype=wp.vec3), max_dist: float, out: wp.array(dtype=float)):  # type: ignore[valid-type]
        tid = wp.tid()
        p = pts[tid]
        q = wp.mesh_query_point_sign_normal(mesh_id, p, max_dist)
        if q.result:
            out[tid] = q.sign * wp.length(p - wp.mesh_eval_position(mesh_id, q.face, q.u, q.v))
        else:
            out[tid] = wp.nan

    w_mesh = wp.Mesh(points=wp.array(mesh.vertices.astype(np.float32), dtype=wp.vec3, device=dev),
                     indices=wp.array(mesh.faces.astype(np.int32).ravel(), dtype=int, device=dev))  # fmt: skip

    def run(points: np.ndarray, cutoff: float) -> np.ndarray:
        p = wp.array(points.astype(np.float32), dtype=wp.vec3, device=dev)
        out = wp.empty(len(points), dtype=float, device=dev)
        wp.launch(query, dim=len(points), inputs=[w_mesh.id, p, float(cutoff), out], device=dev)
        return out.numpy().astype(np.float64)

    run(mesh.vertices[:10], 1.0)  # compile (seconds on the CPU, cached in ~/.cache/warp)
    return run


if __name__ == "__main__":
    main()
