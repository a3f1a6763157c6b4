"""Registration accuracy and CPU speed on synthetic rescans, ours beside Open3D and small_gicp.

Every method runs in this process on the same cases (generated first, not timed); the error is
`pointwise_rms_um` over the moving scan's UNCHANGED vertices against the ground truth, success
means <= 50 um. Peers:
  open3d        voxel down, normals, FPFH, RANSAC on feature matches, point-to-plane ICP
  gicp+o3d      small_gicp GICP started from Open3D's RANSAC pose (time: GICP alone)
  gicp+identity small_gicp GICP from the identity (no global initialisation)

    python bench/bench_registration.py --cases 50 --scenario changed --overlap 0.35 0.6
    python bench/bench_registration.py --speed 9      # one pair: ours, Open3D, GICP after Open3D's pose, interleaved
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.registration import RegistrationOptions, register
from occlutrace_compute.synth.cases import PairCase, make_pair_case
from occlutrace_compute.synth.scan import random_pose
from occlutrace_compute.synth.score import pointwise_rms_um, rotation_error_deg

SUCCESS_UM = 50.0


@dataclass
class Runs:
    errors_um: list[float] = field(default_factory=list)
    rot_deg: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    doubtful: list[str] = field(default_factory=list)
    detection: list[tuple[float, float]] = field(default_factory=list)  # (precision, recall) of changed samples
    last: object = None  # the last RegistrationResult (ours), scored after the timed call


def _change_detection(case: PairCase, r, opt: RegistrationOptions, near_mm: float = 0.5) -> tuple[float, float]:
    """(precision, recall) of the moving samples the engine left out as changed.

    Truth: a moving vertex is detectably changed when the generator marks it changed and, put
    in place by the true pose, it lies over the fixed surface (closest point not on its open
    border, within `change_max_mm`) and farther from it than `changed_mm`. Precision: share of
    left-out samples within `near_mm` of a changed vertex; recall: share of detectably changed
    vertices within `near_mm` of a left-out sample (samples lie ~0.35 mm apart)."""
    from scipy.spatial import cKDTree

    from occlutrace_compute.analysis.distance import SurfaceIndex

    changed = case.moving.vertices[~case.moving_unchanged]
    out = r.moving_samples[r.outlier_mask]
    if len(changed) == 0 or len(out) == 0:
        return (float("nan") if len(out) == 0 else 0.0), (float("nan") if len(changed) == 0 else 0.0)
    placed = changed @ case.T_fixed_moving[:3, :3].T + case.T_fixed_moving[:3, 3]
    sd = SurfaceIndex(case.fixed).query(placed, max_distance=opt.verdict.change_max_mm)
    detectable = changed[np.isfinite(sd.distance) & ~sd.on_boundary & (np.abs(sd.distance) > opt.verdict.changed_mm)]
    precision = float(np.mean(cKDTree(changed).query(out)[0] < near_mm))
    recall = float(np.mean(cKDTree(out).query(detectable)[0] < near_mm)) if len(detectable) else float("nan")
    return precision, recall


def _ours(case: PairCase, opt: RegistrationOptions, runs: Runs, seed: int) -> tuple[np.ndarray, str]:
    r = register(case.fixed, case.moving, opt, device="cpu")
    runs.last = r
    if r.doubtful:
        runs.doubtful.append(f"case {seed}: {r.reason}")
    note = f"fitness {r.fitness:.2f}, confidence {r.confidence:.2f}" + (f", doubtful: {r.reason}" if r.doubtful else "")
    return r.matrix, note


class Open3DPipeline:
    """The usual Open3D recipe (its tutorial's global + local registration), tuned to scans in mm."""

    def __init__(self, voxel: float = 1.0, fine_voxel: float = 0.25) -> None:
        import open3d as o3d

        self.o3d = o3d
        self.voxel = voxel
        self.fine_voxel = fine_voxel
        self.last_global: np.ndarray | None = None
        self.last_global_s = 0.0

    def _cloud(self, mesh: Mesh, voxel: float):
        o3d = self.o3d
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(mesh.vertices)).voxel_down_sample(voxel)
        pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=2.5 * voxel, max_nn=30))
        return pcd

    def global_pose(self, case: PairCase):
        """Voxel down, normals, FPFH, RANSAC on feature matches: sets last_global(_s)."""
        o3d = self.o3d
        reg = o3d.pipelines.registration
        t0 = time.perf_counter()
        src, tgt = self._cloud(case.moving, self.voxel), self._cloud(case.fixed, self.voxel)
        param = o3d.geometry.KDTreeSearchParamHybrid(radius=5 * self.voxel, max_nn=100)
        fs, ft = reg.compute_fpfh_feature(src, param), reg.compute_fpfh_feature(tgt, param)
        dist = 1.5 * self.voxel
        ransac = reg.registration_ransac_based_on_feature_matching(
            src,
            tgt,
            fs,
            ft,
            True,
            dist,
            reg.TransformationEstimationPointToPoint(False),
            3,
            [reg.CorrespondenceCheckerBasedOnEdgeLength(0.9), reg.CorrespondenceCheckerBasedOnDistance(dist)],
            reg.RANSACConvergenceCriteria(100000, 0.999),
        )
        self.last_global = np.asarray(ransac.transformation).copy()
        self.last_global_s = time.perf_counter() - t0
        return ransac

    def __call__(self, case: PairCase) -> tuple[np.ndarray, str]:
        o3d = self.o3d
        reg = o3d.pipelines.registration
        ransac = self.global_pose(case)
        src_f, tgt_f = self._cloud(case.moving, self.fine_voxel), self._cloud(case.fixed, self.fine_voxel)
        icp = reg.registration_icp(
            src_f,
            tgt_f,
            4 * self.fine_voxel,
            ransac.transformation,
            reg.TransformationEstimationPointToPlane(),
            reg.ICPConvergenceCriteria(max_iteration=50),
        )
        return np.asarray(icp.transformation), f"RANSAC fitness {ransac.fitness:.2f}, ICP fitness {icp.fitness:.2f}"


