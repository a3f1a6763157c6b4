"""The whole pair and bite job, stage by stage, in every format and encoding (in process).

Stages are the pipeline's own `timings_seconds` (load, register, deviation / contacts, preview,
export; before this session the preview was inside export), plus reading the input files and
writing the outputs as `occlutrace align/bite` does, the job's wall and CPU seconds, and the
imports a fresh `occlutrace align` pays (python -X importtime, top-level modules summed).

Data: a 150k-vertex pair (synth.make_pair_case(1, "clean", overlap 0.9-1.0, 0.17 mm): fixed 156k,
moving 157k vertices) written as binary/ASCII PLY, binary/ASCII STL and OBJ, and a bite case
(make_bite_case(2, two bites, 0.175 mm): arches 126k/128k vertices, bites 26k/28k) as binary and
ASCII PLY; generated once into --data.

Usage: python bench/bench_job_stages.py [--data DIR] [--repeat 3] [--kinds pair,bite] [--imports]
Run it against another checkout with PYTHONPATH=that/checkout to get its table (same data).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAIR_FORMATS = (("ply", "binary"), ("ply", "ascii"), ("stl", "binary"), ("stl", "ascii"), ("obj", "ascii"))
BITE_FORMATS = (("ply", "binary"), ("ply", "ascii"))


def generate(data: Path) -> None:
    from occlutrace_compute.synth import make_bite_case, make_pair_case, write_bite_case, write_pair_case

    if not all((data / f"pair_{f}_{e}" / "truth.json").exists() for f, e in PAIR_FORMATS):
        case = make_pair_case(1, "clean", overlap=(0.9, 1.0), spacing_mm=0.17)
        for fmt, enc in PAIR_FORMATS:
            write_pair_case(case, data / f"pair_{fmt}_{enc}", fmt, enc)
    if not all((data / f"bite_{f}_{e}" / "truth.json").exists() for f, e in BITE_FORMATS):
        bite = make_bite_case(2, n_bites=2, spacing_mm=0.175)
        for fmt, enc in BITE_FORMATS:
            write_bite_case(bite, data / f"bite_{fmt}_{enc}", fmt, enc)


def _inputs(folder: Path, roles: tuple[str, ...]):
    from occlutrace_compute.jobs.pipeline import InputFile

    out = {}
    for role in roles:
        path = next(folder.glob(f"{role}.*"), None)
        if path is not None:
            out[role] = InputFile(path.name, path.read_bytes())
    return out


def run_job(kind: str, folder: Path) -> dict[str, float]:
    """One job as the CLI runs it: read, run, write; stage seconds, wall and CPU."""
    from occlutrace_compute.jobs.models import JobOptions
    from occlutrace_compute.jobs.outputs import write_case_outputs
    from occlutrace_compute.jobs.pipeline import run_bite, run_pair

    w0, c0 = time.perf_counter(), time.process_time()
    if kind == "pair":
        inputs = _inputs(folder, ("fixed", "moving"))
        t_read = time.perf_counter() - w0
        out = run_pair(inputs["fixed"], inputs["moving"], JobOptions(device="cpu"))
    else:
        inputs = _inputs(folder, ("upper", "lower", "bite1", "bite2"))
        t_read = time.perf_counter() - w0
        out = run_bite(inputs, JobOptions(device="cpu"))
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write_case_outputs(Path(tmp) / "out", out.files)
    timings = dict(out.result["timings_seconds"])
    if "report" not in timings:  # before the report stage was timed: it was the rest of the job
        timings["report"] = (t1 - w0) - t_read - sum(timings.values())
    row = {"read": t_read, **timings, "write": time.perf_counter() - t1}
    row["job wall"] = time.perf_counter() - w0
    row["job cpu"] = time.process_time() - c0
    for stage, cpu in getattr(out, "cpu_seconds", {}).items():  # checkouts before per-stage CPU: none
        row[f"{stage} cpu"] = cpu
    return row


def import_seconds(folder: Path) -> tuple[float, float]:
    """Import time of a fresh `occlutrace align` (summed top-level -X importtime entries) and the
    whole command's wall seconds, from one run."""
    with tempfile.TemporaryDirectory() as tmp:
        fixed, moving = next(folder.glob("fixed.*")), next(folder.glob("moving.*"))
        t0 = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-X",
                "importtime",
                "-m",
                "occlutrace_compute.cli",
                "align",
                str(fixed),
                str(moving),
                "-o",
                tmp,
                "--device",
                "cpu",
            ],
            capture_output=True,
            text=True,
            env=os.environ.copy(),
        )
        wall = time.perf_counter() - t0
    total_us = 0
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|")
            if not name.startswith("  ") and cumulative.strip().isdigit():
                total_us += int(cumulative)
    return total_us / 1e6, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "occlutrace-stages")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--kinds", default="pair,bite")
    ap.add_argument("--imports", action="store_true", help="also time a fresh `occlutrace align` process")
    ap.add_argument("--only", default="", help="comma-separated inputs to run, e.g. 'ply binary,stl ascii'")
    args = ap.parse_args()
    generate(args.data)
    run_job("pair", args.data / "pair_ply_binary")  # warm-up: first imports, first allocations
    print(f"median of {args.repeat} runs; seconds")
    for kind in args.kinds.split(","):
        formats = PAIR_FORMATS if kind == "pair" else BITE_FORMATS
        rows = {}
        for fmt, enc in formats:
            if args.only and f"{fmt} {enc}" not in args.only.split(","):
                continue
            runs = [run_job(kind, args.data / f"{kind}_{fmt}_{enc}") for _ in range(args.repeat)]
            rows[f"{fmt} {enc}"] = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in runs[0]}
        if not rows:
            continue
        keys = list(next(iter(rows.values())))
        print(f"\n{kind} job\n| input | " + " | ".join(keys) + " |")
        print("| --- " * (len(keys) + 1) + "|")
        for name, row in rows.items():
            print(f"| {name} | " + " | ".join(f"{row[k]:.3f}" for k in keys) + " |", flush=True)
    if args.imports:
        for fmt, enc in (("ply", "binary"), ("stl", "ascii")):
            imp, wall = zip(*(import_seconds(args.data / f"pair_{fmt}_{enc}") for _ in range(args.repeat)))
            print(
                f"\n`occlutrace align` ({fmt} {enc}): imports {statistics.median(imp):.3f} s, "
                f"whole command {statistics.median(wall):.3f} s (median of {args.repeat})"
            )


if __name__ == "__main__":
    main()
