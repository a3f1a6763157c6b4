"""Parse speed of every format and encoding on a ~164k-vertex mesh: ours beside trimesh and Open3D.

Usage: python bench/bench_parse.py [--runs 5] [--subdivisions 7] [--no-peers]
Ours = load_mesh (parse + validation, STL corner merge included). trimesh.load(process=False)
only parses (STL: no merge); Open3D's read_triangle_mesh is a C++ reader (STL: merges). Each
line: median wall and CPU seconds; CPU time is the fairer figure on a shared machine.
Run with PYTHONPATH pointing at another tree to time that tree's loader on the same files.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import trimesh

import occlutrace_compute
from occlutrace_compute.meshes import Mesh, load_mesh, mesh_to_bytes

CASES = [("stl", "binary"), ("stl", "ascii"), ("ply", "binary"), ("ply", "ascii"), ("obj", "ascii")]


def median_seconds(fn, runs: int) -> tuple[float, float]:
    wall, cpu = [], []
    for _ in range(runs):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--subdivisions", type=int, default=7)
    ap.add_argument("--no-peers", action="store_true")
    args = ap.parse_args()
    s = trimesh.creation.icosphere(subdivisions=args.subdivisions, radius=20.0)
    rng = np.random.default_rng(0)
    colors = rng.integers(0, 256, (len(s.vertices), 4), dtype=np.uint8)
    mesh = Mesh(s.vertices.astype(np.float32).astype(np.float64), s.faces.astype(np.int64), colors)
    o3d = None
    if not args.no_peers:
        try:
            import open3d as o3d  # optional peer
        except ImportError:
            print("open3d not installed: its column is skipped")
    print(f"ours from {Path(occlutrace_compute.__file__).parent}")
    print(f"mesh: {mesh.n_vertices} vertices, {mesh.n_faces} faces; median of {args.runs} runs; wall / CPU s")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, enc in CASES:
            path = Path(tmp) / f"m_{enc}.{fmt}"
            path.write_bytes(mesh_to_bytes(mesh, fmt, enc))
            lm = load_mesh(path)
            assert lm.mesh.n_faces == mesh.n_faces
            ours = median_seconds(lambda: load_mesh(path), args.runs)
            line = f"{enc:6} {fmt.upper()} {path.stat().st_size / 1e6:6.1f} MB: ours {ours[0]:.3f} / {ours[1]:.3f}"
            if not args.no_peers:
                tm = median_seconds(lambda: trimesh.load(path, process=False), args.runs)
                line += f"; trimesh {tm[0]:.3f} / {tm[1]:.3f}"
                if o3d is not None:
                    od = median_seconds(lambda: o3d.io.read_triangle_mesh(str(path)), args.runs)
                    line += f"; open3d {od[0]:.3f} / {od[1]:.3f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
