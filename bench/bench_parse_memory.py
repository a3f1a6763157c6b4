"""Worst-case parsing cost: time and peak memory of load_mesh on hostile inputs, per input MB and
per MB of the triangle arrays it produces.

Usage: python bench/bench_parse_memory.py [--mb 8] [--only NAME]
Each case runs in a fresh subprocess: peak RSS growth over the process's RSS just before
load_mesh (file already in memory, one small file loaded first) and tracemalloc's peak of the
same call in another subprocess (numpy's arrays are traced).
Cases (every one at --mb megabytes, the one-polygon PLY at 2x like the issue's 16 MB file):
- one polygon of millions of corners (binary PLY, ASCII PLY, OBJ), at the default limits
  (refused: max_polygon_corners) and with the corner limit raised so that it is parsed;
- mixed polygon sizes (alternating 3 and 4 corners: no reshape fast path), binary and ASCII PLY;
- the smallest tokens a text file can have (OBJ 'f 1 2 3' lines, ASCII PLY faces);
- ASCII STL.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

VERTS = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], float)


def ply_head(enc: str, faces: int, count_type: str = "uint") -> bytes:
    return (
        f"ply\nformat {enc} 1.0\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {faces}\nproperty list {count_type} int vertex_indices\nend_header\n"
    ).encode()


def one_polygon(fmt: str, nbytes: int) -> bytes:
    """One polygon cycling over 3 vertices (its fan has no degenerate triangle)."""
    if fmt == "ply-binary":
        corners = (nbytes - 200) // 4
    else:
        corners = nbytes // 2  # "1 2 3 ..." : 2 bytes a corner
    idx = np.arange(corners) % 3 + 1
    idx[0] = 0
    if fmt == "obj":
        head = "".join(f"v {x} {y} {z}\n" for x, y, z in VERTS)
        return (head + "f " + " ".join(map(str, idx + 1)) + "\n").encode()
    if fmt == "ply-ascii":
        body = " ".join(map(str, VERTS.ravel())) + f"\n{corners} " + " ".join(map(str, idx)) + "\n"
        return ply_head("ascii", 1) + body.encode()
    return (
        ply_head("binary_little_endian", 1)
        + VERTS.astype("<f4").tobytes()
        + struct.pack("<I", corners)
        + idx.astype("<i4").tobytes()
    )


def mixed(fmt: str, nbytes: int) -> bytes:
    """Alternating triangles and quads over the 4 vertices."""
    tri, quad = [0, 1, 2], [0, 1, 2, 3]
    if fmt == "ply-binary":
        n = (nbytes // 31) * 2
        rec = b"".join([struct.pack("<B3i", 3, *tri), struct.pack("<B4i", 4, *quad)])
        return ply_head("binary_little_endian", n, "uchar") + VERTS.astype("<f4").tobytes() + rec * (n // 2)
    n = (nbytes // 18) * 2
    body = " ".join(map(str, VERTS.ravel())) + "\n" + "3 0 1 2\n4 0 1 2 3\n" * (n // 2)
    return ply_head("ascii", n, "uchar") + body.encode()


def small_tokens(fmt: str, nbytes: int) -> bytes:
    if fmt == "obj":
        head = "".join(f"v {x} {y} {z}\n" for x, y, z in VERTS)
        return (head + "f 1 2 3\n" * (nbytes // 8)).encode()
    n = nbytes // 8
    return ply_head("ascii", n, "uchar") + (" ".join(map(str, VERTS.ravel())) + "\n" + "3 0 1 2\n" * n).encode()


def ascii_stl(nbytes: int) -> bytes:
    facet = "facet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 10 0 0\nvertex 0 10 0\nendloop\nendfacet\n"
    return ("solid\n" + facet * (nbytes // len(facet)) + "endsolid\n").encode()


def cases(mb: float) -> dict[str, tuple[bytes, str, int | None]]:
    n = int(mb * 1e6)
    out: dict[str, tuple[bytes, str, int | None]] = {}
    for fmt, size in (("ply-binary", 2 * n), ("ply-ascii", n), ("obj", n)):
        data = one_polygon(fmt, size)
        name = "poly.obj" if fmt == "obj" else "poly.ply"
        out[f"one polygon, {fmt}, default limits"] = (data, name, None)
        out[f"one polygon, {fmt}, corner limit raised"] = (data, name, 10**9)
    out["mixed 3/4 corners, ply-binary"] = (mixed("ply-binary", n), "mixed.ply", None)
    out["mixed 3/4 corners, ply-ascii"] = (mixed("ply-ascii", n), "mixed.ply", None)
    out["small tokens, obj"] = (small_tokens("obj", n), "small.obj", None)
    out["small tokens, ply-ascii"] = (small_tokens("ply-ascii", n), "small.ply", None)
    out["ascii stl"] = (ascii_stl(n), "a.stl", None)
    return out


CHILD = r"""
import json, resource, sys, time, tracemalloc
from pathlib import Path
from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes import Limits, load_mesh
path, name, corners = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
data = Path(path).read_bytes()
try:
    limits = Limits(max_bytes=10**9) if corners is None else Limits(max_bytes=10**9, max_polygon_corners=corners, max_faces=10**8)
