"""Time per deviation PNG (4 views + colour bar + histogram) at about 150k vertices, beside a peer.

Ours: numpy triangle rasteriser with z-buffer + Pillow composition (analysis/preview.py).
Peer from the same run: matplotlib's own triangle renderer (`tripcolor`, Gouraud shading) for the
single occlusal view only, with a colour bar, saved as PNG: the obvious library route.
Usage: python bench/bench_preview.py [--repeat 3] [--spacing 0.15]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

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

    t_ours = _best(ours, args.repeat)
    print(f"ours: deviation sheet (occlusal + frontal + 2 buccal views, colour bar, histogram): {t_ours} per PNG")
    t_peer = _best(peer, max(1, args.repeat - 1))
    print(f"peer: matplotlib tripcolor, occlusal view + colour bar only:                       {t_peer} per PNG")
    print(f"files in {out}")


if __name__ == "__main__":
    main()
