"""`occlutrace align` as a whole command beside the peer recipe as a whole command (same files).

    python bench/bench_align_command.py [--data DIR] [--runs 3] [--checkout LABEL=PATH ...]
                                        [--variant LABEL:KEY=VALUE,...] [--no-peer] [--parts]

Each contender is a fresh process: `python -m occlutrace_compute.cli align FIXED MOVING -o OUT
--device cpu` with PYTHONPATH=PATH (one per --checkout; default: this tree as "ours"), and
bench/peer_align.py (Open3D FPFH + RANSAC, small_gicp GICP; reads both files, writes the aligned
mesh: it makes no deviation map, preview, report or result.json). One warm-up round, then --runs
counted rounds, contenders in turn within each round (A B A B ...), so a load change on a shared
machine hits all of them alike. Per contender: median (min-max) wall seconds, median CPU seconds
(user + sys of the process and its threads, from wait4) and peak RSS; then each contender's
ratio to the peer, round by round (median), and the job's own stage walls (result.json).
Our command registers in a second process it forks (jobs/registrar.py): its CPU seconds are in the
figures (wait4 counts the descendants a process reaped), its memory is not summed: "peak memory"
is the larger process's peak (OCCLUTRACE_REGISTER_INPROCESS=1 as a --variant: the one-process run).
--variant: this tree once more with some environment variables set (e.g. the torch preload off).
--parts: the start/exit measures of the command alone (PARTS below), fresh processes in turns.

Data: --data/pair_ply_binary etc. from bench/bench_job_stages.py (generated there).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Wall s, CPU s (user + sys) and peak RSS MiB of one process."""
    t0 = time.perf_counter()
    # cwd outside any checkout: `python -m` puts the working folder first on sys.path, before
    # PYTHONPATH, so run from a checkout every contender would import that checkout's code
    proc = subprocess.Popen(cmd, env=env, cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed ({proc.returncode}): {err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


# --parts: what each of the command's start/exit measures is worth on its own, fresh processes in
# turns (CPU seconds from wait4; wall seconds are printed too but swing with a shared box's load).
PARTS = {
    "torch import, normal exit": "import torch",
    "torch import, os._exit": "import torch, os; os._exit(0)",
    "align's imports, gc on": "import gc; {imports}",
    "align's imports, gc off": "import gc; gc.disable(); {imports}",
    # torch's C++ library (430 MB) mapped on a thread beside the imports (ctypes releases the
    # GIL): measured and dropped, see bench/RESULTS.md ("Issue 12: the align command, third session").
    "align's imports": "{imports}",
    "align's imports, libtorch_cpu mapped on a thread": "import ctypes, threading, importlib.util, pathlib; "
    "lib = pathlib.Path(importlib.util.find_spec('torch').origin).parent / 'lib' / 'libtorch_cpu.so'; "
    "threading.Thread(target=ctypes.CDLL, args=(str(lib),), daemon=True).start(); {imports}",
}
ALIGN_IMPORTS = (
    "import occlutrace_compute.cli, occlutrace_compute.jobs.models, occlutrace_compute.jobs.pipeline, "
    "occlutrace_compute.analysis.deviation, occlutrace_compute.analysis.report, "
    "occlutrace_compute.registration.engine"  # the package's names load lazily: the engine is torch's import
)


def parts(runs: int) -> None:
    env = os.environ | {"PYTHONPATH": str(HERE.parent)}
    got: dict[str, list[tuple[float, float, float]]] = {k: [] for k in PARTS}
    for _ in range(runs + 1):  # the first round warms the page cache and .pyc files
        for name, code in PARTS.items():
            got[name].append(run([sys.executable, "-c", code.format(imports=ALIGN_IMPORTS)], env))
    print(f"{runs} rounds after a warm-up, in turns; load now {os.getloadavg()[0]:.1f}")
    print("| process | CPU median (min-max) | wall median |")
    print("| --- | --- | --- |")
    for name, rows in got.items():
        walls, cpus, _ = zip(*rows[1:])
        print(
            f"| {name} | {statistics.median(cpus):.3f} s ({min(cpus):.3f}-{max(cpus):.3f}) | "
            f"{statistics.median(walls):.3f} s |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "occlutrace-stages")
    ap.add_argument("--case", default="pair_ply_binary", help="folder under --data with fixed.* and moving.*")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--checkout",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="a tree to run `occlutrace align` from (repeatable; default ours=this tree)",
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL:KEY=VALUE[,KEY=VALUE]",
        help="this tree run with these environment variables as one more contender (repeatable), "
        "e.g. 'no-preload:OCCLUTRACE_NO_PRELOAD=1'",
    )
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--parts", action="store_true", help="time the start/exit measures alone (see PARTS)")
    args = ap.parse_args()
    if args.parts:
        parts(args.runs)
        return
    folder = args.data / args.case
    fixed, moving = str(next(folder.glob("fixed.*"))), str(next(folder.glob("moving.*")))
    checkouts = [(label, path, {}) for label, path in (c.split("=", 1) for c in args.checkout)] or [
        ("ours", str(HERE.parent), {})
    ]
    for v in args.variant:
        label, _, assignments = v.partition(":")
        extra = dict(a.split("=", 1) for a in assignments.split(",") if a)
        checkouts.append((label, str(HERE.parent), extra))
    contenders: list[tuple[str, list[str], dict[str, str]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, path, extra in checkouts:
            env = os.environ | {"PYTHONPATH": path} | extra
            contenders.append(
                (
                    f"occlutrace align ({label})",
                    [
                        sys.executable,
                        "-m",
                        "occlutrace_compute.cli",
                        "align",
                        fixed,
                        moving,
                        "-o",
                        f"{tmp}/{label}",
                        "--device",
                        "cpu",
                    ],
                    env,
                )
            )
        if not args.no_peer:
            contenders.append(
                (
                    "peer recipe",
                    [sys.executable, str(HERE / "peer_align.py"), fixed, moving, "-o", f"{tmp}/peer"],
                    dict(os.environ),
                )
            )
        for _, cmd, env in contenders:  # warm-up: page cache, .pyc files
            run(cmd, env)
        rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _, _ in contenders}
        stages: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in contenders}
        for _ in range(args.runs):
            for name, cmd, env in contenders:
                rows[name].append(run(cmd, env))
                result = Path(cmd[cmd.index("-o") + 1]) / "result.json"
                if result.is_file():  # ours: the job's own stage walls
                    stages[name].append(json.loads(result.read_text())["timings_seconds"])
                    result.unlink()
    print(
        f"{args.case}: {args.runs} counted rounds after a warm-up, contenders in turn; load now "
        f"{os.getloadavg()[0]:.1f}"
    )
    print("| | wall median (min-max) | CPU median | peak memory | wall / peer (median of rounds) | CPU / peer |")
    print("| --- | --- | --- | --- | --- | --- |")
    peer = rows.get("peer recipe")
    for name, runs in rows.items():
        walls, cpus, mems = zip(*runs)
        ratio = ""
        if peer and name != "peer recipe":
            ratio = (
                f"{statistics.median(a[0] / b[0] for a, b in zip(runs, peer)):.2f} | "
                f"{statistics.median(a[1] / b[1] for a, b in zip(runs, peer)):.2f}"
            )
        else:
            ratio = " | "
        print(
            f"| {name} | {statistics.median(walls):.2f} s ({min(walls):.2f}-{max(walls):.2f}) | "
            f"{statistics.median(cpus):.2f} s | {max(mems):.0f} MiB | {ratio} |",
            flush=True,
        )
    for name, runs in rows.items():
        print(f"{name}: CPU per round: " + ", ".join(f"{r[1]:.2f}" for r in runs))
    for name, runs in stages.items():
        if runs:
            med = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in runs[0]}
            print(f"{name}: stage walls (median): " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))


if __name__ == "__main__":
    main()