except TypeError:  # an older tree without the corner limit: it parses every polygon
    limits = Limits(max_bytes=10**9, max_faces=10**8)
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
def run():
    try:
        lm = load_mesh(data=data, name=name, limits=limits)
        return f"parsed: {lm.mesh.n_faces} triangles", lm.mesh.n_faces
    except InputRejected as e:
        return "refused: " + e.problem, 0
mode = sys.argv[4]
warm = b"v 0 0 0\nv 10 0 0\nv 0 10 0\nf 1 2 3\n"  # first-use imports and allocator pools
for w, n in ((warm, "w.obj"), (b"solid\n" + b"endsolid\n", "w.stl")):
    try:
        load_mesh(data=w, name=n)
    except InputRejected:
        pass
def hwm():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    return int(line.split()[1]) * 1024
if mode == "rss":
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS
    base = rss()
    t = time.perf_counter()
    outcome, faces = run()
    seconds = time.perf_counter() - t
    peak = hwm() - base
else:
    tracemalloc.start()
    outcome, faces = run()
    seconds, peak = None, tracemalloc.get_traced_memory()[1]
print(json.dumps({"outcome": outcome, "faces": faces, "seconds": seconds, "peak": peak}))
"""


def measure(data: bytes, name: str, corners: int | None, modes=("rss", "tracemalloc")) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        out = {}
        for mode in modes:
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, str(path), name, json.dumps(corners), mode],
                capture_output=True, text=True, env=os.environ.copy(), check=True,
            )  # fmt: skip
            out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=8.0)
    ap.add_argument("--only", default="")
    ap.add_argument("--rss-only", action="store_true", help="skip tracemalloc (slow on per-object loaders)")
    args = ap.parse_args()
    print(
        "case | input MB | outcome | s | peak RSS growth MB | tracemalloc peak MB | triangles MB | peak/triangles | peak/input MB"
    )
    for label, (data, name, corners) in cases(args.mb).items():
        if args.only and args.only not in label:
            continue
        m = measure(data, name, corners, ("rss",) if args.rss_only else ("rss", "tracemalloc"))
        rss = m["rss"]
        tm = m.get("tracemalloc", {"peak": 0})
        tri_mb = rss["faces"] * 24 / 1e6
        peak_mb = max(rss["peak"], tm["peak"]) / 1e6
        ratio = f"{peak_mb / tri_mb:.1f}" if tri_mb else "-"
        print(
            f"{label} | {len(data) / 1e6:.1f} | {rss['outcome'][:70]} | {rss['seconds']:.2f} | "
            f"{rss['peak'] / 1e6:.0f} | {tm['peak'] / 1e6:.0f} | {tri_mb:.0f} | {ratio} | {peak_mb / (len(data) / 1e6):.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
