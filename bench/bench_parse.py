"""Parse speed of every format and encoding on a ~164k-vertex mesh: ours beside trimesh and Open3D.

Usage: python bench/bench_parse.py [--runs 5] [--subdivisions 7] [--no-peers] [--both-paths] [--files F ...]
Ours = load_mesh (parse + validation, STL corner merge included). trimesh.load(process=False)
only parses (STL: no merge); Open3D's read_triangle_mesh is a C++ reader (STL: merges). Each
line: median wall and CPU seconds; CPU time is the fairer figure on a shared machine. The
readers take turns within each run (ours, Open3D, trimesh, ours, ...) so that a change of load
hits all of them; the load average is printed before and after.
--files times the given files (e.g. /tmp/occlutrace-stages/pair_*/fixed.*) instead of the
generated sphere. Run with PYTHONPATH pointing at another tree to time that tree's loader. --both-paths adds
'ours-py': ours with the C++ text scanner switched off (OCCLUTRACE_NO_NATIVE=1), the readers'
Python path, in the same turns.
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

import occlutrace_compute
from occlutrace_compute.meshes import Mesh, load_mesh, mesh_to_bytes, native

CASES = [("stl", "binary"), ("stl", "ascii"), ("ply", "binary"), ("ply", "ascii"), ("obj", "ascii")]


def timed(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def python_path(fn):
    """fn with the readers' Python path forced (OCCLUTRACE_NO_NATIVE=1, read at every call)."""

    def run():
        before = os.environ.get("OCCLUTRACE_NO_NATIVE")
        os.environ["OCCLUTRACE_NO_NATIVE"] = "1"
        try:
            return fn()
        finally:
            if before is None:
                del os.environ["OCCLUTRACE_NO_NATIVE"]
            else:
                os.environ["OCCLUTRACE_NO_NATIVE"] = before

    return run


def compare(path: Path, runs: int, peers: bool, o3d, both_paths: bool = False) -> str:
    """One line: ours, trimesh and Open3D on `path`, median wall / CPU s of `runs` turns each
    (with both_paths, ours also with the Python path forced: 'ours-py')."""
    readers = {"ours": lambda: load_mesh(path)}
    if both_paths:
        readers["ours-py"] = python_path(lambda: load_mesh(path))
    if peers:
        if o3d is not None:
            readers["open3d"] = lambda: o3d.io.read_triangle_mesh(str(path))
        readers["trimesh"] = lambda: trimesh.load(path, process=False)
    for fn in readers.values():
        fn()  # first-use imports and caches
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in readers}
    for _ in range(runs):
        for k, fn in readers.items():
            times[k].append(timed(fn))
    cells = []
    for k, ts in times.items():
        wall, cpu = statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts)
        cells.append(f"{k} {wall:.3f} / {cpu:.3f}")
    ours_cpu = statistics.median(t[1] for t in times["ours"])
    if "open3d" in times:
        cells.append(f"ours/open3d CPU {ours_cpu / statistics.median(t[1] for t in times['open3d']):.2f}")
    return f"{path} {path.stat().st_size / 1e6:6.1f} MB: " + "; ".join(cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--subdivisions", type=int, default=7)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--files", nargs="*", type=Path, default=[])
    ap.add_argument(
        "--both-paths", action="store_true", help="also time ours with the C++ scanner off (OCCLUTRACE_NO_NATIVE=1)"
    )
    args = ap.parse_args()
    o3d = None
    if not args.no_peers:
        try:
            import open3d as o3d  # optional peer
        except ImportError:
            print("open3d not installed: its column is skipped")
    scanner = "on" if native.scanner() is not None else "off (not built or OCCLUTRACE_NO_NATIVE)"
    print(f"ours from {Path(occlutrace_compute.__file__).parent}; C++ scanner {scanner}; load average {load_average()}")
    print(f"median of {args.runs} runs; wall / CPU s")
    if args.files:
        for path in args.files:
            print(compare(path, args.runs, not args.no_peers, o3d, args.both_paths), flush=True)
        print(f"load average after: {load_average()}")
        return
    s = trimesh.creation.icosphere(subdivisions=args.subdivisions, radius=20.0)
    rng = np.random.default_rng(0)
    colors = rng.integers(0, 256, (len(s.vertices), 4), dtype=np.uint8)
    mesh = Mesh(s.vertices.astype(np.float32).astype(np.float64), s.faces.astype(np.int64), colors)
    print(f"mesh: {mesh.n_vertices} vertices, {mesh.n_faces} faces")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, enc in CASES:
            path = Path(tmp) / f"m_{enc}.{fmt}"
            path.write_bytes(mesh_to_bytes(mesh, fmt, enc))
            assert load_mesh(path).mesh.n_faces == mesh.n_faces
            print(
                f"{enc:6} {fmt.upper()} " + compare(path, args.runs, not args.no_peers, o3d, args.both_paths),
                flush=True,
            )
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
