"""Time per deviation PNG (4 views + colour bar + histogram) at about 150k vertices, beside a peer.

Ours: numpy triangle rasteriser with z-buffer + Pillow composition (analysis/preview.py).
Peer from the same run: matplotlib's own triangle renderer (`tripcolor`, Gouraud shading) for the
single occlusal view only, with a colour bar, saved as PNG: the obvious library route.
With --against REV, the sheet is also drawn by analysis/preview.py as it was at git revision REV
(same mesh, same process, turns alternating) and the two PNGs are compared pixel by pixel: the
count of differing pixels, the largest channel difference, and the pixels per colour class
(white, grey = no overlap, green band, warm, cold, beyond the scale) in each.
Usage: python bench/bench_preview.py [--repeat 3] [--spacing 0.15] [--against HEAD~1]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from occlutrace_compute.analysis import preview
from occlutrace_compute.analysis.colormap import deviation_ramp
from occlutrace_compute.analysis.frame import arch_frame
from occlutrace_compute.analysis.preview import write_arch_sheet
from occlutrace_compute.analysis.stats import histogram
from occlutrace_compute.synth.arch import make_arch


def _best(fn, repeat: int) -> str:
    """Best of `repeat` as "wall s (cpu s)": on a shared machine the CPU seconds are the steadier figure."""
    best, cpu = np.inf, np.inf
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        best, cpu = min(best, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return f"{best:.3f} s wall ({cpu:.3f} s cpu)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--spacing", type=float, default=0.19, help="0.19 mm: about 150k vertices")
    ap.add_argument("--against", metavar="REV", help="also draw with analysis/preview.py of this git revision")
    args = ap.parse_args()
    arch = make_arch("upper", 7, args.spacing)
    mesh = arch.mesh
    rng = np.random.default_rng(0)
    values = 0.05 * np.sin(mesh.vertices[:, 0] / 3.0) + rng.normal(0, 0.02, mesh.n_vertices)
    values[arch.tooth == 16] = -0.6  # a preparation: beyond the scale
    values[mesh.vertices[:, 0] > 20] = np.nan  # outside the overlap
    ramp = deviation_ramp(0.2, 0.1)
    frame = arch_frame(mesh)
    hist = histogram(values, 0.2).to_dict()
    out = Path(tempfile.mkdtemp())
    print(f"mesh: {mesh.n_vertices} vertices, {mesh.n_faces} faces")

    def ours() -> None:
        write_arch_sheet(
            out / "ours.png", mesh, values, frame, -frame.occlusal, ramp, "bench", "sub", "upper arch", hist, 0.1, 0.05
        )

    def peer() -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.tri import Triangulation

        cmap, norm = ramp.matplotlib()
        local = frame.local(mesh.vertices)
        fig = Figure(figsize=(14, 9.6), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(111)
        tri = Triangulation(local[:, 0], local[:, 1], mesh.faces)
        pc = ax.tripcolor(tri, np.nan_to_num(values), cmap=cmap, norm=norm, shading="gouraud")
        fig.colorbar(pc, ax=ax, label="signed deviation [mm]")
        fig.savefig(out / "peer.png", format="png")

    if args.against:
        _against(args.against, ours, out, args.repeat, (mesh, values, frame, ramp, hist))
    t_ours = _best(ours, args.repeat)
    print(f"ours: deviation sheet (occlusal + frontal + 2 buccal views, colour bar, histogram): {t_ours} per PNG")
    if hasattr(preview, "sheet_geometry"):  # checkouts before the split: none
        # A pair job's split: the views before colour beside the deviation query (one thread),
        # then the sheet colours and composes them (the job's preview stage).
        up = -frame.occlusal
        t_geometry = _best(lambda: preview.sheet_geometry(mesh, frame, up), args.repeat)
        made = preview.sheet_geometry(mesh, frame, up)

        def coloured() -> None:
            write_arch_sheet(
                out / "coloured.png",
                mesh,
                values,
                frame,
                up,
                ramp,
                "bench",
                "sub",
                "upper arch",
                hist,
                0.1,
                0.05,
                geometry=made,
            )

        t_coloured = _best(coloured, args.repeat)
        same = (out / "coloured.png").read_bytes() == (out / "ours.png").read_bytes()
        print(f"ours, as a pair job splits it: views before colour (sheet_geometry, 1 thread)   {t_geometry}")
        print(
            f"                               colour + compose + PNG from them          {t_coloured} (same PNG: {same})"
        )
    t_peer = _best(peer, max(1, args.repeat - 1))
    print(f"peer: matplotlib tripcolor, occlusal view + colour bar only:                       {t_peer} per PNG")
    print(f"files in {out}")


def _classes(png: Path) -> dict[str, int]:
    """Pixels per colour class of a deviation sheet (thresholds on RGB, as the tests read them)."""
    from PIL import Image

    with Image.open(png) as im:
        px = np.asarray(im.convert("RGB")).reshape(-1, 3).astype(int)
    r, g, b = px[:, 0], px[:, 1], px[:, 2]
    white = (r == 255) & (g == 255) & (b == 255)
    grey = (abs(r - g) < 6) & (abs(g - b) < 6) & (r > 60) & ~white
    beyond = (r < 110) & (g < 40) & (b > 60) | (r > 120) & (g < 40) & (b > 120)
    return {
        "white": int(white.sum()),
        "grey": int(grey.sum()),
        "green": int(((g > r + 40) & (g > b + 40)).sum()),
        "warm": int(((r > 150) & (b < 90) & ~grey).sum()),
        "cold": int(((b > 120) & (r < 90) & ~beyond).sum()),
        "beyond": int(beyond.sum()),
    }


def _against(rev: str, ours, out: Path, repeat: int, data) -> None:
    """Draws the sheet with REV's preview.py too and compares the pictures."""
    from PIL import Image

    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(
        ["git", "-C", str(root), "show", f"{rev}:occlutrace_compute/analysis/preview.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (out / "preview_ref.py").write_text(source)
    spec = importlib.util.spec_from_file_location("preview_ref", out / "preview_ref.py")
    assert spec is not None and spec.loader is not None
    ref = importlib.util.module_from_spec(spec)
    sys.modules["preview_ref"] = ref
    spec.loader.exec_module(ref)
    mesh, values, frame, ramp, hist = data

    def theirs() -> None:
        ref.write_arch_sheet(
            out / "ref.png", mesh, values, frame, -frame.occlusal, ramp, "bench", "sub", "upper arch", hist, 0.1, 0.05
        )

    for _ in range(2):  # alternate turns
        print(f"{rev}: {_best(theirs, max(1, repeat // 2))}; this tree: {_best(ours, max(1, repeat // 2))}")
    with Image.open(out / "ours.png") as a, Image.open(out / "ref.png") as b:
        pa, pb = np.asarray(a.convert("RGB")).astype(int), np.asarray(b.convert("RGB")).astype(int)
    diff = np.abs(pa - pb).max(axis=2)
    print(f"pixels differing: {int((diff > 0).sum())} of {diff.size}, largest channel difference {int(diff.max())}")
    print(f"colour classes, this tree: {_classes(out / 'ours.png')}")
    print(f"colour classes, {rev}:{' ' * max(0, 10 - len(rev))} {_classes(out / 'ref.png')}")


if __name__ == "__main__":
    main()
