"""`occlutrace align` as a whole command beside the peer recipe as a whole command (same files).

    python bench/bench_align_command.py [--data DIR] [--runs 3] [--checkout LABEL=PATH ...] [--no-peer]

Each contender is a fresh process: `python -m occlutrace_compute.cli align FIXED MOVING -o OUT
--device cpu` with PYTHONPATH=PATH (one per --checkout; default: this tree as "ours"), and
bench/peer_align.py (Open3D FPFH + RANSAC, small_gicp GICP; reads both files, writes the aligned
mesh: it makes no deviation map, preview, report or result.json). One warm-up round, then --runs
counted rounds, contenders in turn within each round (A B A B ...), so a load change on a shared
machine hits all of them alike. Per contender: median (min-max) wall seconds, median CPU seconds
(user + sys of the process and its threads, from wait4) and peak RSS; then each contender's
ratio to the peer, round by round (median).

Data: --data/pair_ply_binary etc. from bench/bench_job_stages.py (generated there).
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

HERE = Path(__file__).resolve().parent


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Wall s, CPU s (user + sys) and peak RSS MiB of one process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed ({proc.returncode}): {err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


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
    args = ap.parse_args()
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
        for _ in range(args.runs):
            for name, cmd, env in contenders:
                rows[name].append(run(cmd, env))
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


if __name__ == "__main__":
    main()
