"""Resident size of a long-lived process between pair jobs: glibc's kept heap and its bound.

Eight 150k-vertex pair jobs in one process (binary PLY, binary STL, ASCII PLY, OBJ, ASCII STL,
binary PLY, binary STL, binary PLY: bench_job_stages.py's data), in a fresh child process per
configuration, run in turns in the same minutes:

- `glibc defaults`: OCCLUTRACE_KEEP_HEAP=0 (the peer: what the process keeps without keep_heap);
- `kept unbounded`: keep_heap with no trim (OCCLUTRACE_HEAP_IDLE_S=1e9: the code before the bound);
- `trim at once`: malloc_trim as the last job ends (OCCLUTRACE_HEAP_IDLE_S=0);
- `bound (default)`: malloc_trim after IDLE_S (1 s) without a job (jobs/heap.py).

Two schedules: `idle` waits --gap seconds (> IDLE_S) after each job and reports the resident size
then (what a Ray worker or `serve` holds between jobs); `back-to-back` starts the next job at
once (a `batch` worker), where the per-job CPU must not grow. Per job: resident MiB right after
it (its outputs dropped) and after the gap, user / system CPU s and minor faults; per child: peak
resident (VmHWM). Usage: python bench/bench_heap.py [--data DIR] [--jobs 8] [--gap 1.5]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ORDER = ("ply_binary", "stl_binary", "ply_ascii", "obj_ascii", "stl_ascii", "ply_binary", "stl_binary", "ply_binary")
CONFIGS = {
    "glibc defaults": {"OCCLUTRACE_KEEP_HEAP": "0"},
    "kept unbounded": {"OCCLUTRACE_HEAP_IDLE_S": "1e9"},
    "trim at once": {"OCCLUTRACE_HEAP_IDLE_S": "0"},
    "bound (default)": {},
}


def _resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(data: Path, jobs: int, gap: float) -> None:
    """Runs the jobs in this process; prints one JSON line."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_job_stages import generate

    from occlutrace_compute.jobs.models import JobOptions
    from occlutrace_compute.jobs.pipeline import InputFile, run_pair

    generate(data)
    rows = []
    for i in range(jobs):
        folder = data / f"pair_{ORDER[i % len(ORDER)]}"
        inputs = {r: InputFile(p.name, p.read_bytes()) for r in ("fixed", "moving") for p in folder.glob(f"{r}.*")}
        r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        out = run_pair(inputs["fixed"], inputs["moving"], JobOptions(device="cpu"))
        wall = time.perf_counter() - w0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        del out, inputs
        gc.collect()
        row = {
            "input": folder.name[5:],
            "wall": wall,
            "user": r1.ru_utime - r0.ru_utime,
            "sys": r1.ru_stime - r0.ru_stime,
            "faults": r1.ru_minflt - r0.ru_minflt,
            "after job": _resident_mib(),
        }
        if gap > 0:
            time.sleep(gap)  # a benchmark's idle period, not a synchronisation
            row["after gap"] = _resident_mib()
        rows.append(row)
    print(json.dumps({"rows": rows, "peak": _peak_mib()}))


def _span(values: list[float], fmt: str = "{:.0f}") -> str:
    return f"{fmt.format(min(values))}-{fmt.format(max(values))}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "occlutrace-stages")
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--gap", type=float, default=1.5, help="idle seconds after each job (schedule 'idle')")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names of CONFIGS")
    ap.add_argument("--old", type=Path, help="also run this checkout (its code as it is: PYTHONPATH) as 'old'")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.data, args.jobs, args.gap)
        return
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "OCCLUTRACE_HEAP", "OCCLUTRACE_KEEP"))}
    print(
        "| config | schedule | resident after each job, MiB | after the gap | peak | "
        "user s per job (after the 1st) | sys s | minor faults | job wall s |"
    )
    print("| --- " * 9 + "|")
    configs = {name: base | CONFIGS[name] for name in args.configs.split(",")}
    if args.old:
        configs["old"] = base | {"PYTHONPATH": str(args.old.resolve())}
    for schedule, gap in (("idle", args.gap), ("back-to-back", 0.0)):
        for name, env in configs.items():
            cmd = [sys.executable, __file__, "--child", "--data", str(args.data), "--jobs", str(args.jobs)]
            done = subprocess.run([*cmd, "--gap", str(gap)], env=env, capture_output=True, text=True, check=True)
            got = json.loads(done.stdout.strip().splitlines()[-1])
            rows, later = got["rows"], got["rows"][1:]
            gapped = _span([r["after gap"] for r in rows]) if gap else ""
            print(
                f"| {name} | {schedule} | {_span([r['after job'] for r in rows])} | {gapped} | {got['peak']:.0f} | "
                f"{statistics.median(r['user'] for r in later):.3f} | "
                f"{statistics.median(r['sys'] for r in later):.3f} ({_span([r['sys'] for r in later], '{:.2f}')}) | "
                f"{statistics.median(r['faults'] for r in later) / 1e3:.0f}k | "
                f"{statistics.median(r['wall'] for r in later):.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
