"""Peak memory of one large pair (target: a 1 M-vertex pair aligns on CPU within 3 GB peak RSS).

`make` writes a synthetic pair (binary PLY) and its ground truth once; `run` then measures ONE
stage in a fresh process, so the peak belongs to that stage alone (plus the imports, torch included, given apart):
  register   load both files with `load_mesh`, then `registration.register` (CPU)
  pipeline   read the file bytes, then `jobs.pipeline.run_pair` (load, register, deviation, exports)
Peak RSS is taken two ways: the kernel's `ru_maxrss` and a psutil sampler (every 20 ms).

    python bench/bench_memory.py make --spacing 0.065 --seed 7 --dir /tmp/mem1m
    python bench/bench_memory.py all --dir /tmp/mem1m       # both stages, each in a fresh process
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

MB = 1024 * 1024


class PeakSampler:
    """Polls this process's RSS on a thread; `peak` is the largest value seen (bytes)."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self._proc = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak = max(self.peak, self._proc.memory_info().rss)


def make(args: argparse.Namespace) -> None:
    from occlutrace_compute.meshes import mesh_to_bytes
    from occlutrace_compute.synth.cases import make_pair_case

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    case = make_pair_case(args.seed, args.scenario, tuple(args.overlap), args.noise, args.spacing)
    gen_s = time.perf_counter() - t0
    (out / "fixed.ply").write_bytes(mesh_to_bytes(case.fixed, "ply", "binary"))
    (out / "moving.ply").write_bytes(mesh_to_bytes(case.moving, "ply", "binary"))
    np.savez(out / "truth.npz", T_fixed_moving=case.T_fixed_moving, moving_unchanged=case.moving_unchanged)
    info = {
        "seed": args.seed,
        "scenario": args.scenario,
        "spacing_mm": args.spacing,
        "overlap": case.overlap,
        "fixed_vertices": case.fixed.n_vertices,
        "moving_vertices": case.moving.n_vertices,
        "fixed_faces": len(case.fixed.faces),
        "moving_faces": len(case.moving.faces),
        "generation_s": round(gen_s, 1),
    }
    (out / "case.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))


def run(args: argparse.Namespace) -> None:
    from occlutrace_compute.synth.score import pointwise_rms_um, rotation_error_deg

    d = Path(args.dir)
    truth = np.load(d / "truth.npz")
    if args.stage == "register":
        from occlutrace_compute.meshes import load_mesh
        from occlutrace_compute.registration import register
    else:
        from occlutrace_compute.jobs.models import JobOptions
        from occlutrace_compute.jobs.pipeline import InputFile, run_pair
    base = psutil.Process().memory_info().rss
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with PeakSampler() as sampler:
        if args.stage == "register":
            fixed = load_mesh(d / "fixed.ply").mesh
            moving = load_mesh(d / "moving.ply").mesh
            r = register(fixed, moving, device="cpu")
            matrix, doubtful, timings = r.matrix, r.doubtful, r.stage_seconds
            moving_vertices = moving.vertices
        else:
            out = run_pair(
                InputFile("fixed.ply", (d / "fixed.ply").read_bytes()),
                InputFile("moving.ply", (d / "moving.ply").read_bytes()),
                JobOptions(device="cpu"),
            )
            matrix = np.asarray(out.result["matrix"])
            doubtful, timings = out.result["metrics"]["doubtful"], out.result["timings_seconds"]
            moving_vertices = None
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if moving_vertices is None:
        from occlutrace_compute.meshes import load_mesh

        moving_vertices = load_mesh(d / "moving.ply").mesh.vertices
    unchanged = truth["moving_unchanged"]
    T = truth["T_fixed_moving"]
    report = {
        "stage": args.stage,
        "rss_after_imports_mb": round(base / MB),
        "peak_rss_sampled_mb": round(sampler.peak / MB),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),  # KiB on Linux
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "error_um": round(pointwise_rms_um(matrix, T, moving_vertices[unchanged]), 3),
        "rotation_error_deg": round(rotation_error_deg(matrix, T), 5),
        "doubtful": bool(doubtful),
        "timings_s": {k: round(float(v), 3) for k, v in timings.items()},
    }
    print(json.dumps(report))


def run_all(args: argparse.Namespace) -> None:
    """Each stage in its own interpreter, so neither inherits the other's peak."""
    print((Path(args.dir) / "case.json").read_text())
    for stage in ("register", "pipeline"):
        subprocess.run([sys.executable, __file__, "run", "--dir", args.dir, "--stage", stage], check=True, timeout=1800)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make")
    mk.add_argument("--dir", required=True)
    mk.add_argument("--seed", type=int, default=7)
    mk.add_argument("--scenario", choices=("clean", "changed"), default="clean")
    mk.add_argument(
        "--overlap", type=float, nargs=2, default=(0.85, 1.0), help="large overlap: the biggest moving scan"
    )
    mk.add_argument("--spacing", type=float, default=0.065, help="mm; 0.065 gives ~1 M vertices per scan")
    mk.add_argument("--noise", type=float, default=0.015)
    rn = sub.add_parser("run")
    rn.add_argument("--dir", required=True)
    rn.add_argument("--stage", choices=("register", "pipeline"), required=True)
    al = sub.add_parser("all")
    al.add_argument("--dir", required=True)
    args = ap.parse_args(argv)
    {"make": make, "run": run, "all": run_all}[args.cmd](args)


if __name__ == "__main__":
    main()