def _gicp(case: PairCase, init: np.ndarray) -> tuple[np.ndarray, str]:
    import small_gicp

    res = small_gicp.align(
        case.fixed.vertices,
        case.moving.vertices,
        init,
        registration_type="GICP",
        downsampling_resolution=0.25,
        max_correspondence_distance=1.0,
        num_threads=2,
        max_iterations=50,
    )
    return np.asarray(res.T_target_source), f"converged {res.converged}, {res.iterations} iterations"


def _record(runs: Runs, name: str, seed: int, case: PairCase, fn) -> None:
    t0 = time.perf_counter()
    try:
        T, note = fn()
    except Exception as exc:  # a peer's crash is a failure of that peer on this case, reported below
        runs.seconds.append(time.perf_counter() - t0)
        runs.errors_um.append(float("inf"))
        runs.rot_deg.append(180.0)
        runs.failures.append(f"{name} case {seed}: raised {type(exc).__name__}: {exc}")
        return
    runs.seconds.append(time.perf_counter() - t0)
    err = pointwise_rms_um(T, case.T_fixed_moving, case.moving.vertices[case.moving_unchanged])
    rot = rotation_error_deg(T, case.T_fixed_moving)
    runs.errors_um.append(err)
    runs.rot_deg.append(rot)
    if not err <= SUCCESS_UM:
        runs.failures.append(f"{name} case {seed}: {err:.0f} um, rotation off {rot:.1f} deg ({note})")


def _summary(name: str, runs: Runs, seconds: list[float] | None = None) -> str:
    e = np.asarray(runs.errors_um)
    secs = seconds if seconds is not None else runs.seconds
    return (
        f"{name:<16} success {np.mean(e <= SUCCESS_UM) * 100:5.1f} %  median {np.median(e):8.2f} um  "
        f"p95 {np.percentile(e, 95):10.1f} um  max {e.max():10.1f} um  rot {statistics.median(runs.rot_deg):.4f} deg  "
        f"time median {statistics.median(secs):.3f} s"
    )


