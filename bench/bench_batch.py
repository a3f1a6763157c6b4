"""Benchmark of `occlutrace batch` (jobs/batch.run_batch) on a local Ray: throughput, Ray
overhead against one process doing the same work, memory over the batch, accuracy.

    python bench/bench_batch.py --cases 100 --spacing 0.3 --num-cpus 2

1. N synthetic pair cases (alternating clean/changed, formats ply/stl/obj in turn) are cached
   under WORKDIR/cases-sp<spacing> (a case with truth.json is complete and reused).
2. Ray with --num-cpus on all N cases (the throughput, memory and accuracy run).
   --bite-cases K adds K bite cases (make_bite_case, 2 bites, ply) labelled case-1NN-bite: they
   sort after the pair cases, so a batch taken in label order starts its longest cases last
   (issue 12: the batch now starts the largest inputs first and hashes each case as its turn
   comes). Bite cases count in wall and throughput, not in the pair accuracy.
3. The first --compare-cases cases in ONE process through `run_case` (no Ray), then the same
   cases on Ray with num_cpus=1: the apples-to-apples overhead. The single process runs with
   OMP_NUM_THREADS=1 and torch on 1 thread, what a num_cpus=1 Ray task gets (checked by a probe
   task); the engine's and the distance's kd-trees (pykdtree) follow OMP_NUM_THREADS in both.
Ray overhead = (wall x cpus - sum of per-case compute measured inside the tasks) / (wall x cpus).
The machine may be shared: the load average is printed with every phase, and CPU seconds
(driver, workers, Ray daemons, from psutil) are given beside wall times since they depend
less on the load.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported: the setting a num_cpus=1 Ray task gets

import argparse
import json
import shutil
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
from _data import pair_case_dir, role_files

FORMATS = ("ply", "stl", "obj")
SUCCESS_UM = 50.0
RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")  # titled like workers, run no tasks


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


# ---------------------------------------------------------------- cases


def case_dirs(root: Path, n: int, spacing: float) -> list[Path]:
    """Generates the missing cases (a complete one is reused: _data.pair_case_dir)."""
    dirs = []
    made = 0
    t0 = time.perf_counter()
    for i in range(n):
        d, new = pair_case_dir(root / f"case-{i:03d}", i, "changed" if i % 2 else "clean", spacing, FORMATS[i % 3])
        made += new
        dirs.append(d)
    print(f"cases: {n} in {root} ({made} generated in {time.perf_counter() - t0:.0f} s, the rest reused)")
    return dirs


def bite_dirs(root: Path, n: int, spacing: float) -> list[Path]:
    """n two-bite cases (seeds 0..n-1) as binary PLY, labelled case-1NN-bite."""
    from occlutrace_compute.synth import make_bite_case, write_bite_case

    dirs = []
    for i in range(n):
        d = root / f"case-{100 + i:03d}-bite"
        if not (d / "truth.json").exists():
            write_bite_case(make_bite_case(i, n_bites=2, spacing_mm=spacing), d, "ply")
        dirs.append(d)
    return dirs


def subset_dir(root: Path, dirs: list[Path], repeat: int = 1) -> Path:
    """A batch root holding (hard-linked) copies of `dirs` only: labels case-NNN, then case-NNN-rK for the
    K-th extra pass (a longer batch for the memory series without generating more cases)."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for k in range(repeat):
        for d in dirs:
            # hard links: case discovery does not follow symlinked folders (jobs/cases.py)
            folder = root / (d.name if k == 0 else f"{d.name}-r{k}")
            folder.mkdir()
            for f in d.iterdir():
                if f.is_file():
                    os.link(f, folder / f.name)
    return root


# ---------------------------------------------------------------- process sampling


@dataclass
class Sample:
    t: float
    driver_mb: float
    workers_mb: list[float]
    daemons_mb: float


