"""Load + validate time for a ~300k-vertex mesh in binary STL and binary PLY (median of runs).

Usage: python bench/bench_load.py [--runs 7]
Prints one line per format, with trimesh's own loader alongside as a peer. Target: < 0.5 s each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import trimesh

from occlutrace_compute.meshes import Mesh, export_mesh, load_mesh


def two_arches() -> Mesh:
    """Two 7-times subdivided icospheres (2 x 163,842 vertices): dental-sized, 40 mm across."""
    s = trimesh.creation.icosphere(subdivisions=7, radius=20.0)
    v = np.vstack([s.vertices, s.vertices + [50.0, 0.0, 0.0]]).astype(np.float32).astype(np.float64)
    f = np.vstack([s.faces, s.faces + len(s.vertices)]).astype(np.int64)
    return Mesh(v, f)


def median_seconds(fn, runs: int) -> tuple[float, float]:
    """Median wall and CPU seconds; on a shared machine CPU time shows the unloaded cost."""
    wall, cpu = [], []
    for _ in range(runs):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    mesh = two_arches()
    print(f"mesh: {mesh.n_vertices} vertices, {mesh.n_faces} faces; median of {args.runs} runs")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("stl", "ply"):
            path = export_mesh(mesh, Path(tmp) / f"bench.{fmt}")
            lm = load_mesh(path)
            assert lm.mesh.n_vertices == mesh.n_vertices and lm.mesh.n_faces == mesh.n_faces
            wall, cpu = median_seconds(lambda: load_mesh(path), args.runs)
            peer_wall, peer_cpu = median_seconds(lambda: trimesh.load(path, process=True), args.runs)
            size_mb = path.stat().st_size / 1e6
            print(
                f"binary {fmt.upper()} ({size_mb:.1f} MB): load_mesh {wall:.3f} s wall, {cpu:.3f} s CPU "
                f"(incl. validation{', vertex merge' if fmt == 'stl' else ''}); "
                f"trimesh.load(process=True) {peer_wall:.3f} s wall, {peer_cpu:.3f} s CPU; "
                f"target < 0.5 s: {'met' if wall < 0.5 else 'MISSED'}"
            )
    print(f"load average (1 min) during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