def _speed(case: PairCase, repeats: int, opt: RegistrationOptions, with_open3d: bool) -> None:
    """Wall and CPU time of one pair, re-posed at random before every run (the global search is
    timed too; loading is not), methods interleaved so both see the same machine load."""
    methods = {"ours": lambda c: register(c.fixed, c.moving, opt, device="cpu").matrix}
    if with_open3d:
        o3d = Open3DPipeline()
        methods["open3d"] = lambda c: o3d(c)[0]

        def gicp_after_global(c: PairCase) -> np.ndarray:  # the best peer: Open3D's global pose, then GICP
            o3d.global_pose(c)
            return _gicp(c, o3d.last_global)[0]

        methods["gicp+o3d"] = gicp_after_global
    for fn in methods.values():  # warm-up, untimed: lazy imports, thread pools
        fn(case)
    rng = np.random.default_rng(2026)
    rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name in methods}
    load_before = os.getloadavg()
    for _ in range(repeats):
        # The harness's own numpy work runs on one BLAS thread: a BLAS thread left spinning
        # after it would steal a core from the timed call (measured: +0.1 CPU s per pair).
        with threadpool_limits(limits=1, user_api="blas"):
            pose = random_pose(rng)
            c = dataclasses.replace(
                case, moving=case.moving.transformed(pose), T_fixed_moving=case.T_fixed_moving @ np.linalg.inv(pose)
            )
        for name, fn in methods.items():
            w0, c0 = time.perf_counter(), time.process_time()
            T = fn(c)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            with threadpool_limits(limits=1, user_api="blas"):
                err = pointwise_rms_um(T, c.T_fixed_moving, c.moving.vertices[c.moving_unchanged])
            rows[name].append((wall, cpu, err))
    load_after = os.getloadavg()
    print(
        f"one pair: fixed {case.fixed.n_vertices}, moving {case.moving.n_vertices} vertices; {repeats} runs "
        f"each, random pose per run, interleaved; load average {load_before[0]:.1f} -> {load_after[0]:.1f}"
    )
    for name, r in rows.items():
        a = np.asarray(r)
        print(
            f"{name:<8} wall median {np.median(a[:, 0]):.3f} s (min {a[:, 0].min():.3f}, max {a[:, 0].max():.3f})  "
            f"CPU median {np.median(a[:, 1]):.3f} s (min {a[:, 1].min():.3f})  error median {np.median(a[:, 2]):.2f} um, "
            f"max {a[:, 2].max():.1f} um, within {SUCCESS_UM:.0f} um {int(np.sum(a[:, 2] <= SUCCESS_UM))}/{repeats}"
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=30)
    ap.add_argument("--scenario", choices=("clean", "changed"), default="clean")
    ap.add_argument("--overlap", type=float, nargs=2, default=None, help="default: 0.6 1.0 clean, 0.35 0.6 changed")
    ap.add_argument("--spacing", type=float, default=0.15, help="scan grid spacing in mm (0.15: ~150k vertices)")
    ap.add_argument("--noise", type=float, default=0.015, help="vertex noise in mm")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument(
        "--save-matrices",
        type=Path,
        default=None,
        metavar="NPZ",
        help="save ours' matrix per case (key 'case <seed>'), to compare two checkouts' answers",
    )
    ap.add_argument(
        "--compare-matrices",
        type=Path,
        default=None,
        metavar="NPZ",
        help="print the largest difference of ours' matrices from a --save-matrices file of the same cases",
    )
    ap.add_argument(
        "--speed",
        type=int,
        default=0,
        metavar="N",
        help="instead: time case --first-seed N times (ours, and Open3D unless --no-peers)",
    )
    args = ap.parse_args(argv)
    overlap = tuple(args.overlap) if args.overlap else ((0.6, 1.0) if args.scenario == "clean" else (0.35, 0.6))
    warnings.filterwarnings("ignore", category=RuntimeWarning)

    opt = RegistrationOptions()
    if args.speed:
        _speed(
            make_pair_case(args.first_seed, args.scenario, overlap, args.noise, args.spacing),
            args.speed,
            opt,
            not args.no_peers,
        )
        return
    ours, o3d_runs, gicp_o3d, gicp_id = Runs(), Runs(), Runs(), Runs()
    o3d_global_s: list[float] = []
    peers = None if args.no_peers else Open3DPipeline()
    sizes = []
    matrices: dict[str, np.ndarray] = {}
    for seed in range(args.first_seed, args.first_seed + args.cases):
        case = make_pair_case(seed, args.scenario, overlap, args.noise, args.spacing)
        sizes.append((case.fixed.n_vertices, case.moving.n_vertices))
        ours.last = None
        _record(ours, "ours", seed, case, lambda: _ours(case, opt, ours, seed))
        if ours.last is not None:
            matrices[f"case {seed}"] = np.asarray(ours.last.matrix)  # type: ignore[attr-defined]
        if case.changes and ours.last is not None:
            ours.detection.append(_change_detection(case, ours.last, opt))
        if peers is not None:
            _record(o3d_runs, "open3d", seed, case, lambda: peers(case))
            o3d_global_s.append(peers.last_global_s)
            init = peers.last_global if peers.last_global is not None else np.eye(4)
            _record(gicp_o3d, "gicp+o3d", seed, case, lambda: _gicp(case, init))
            _record(gicp_id, "gicp+identity", seed, case, lambda: _gicp(case, np.eye(4)))
        print(
            f"case {seed}: ours {ours.errors_um[-1]:.2f} um {ours.seconds[-1]:.3f} s"
            + (
                f" | open3d {o3d_runs.errors_um[-1]:.2f} um {o3d_runs.seconds[-1]:.3f} s"
                f" | gicp+o3d {gicp_o3d.errors_um[-1]:.2f} um"
                if peers is not None
                else ""
            ),
            flush=True,
        )

    nv = np.asarray(sizes)
    print(
        f"\n{args.cases} {args.scenario} cases, overlap {overlap[0]:.2f}-{overlap[1]:.2f}, spacing {args.spacing} mm, "
        f"noise {args.noise * 1000:.0f} um; vertices fixed median {int(np.median(nv[:, 0]))}, moving "
        f"{int(np.median(nv[:, 1]))}; {platform.node()} {platform.processor() or platform.machine()}"
    )
    print(_summary("ours", ours))
    if args.save_matrices is not None:
        np.savez(args.save_matrices, **matrices)
    if args.compare_matrices is not None:
        before = np.load(args.compare_matrices)
        delta = {k: float(np.abs(before[k] - m).max()) for k, m in matrices.items() if k in before.files}
        same = sum(d == 0.0 for d in delta.values())
        print(
            f"ours against {args.compare_matrices}: {len(delta)} cases compared, {same} bit-identical, "
            f"largest matrix difference {max(delta.values(), default=0.0):.3g}"
        )
    if peers is not None:
        print(_summary("open3d", o3d_runs))
        print(_summary("gicp+o3d", gicp_o3d) + f"  (+ open3d global {statistics.median(o3d_global_s):.3f} s)")
        print(_summary("gicp+identity", gicp_id))
    if ours.detection:
        det = np.asarray(ours.detection)
        print(
            f"ours changed-sample detection (median over cases): precision {np.nanmedian(det[:, 0]):.3f}, "
            f"recall of detectable changes (> {opt.verdict.changed_mm} mm, over the fixed surface) {np.nanmedian(det[:, 1]):.3f}"
        )
    print(f"ours flagged doubtful: {len(ours.doubtful)}/{args.cases}")
    for d in ours.doubtful:
        print("  " + d)
    failures = ours.failures + o3d_runs.failures + gicp_o3d.failures + gicp_id.failures
    print(f"\nfailures ({len(failures)}):")
    for f in failures:
        print("  " + f)


if __name__ == "__main__":
    main()
