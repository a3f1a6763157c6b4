"""The peer recipe as one command, to time beside `occlutrace align` as whole processes.

    python bench/peer_align.py FIXED MOVING -o OUT

Open3D reads both meshes, its FPFH + RANSAC finds the global pose, small_gicp's GICP refines it,
Open3D writes the aligned mesh (binary, same format as MOVING) to OUT/aligned.<ext>. Settings are
those of bench/bench_registration.py (Open3DPipeline.global_pose, _gicp): voxel 1 mm, FPFH radius
5 mm, RANSAC 100k iterations / 0.999, GICP at 0.25 mm, 1 mm correspondences, 2 threads. It
imports only numpy, open3d and small_gicp (nothing of occlutrace_compute), and computes no
deviation map, preview or result.json: the peer does less work than `occlutrace align`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import open3d as o3d
import small_gicp


def _cloud(points: np.ndarray, voxel: float):
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points)).voxel_down_sample(voxel)
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=2.5 * voxel, max_nn=30))
    return pcd


def global_pose(fixed: np.ndarray, moving: np.ndarray, voxel: float = 1.0) -> np.ndarray:
    reg = o3d.pipelines.registration
    src, tgt = _cloud(moving, voxel), _cloud(fixed, voxel)
    param = o3d.geometry.KDTreeSearchParamHybrid(radius=5 * voxel, max_nn=100)
    fs, ft = reg.compute_fpfh_feature(src, param), reg.compute_fpfh_feature(tgt, param)
    dist = 1.5 * voxel
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
    return np.asarray(ransac.transformation)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fixed")
    ap.add_argument("moving")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args(argv)
    fixed_mesh = o3d.io.read_triangle_mesh(args.fixed)
    moving_mesh = o3d.io.read_triangle_mesh(args.moving)
    fixed, moving = np.asarray(fixed_mesh.vertices), np.asarray(moving_mesh.vertices)
    if len(fixed) == 0 or len(moving) == 0:
        print("error: a mesh has no vertices", file=sys.stderr)
        return 1
    init = global_pose(fixed, moving)
    res = small_gicp.align(
        fixed,
        moving,
        init,
        registration_type="GICP",
        downsampling_resolution=0.25,
        max_correspondence_distance=1.0,
        num_threads=2,
        max_iterations=50,
    )
    moving_mesh.transform(np.asarray(res.T_target_source))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    o3d.io.write_triangle_mesh(str(out / f"aligned{Path(args.moving).suffix}"), moving_mesh, write_ascii=False)
    print(f"converged {res.converged} after {res.iterations} iterations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
