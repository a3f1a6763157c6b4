"""Paired A/B of the whole job between two checkouts, robust to a shared machine's load.

Two warm processes, one per checkout (PYTHONPATH=checkout), run one job each in turn, the order
alternating every round, so both see the same load at nearly the same moment; prints the median
of each stage (the job's own `timings_seconds`), the job's wall and CPU seconds, and the per-pair
wall differences (old - new). bench_job_stages.py runs one checkout after the other, which on a
machine shared with other work compares two different loads.

Data: bench_job_stages.py's files (generate them with it first, default /tmp/occlutrace-stages).
Usage: python bench/bench_job_ab.py OLD_CHECKOUT NEW_CHECKOUT [--formats ply_binary,stl_binary]
       [--kind pair|bite] [--rounds 10] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

WORKER = """
import json, sys, time
from pathlib import Path
from occlutrace_compute.jobs.models import JobOptions
from occlutrace_compute.jobs.pipeline import InputFile, run_bite, run_pair
folder, kind = Path(sys.argv[1]), sys.argv[2]
roles = ("fixed", "moving") if kind == "pair" else ("upper", "lower", "bite1", "bite2")
found = {r: next(folder.glob(f"{r}.*"), None) for r in roles}
ins = {r: InputFile(p.name, p.read_bytes()) for r, p in found.items() if p is not None}
def job():
    if kind == "pair":
        return run_pair(ins["fixed"], ins["moving"], JobOptions(device="cpu"))
    return run_bite(ins, JobOptions(device="cpu"))
job()  # warm: imports, fonts, first allocations
print("ready", flush=True)
for _ in sys.stdin:
    w0, c0 = time.perf_counter(), time.process_time()
    out = job()
    row = {"job wall": time.perf_counter() - w0, "job cpu": time.process_time() - c0}
    print(json.dumps(row | out.result["timings_seconds"]), flush=True)
"""


def paired(old: str, new: str, folder: Path, kind: str, rounds: int) -> dict[str, list[dict[str, float]]]:
    """`rounds` jobs in each checkout's warm process, alternating which goes first."""
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", WORKER, str(folder), kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONPATH=path),
            cwd="/tmp",  # not a checkout: PYTHONPATH decides which package is imported
        )
        for name, path in (("old", old), ("new", new))
    }
    try:
        for p in procs.values():
            if p.stdout is None or p.stdout.readline().strip() != "ready":
                raise RuntimeError("a worker failed to start")
        rows: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
        for i in range(rounds):
            for name in ("old", "new") if i % 2 == 0 else ("new", "old"):
                p = procs[name]
                assert p.stdin is not None and p.stdout is not None
                p.stdin.write("go\n")
                p.stdin.flush()
                rows[name].append(json.loads(p.stdout.readline()))
        return rows
    finally:
        for p in procs.values():
            if p.stdin is not None:
                p.stdin.close()
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--formats", default="ply_binary", help="comma-separated: ply_binary, stl_ascii, ...")
    ap.add_argument("--kind", default="pair", choices=("pair", "bite"))
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--data", type=Path, default=Path("/tmp/occlutrace-stages"))
    args = ap.parse_args()
    for fmt in args.formats.split(","):
        rows = paired(args.old, args.new, args.data / f"{args.kind}_{fmt}", args.kind, args.rounds)
        keys = list(rows["old"][0])
        load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
        print(f"\n{args.kind} {fmt}: median of {args.rounds} paired runs, load {load} at the end; seconds")
        print("| checkout | " + " | ".join(keys) + " |")
        print("| --- " * (len(keys) + 1) + "|")
        for name in ("old", "new"):
            cells = " | ".join(f"{statistics.median(r[k] for r in rows[name]):.3f}" for k in keys)
            print(f"| {name} | {cells} |")
        diff = [a["job wall"] - b["job wall"] for a, b in zip(rows["old"], rows["new"])]
        faster = sum(d > 0 for d in diff)
        print(
            f"job wall old - new, per pair: median {statistics.median(diff):+.3f} s, "
            f"range {min(diff):+.3f} .. {max(diff):+.3f}; new faster in {faster} of {len(diff)}"
        )


if __name__ == "__main__":
    main()