@dataclass
class Monitor:
    """Samples RSS of the driver, the Ray workers ('ray::...') and the other Ray processes, and
    keeps the last CPU times seen per process (workers that exit keep their share)."""

    interval_s: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    cpu: dict[int, tuple[str, float]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t0: float = 0.0

    def _one(self, t0: float) -> None:
        me = psutil.Process()
        workers, daemons = [], 0.0
        for p in me.children(recursive=True):
            try:
                with p.oneshot():
                    cmd = p.cmdline()
                    title = cmd[0] if cmd else p.name()
                    is_worker = title.startswith("ray::") and title not in RAY_AGENTS
                    rss = p.memory_info().rss / 2**20
                    ct = p.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            self.cpu[p.pid] = ("worker" if is_worker else "daemon", ct.user + ct.system)
            if is_worker:
                workers.append(rss)
            else:
                daemons += rss
        self.samples.append(Sample(time.perf_counter() - t0, me.memory_info().rss / 2**20, workers, daemons))

    def _loop(self, t0: float) -> None:
        deadline = time.monotonic() + 6 * 3600  # bounded even if stop() is never called
        while not self._stop.is_set() and time.monotonic() < deadline:
            self._one(t0)
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, args=(self._t0,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        self._one(self._t0)  # the last state, after the batch

    def cpu_seconds(self, kind: str) -> float:
        return sum(s for k, s in self.cpu.values() if k == kind)

    def memory_table(self) -> list[str]:
        s = self.samples
        if not s:
            return ["  (no samples)"]
        pick = {"start": s[0], "10%": s[len(s) // 10], "middle": s[len(s) // 2], "end": s[-1]}
        lines = [
            f"  RSS MB ({len(s)} samples, every {self.interval_s:.0f} s)   "
            + "  ".join(f"{k:>8}" for k in pick)
            + f"  {'peak':>8}"
        ]
        series = {
            "driver": [x.driver_mb for x in s],
            "workers (sum)": [sum(x.workers_mb) for x in s],
            "largest worker": [max(x.workers_mb, default=0.0) for x in s],
            "ray daemons": [x.daemons_mb for x in s],
        }
        idx = {k: s.index(v) for k, v in pick.items()}
        for name, v in series.items():
            lines.append(f"  {name:<36}" + "  ".join(f"{v[i]:8.0f}" for i in idx.values()) + f"  {max(v):8.0f}")
        lines.append("  worker RSS MB at the end: " + ", ".join(f"{m:.0f}" for m in sorted(s[-1].workers_mb)))
        lines.append(
            f"  worker processes seen: {max(len(x.workers_mb) for x in s)} at once, "
            f"{sum(1 for k, _ in self.cpu.values() if k == 'worker')} in all"
        )
        return lines


# ---------------------------------------------------------------- runs


@dataclass
class Run:
    name: str
    cpus: int
    n_cases: int
    wall_s: float
    compute_s: list[float]  # per succeeded case, measured around run_case
    statuses: dict[str, int]
    load_start: str
    load_end: str
    startup_s: float = 0.0
    cpu_driver_s: float = 0.0
    cpu_workers_s: float = 0.0
    cpu_daemons_s: float = 0.0
    cpu_per_case_s: list[float] = field(default_factory=list)
    monitor: Monitor | None = None
    probe: dict | None = None

    @property
    def ok(self) -> int:
        return self.statuses.get("succeeded", 0)

    @property
    def overhead(self) -> float:
        slots = self.wall_s * self.cpus
        return (slots - sum(self.compute_s)) / slots

    @property
    def rate(self) -> float:
        return 60.0 * self.ok / self.wall_s

    @property
    def cpu_total(self) -> float:
        return self.cpu_driver_s + self.cpu_workers_s + self.cpu_daemons_s


def run_sequential(dirs: list[Path], out: Path, options) -> Run:
    """The batch's work in this process: read inputs, run_case, write the outputs."""
    import torch

    from occlutrace_compute.jobs.cases import case_from_folder
    from occlutrace_compute.jobs.outputs import write_case_outputs
    from occlutrace_compute.jobs.pipeline import InputFile, run_case

    torch.set_num_threads(1)
    if out.exists():
        shutil.rmtree(out)
    ls = load()
    compute, cpu, statuses = [], [], {}
    cpu0, t0 = time.process_time(), time.perf_counter()
    for d in dirs:
        case = case_from_folder(d, d.name)
        inputs = {role: InputFile(p.name, p.read_bytes()) for role, p in case.files.items()}
        c0, w0 = time.process_time(), time.perf_counter()
        try:
            res = run_case(case.kind, inputs, options, case.label)
        except Exception as e:
            statuses["failed"] = statuses.get("failed", 0) + 1
            print(f"  {d.name}: {type(e).__name__}: {e}")
            continue
        compute.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
        write_case_outputs(out / case.label, res.files)
        statuses["succeeded"] = statuses.get("succeeded", 0) + 1
    wall = time.perf_counter() - t0
    return Run(
        "1 process",
        1,
        len(dirs),
        wall,
        compute,
        statuses,
        ls,
        load(),
        cpu_driver_s=time.process_time() - cpu0,
        cpu_per_case_s=cpu,
    )


def _probe() -> dict:
    """What a num_cpus=1 task sees: thread settings and cores."""
    import torch

    return {
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
    }


def run_ray(cases_root: Path, n_cases: int, out: Path, cpus: int, options, interval_s: float) -> Run:
    import ray

    from occlutrace_compute.jobs.batch import run_batch

    if out.exists():
        shutil.rmtree(out)
    if ray.is_initialized():
        ray.shutdown()
    ls = load()
    t0 = time.perf_counter()
    # the same call as jobs/batch._connect_ray, timed on its own
    for attempt in range(3):  # Ray gives its raylet 30 s to register: a loaded box can miss that
        try:
            ray.init(
                address="local", num_cpus=cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False
            )
            break
        except Exception as e:  # Ray raises a bare Exception for the timeout
            print(f"  ray.init failed ({e}); retrying", flush=True)
            ray.shutdown()
            if attempt == 2:
                raise
    startup = time.perf_counter() - t0
    mon = Monitor(interval_s)
    mon.start()
    cpu0, t0 = time.process_time(), time.perf_counter()
    summary = run_batch(cases_root, out, options, num_cpus=cpus, progress=False)
    wall = time.perf_counter() - t0
    cpu_driver = time.process_time() - cpu0
    mon.stop()
    probe = ray.get(ray.remote(num_cpus=1)(_probe).remote())
    ray.shutdown()
    rows = summary.rows
    statuses = summary.counts()
    for r in rows:
        if r.status != "succeeded":
            print(f"  {r.case}: {r.status}: {r.reason}")
    return Run(
        f"Ray num_cpus={cpus}",
        cpus,
        n_cases,
        wall,
        [r.seconds for r in rows if r.status == "succeeded"],
        statuses,
        ls,
        load(),
        startup_s=startup,
        cpu_driver_s=cpu_driver,
        cpu_workers_s=mon.cpu_seconds("worker"),
        cpu_daemons_s=mon.cpu_seconds("daemon"),
        monitor=mon,
        probe=probe,
    )


# ---------------------------------------------------------------- accuracy


def scoring_points(case_dir: Path) -> np.ndarray:
    """Moving-file points on unchanged geometry: per vertex for PLY/OBJ (vertex order kept), the
    vertices of unchanged faces for STL (which keeps no shared vertices; face order is kept)."""
    from occlutrace_compute.meshes import load_mesh

    moving = role_files(case_dir, ("moving",))["moving"]
    mesh = load_mesh(moving).mesh
    if moving.suffix == ".stl":
        mask = np.load(case_dir / "moving_unchanged_faces.npy")
        if len(mask) != mesh.n_faces:
            raise ValueError(f"{moving}: {mesh.n_faces} faces loaded, truth has {len(mask)}")
        return mesh.vertices[np.unique(mesh.faces[mask])]
    mask = np.load(case_dir / "moving_unchanged.npy")
    if len(mask) != mesh.n_vertices:
        raise ValueError(f"{moving}: {mesh.n_vertices} vertices loaded, truth has {len(mask)}")
    return mesh.vertices[mask]


def accuracy(dirs: list[Path], out: Path, other: Path | None) -> dict:
    from occlutrace_compute.synth import pointwise_rms_um

    errors: dict[str, float] = {}
    groups: dict[str, list[float]] = {}
    stages: dict[str, list[float]] = {}
    doubtful, missing, unscorable, agree = 0, [], [], []
    for d in dirs:
        try:
            result = json.loads((out / d.name / "result.json").read_text())
        except (OSError, ValueError):
            missing.append(d.name)
            continue
        truth = json.loads((d / "truth.json").read_text())
        if truth.get("kind") == "bite":
            stages.setdefault("bite register", []).append(
                result.get("timings_seconds", {}).get("register", float("nan"))
            )
            continue
        for k, v in result.get("timings_seconds", {}).items():
            stages.setdefault(k, []).append(v)
        try:
            pts = scoring_points(d)
        except Exception as e:
            unscorable.append(f"{d.name}: {e}")
            continue
        est = np.asarray(result["matrix"])
        err = pointwise_rms_um(est, np.asarray(truth["T_fixed_moving"]), pts)
        errors[d.name] = err
        fmt = role_files(d, ("moving",))["moving"].suffix[1:]
        scen = "changed" if truth["changes"] else "clean"
        groups.setdefault(fmt, []).append(err)
        groups.setdefault(scen, []).append(err)
        doubtful += bool(result["metrics"]["doubtful"])
        if other is not None:
            try:
                o = json.loads((other / d.name / "result.json").read_text())
                agree.append(pointwise_rms_um(est, np.asarray(o["matrix"]), pts))
            except (OSError, ValueError):
                pass
    return {
        "errors": errors,
        "groups": groups,
        "doubtful": doubtful,
        "missing": missing,
        "unscorable": unscorable,
        "agree_um": agree,
        "stages": stages,
    }


# ---------------------------------------------------------------- report


def q(v: list[float], p: float) -> float:
    return float(np.percentile(v, p)) if v else float("nan")


def print_report(args, runs: list[Run], acc: dict, seq: Run | None, ray1: Run | None) -> None:
    print(
        f"\n== occlutrace batch benchmark: spacing {args.spacing} mm, host {os.cpu_count()} cores, "
        f"torch threads 1 (engine), OMP_NUM_THREADS=1"
    )
    hdr = (
        f"{'run':<16}{'cases':>6}{'ok':>5}{'start s':>9}{'wall s':>9}{'cases/min':>10}{'compute s':>10}"
        f"{'med s/case':>11}{'overhead':>9}{'CPU s':>8}   load 1-min start -> end"
    )
    print(hdr)
    for r in runs:
        print(
            f"{r.name:<16}{r.n_cases:>6}{r.ok:>5}{r.startup_s:>9.1f}{r.wall_s:>9.1f}{r.rate:>10.2f}"
            f"{sum(r.compute_s):>10.1f}{statistics.median(r.compute_s) if r.compute_s else float('nan'):>11.2f}"
            f"{100 * r.overhead:>8.1f}%{r.cpu_total:>8.0f}   {r.load_start.split('/')[0]} -> {r.load_end.split('/')[0]}"
        )
    print(
        "  overhead = (wall x cpus - sum of per-case compute inside run_case) / (wall x cpus);"
        " CPU s = driver + workers + Ray daemons"
    )
    for r in runs:
        if r.cpus and r.name != "1 process":
            print(
                f"  {r.name}: CPU s driver {r.cpu_driver_s:.1f}, workers {r.cpu_workers_s:.1f},"
                f" Ray daemons {r.cpu_daemons_s:.1f}; task sees {r.probe}"
            )
    if seq and ray1:
        print(
            f"  same {seq.n_cases} cases, 1 process vs Ray num_cpus=1: wall {seq.wall_s:.1f} s vs {ray1.wall_s:.1f} s"
            f" -> Ray overhead {100 * (ray1.wall_s - seq.wall_s) / ray1.wall_s:.1f}% of the Ray wall"
            f" (+{ray1.startup_s:.1f} s start-up); CPU {seq.cpu_driver_s:.0f} s vs {ray1.cpu_total:.0f} s"
            f" -> {100 * (ray1.cpu_total - seq.cpu_driver_s) / ray1.cpu_total:.1f}% more CPU on Ray;"
            f" median per-case compute {statistics.median(seq.compute_s):.2f} s vs {statistics.median(ray1.compute_s):.2f} s"
            f" (1 process: median CPU {statistics.median(seq.cpu_per_case_s):.2f} s per case)"
        )
        main = runs[0]
        if main.cpus > 1:
            eff = main.rate / (main.cpus * seq.rate)
            print(
                f"  {main.name}: {main.rate:.2f} cases/min vs {seq.rate:.2f} in 1 process:"
                f" speed-up {main.rate / seq.rate:.2f}x on {main.cpus} CPUs (efficiency {100 * eff:.0f}%)"
            )
    if acc["stages"]:
        print(
            f"  stages inside run_case ({runs[0].name}), median s: "
            + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in acc["stages"].items())
        )
    for r in runs:
        if r.monitor:
            print(f"\n-- memory during {r.name} ({r.n_cases} cases)")
            print("\n".join(r.monitor.memory_table()))
    e = list(acc["errors"].values())
    print(f"\n-- accuracy ({runs[0].name}): pointwise RMS error over unchanged moving geometry, um")
    print(
        f"  scored {len(e)}  missing {len(acc['missing'])}  unscorable {len(acc['unscorable'])}"
        f"  doubtful {acc['doubtful']}"
    )
    if e:
        print(
            f"  all      median {q(e, 50):7.2f}  p90 {q(e, 90):7.2f}  p95 {q(e, 95):7.2f}  max {max(e):9.2f}"
            f"  success (<= {SUCCESS_UM:.0f} um) {sum(x <= SUCCESS_UM for x in e)}/{len(e)}"
        )
        for g, v in sorted(acc["groups"].items()):
            print(
                f"  {g:<8} median {q(v, 50):7.2f}  p90 {q(v, 90):7.2f}  max {max(v):9.2f}"
                f"  success {sum(x <= SUCCESS_UM for x in v)}/{len(v)}"
            )
        worst = sorted(acc["errors"].items(), key=lambda kv: -kv[1])[:3]
        print("  worst: " + ", ".join(f"{k} {v:.1f}" for k, v in worst))
    if acc["agree_um"]:
        print(
            f"  same cases in 1 process vs Ray: matrices differ by max {max(acc['agree_um']):.4f} um pointwise"
            f" over {len(acc['agree_um'])} cases"
        )
    for u in acc["unscorable"]:
        print(f"  unscorable: {u}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100, help="cases for the main Ray run (default 100)")
    ap.add_argument("--spacing", type=float, default=0.3, help="scan spacing mm (0.3 default; 0.15 = full resolution)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/occlutrace-bench-batch"))
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray for the main run (default 2)")
    ap.add_argument(
        "--compare-cases",
        type=int,
        default=None,
        help="cases for the 1-process vs Ray num_cpus=1 comparison (default: --cases; 0 = skip)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="the main Ray run takes every case this many times (longer memory series; default 1)",
    )
    ap.add_argument("--interval", type=float, default=1.0, help="memory sampling interval s (default 1)")
    ap.add_argument("--bite-cases", type=int, default=0, help="bite cases added to the main Ray run (default 0)")
    args = ap.parse_args()
    if args.cases < 1 or args.num_cpus < 1 or args.repeat < 1 or not 0.05 <= args.spacing <= 2.0:
        ap.error("--cases, --num-cpus and --repeat must be >= 1, --spacing within [0.05, 2]")
    n_cmp = args.cases if args.compare_cases is None else min(args.compare_cases, args.cases)

    from occlutrace_compute.jobs.models import JobOptions

    options = JobOptions(device="cpu")
    print(f"load average at start: {load()}")
    cases_root = args.workdir / f"cases-sp{args.spacing:.2f}"
    dirs = case_dirs(cases_root, args.cases, args.spacing)
    bites = bite_dirs(cases_root, args.bite_cases, args.spacing)
    n_main = (args.cases + args.bite_cases) * args.repeat
    main_root = subset_dir(
        args.workdir / f"batch-{args.cases}b{args.bite_cases}x{args.repeat}", dirs + bites, args.repeat
    )

    runs: list[Run] = []
    print(f"[{time.strftime('%H:%M:%S')}] Ray num_cpus={args.num_cpus} on {n_main} cases ...", flush=True)
    runs.append(run_ray(main_root, n_main, args.workdir / "out-ray-main", args.num_cpus, options, args.interval))
    seq = ray1 = None
    if n_cmp:
        cmp_dirs = dirs[:n_cmp]
        print(f"[{time.strftime('%H:%M:%S')}] 1 process on {n_cmp} cases ...", flush=True)
        seq = run_sequential(cmp_dirs, args.workdir / "out-seq", options)
        runs.append(seq)
        print(f"[{time.strftime('%H:%M:%S')}] Ray num_cpus=1 on {n_cmp} cases ...", flush=True)
        ray1 = run_ray(
            subset_dir(args.workdir / f"batch-{n_cmp}x1", cmp_dirs),
            n_cmp,
            args.workdir / "out-ray-1",
            1,
            options,
            args.interval,
        )
        runs.append(ray1)
    acc = accuracy(dirs + bites, args.workdir / "out-ray-main", args.workdir / "out-seq" if seq else None)
    print_report(args, runs, acc, seq, ray1)
    print(f"\nload average at end: {load()}")


if __name__ == "__main__":
    main()
