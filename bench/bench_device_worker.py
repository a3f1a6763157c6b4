"""The device worker's stages on CPU (issue 16 item 3): what one core prepares and finishes per
second, what the device actor spends per pair by batch size (CPU stand-in), and the ordinary
worker's whole job beside them, same run.

    PYTHONPATH=$PWD python bench/bench_device_worker.py [--spacing 0.3] [--pairs 4] [--batches 4,2,1]

Figures: bench/RESULTS.md, "Issue 16 item 3: the device worker, third session". No GPU figures:
the device column is the CPU stand-in (device "cpu": the per-pair engine on torch CPU and
distance.py's SurfaceIndex), which is what a CPU-only node would do, not what a GPU does.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import numpy as np

from occlutrace_compute.jobs.models import JobSpec
from occlutrace_compute.jobs.runner import run_job
from occlutrace_compute.jobs.stages import device_answers, finish_pair, prepare_pair, register_prepared
from occlutrace_compute.meshes import mesh_to_bytes
from occlutrace_compute.storage.config import open_store
from occlutrace_compute.storage.keys import input_key
from occlutrace_compute.synth import make_pair_case


def _clock(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spacing", type=float, default=0.3, help="synthetic scan spacing (mm): 0.3 ~ 45k vertices")
    ap.add_argument("--pairs", type=int, default=4, help="distinct pairs (repeated to the batch size)")
    ap.add_argument("--batches", default="4,2,1", help="device batch sizes, largest first (its RSS is measured)")
    args = ap.parse_args()

    store = open_store(f"file://{tempfile.mkdtemp(prefix='bench-devw-')}")
    specs = []
    for i in range(args.pairs):
        case = make_pair_case(10 + i, "clean", overlap=(0.85, 1.0), spacing_mm=args.spacing)
        keys = {}
        for role in ("fixed", "moving"):
            keys[role] = input_key("bench", f"case-{i:04d}", f"{role}.stl")
            store.put(keys[role], mesh_to_bytes(getattr(case, role), "stl"))
        specs.append(JobSpec(job_id=f"j{i:024x}", tenant="bench", case=f"case-{i:04d}", kind="pair", inputs=keys))
        print(f"pair {i}: fixed {case.fixed.n_vertices} v / {case.fixed.n_faces} f, moving {case.moving.n_vertices} v")

    prepare_pair(specs[0], store, "warm")  # imports and first-call costs out of the figures
    prepared, pw, pc = [], [], []
    for s in specs:
        pp, w, c = _clock(lambda s=s: prepare_pair(s, store, s.job_id))
        prepared.append(pp)
        pw.append(w)
        pc.append(c)
    points = [pp.payload.points for pp in prepared]
    print(f"prepare (parse+validate+sample): {np.mean(pw) * 1e3:.0f} ms wall, {np.mean(pc) * 1e3:.0f} ms CPU per job")
    print(f"points per pair (samples + moving vertices + reference faces): {int(np.mean(points))}")

    answers = None
    for b in [int(x) for x in args.batches.split(",")]:
        batch = [prepared[i % len(prepared)].payload for i in range(b)]
        rss0 = _maxrss_bytes()
        regs, rw, rc = _clock(lambda batch=batch: register_prepared(batch, "cpu"))
        got, dw, dc = _clock(lambda batch=batch: device_answers(batch, "cpu"))
        grown = _maxrss_bytes() - rss0
        pts = sum(p.points for p in batch)
        print(
            f"device batch {b}: {dw / b * 1e3:.0f} ms wall, {dc / b * 1e3:.0f} ms CPU per pair "
            f"(registration alone {rw / b * 1e3:.0f} ms wall, {rc / b * 1e3:.0f} ms CPU); "
            f"peak RSS growth {grown / 2**20:.0f} MiB = {grown / pts:.0f} B/point"
        )
        if answers is None:
            answers = got[: len(prepared)]

    fw, fc = [], []
    for pp, ans in zip(prepared, answers or []):
        pp2 = prepare_pair(pp.spec, store, pp.spec.job_id)  # a fresh clock per finish
        _, w, c = _clock(lambda pp2=pp2, ans=ans: finish_pair(pp2, ans, 0.0, store))
        fw.append(w)
        fc.append(c)
    print(
        f"finish (deviation report, preview, exports, report, writes): {np.mean(fw) * 1e3:.0f} ms wall, {np.mean(fc) * 1e3:.0f} ms CPU per job"
    )

    try:  # the host work a CUDA device actor still does per pair: its distance index's tree
        from occlutrace_compute.analysis.distance_device import DeviceSurfaceIndex

        DeviceSurfaceIndex(prepared[0].fixed.mesh, device="cpu-twin")  # compile/load the twin once
        _, w, c = _clock(lambda: [DeviceSurfaceIndex(pp.fixed.mesh, device="cpu-twin") for pp in prepared])
        print(
            f"device index build on the host (tree + features): {w / len(prepared) * 1e3:.0f} ms wall, {c / len(prepared) * 1e3:.0f} ms CPU per pair"
        )
    except Exception as exc:
        print(f"device index build: not measured ({type(exc).__name__}: {exc})")

    ow, oc = [], []
    for s in specs:
        _, w, c = _clock(lambda s=s: run_job(s, store))
        ow.append(w)
        oc.append(c)
    print(
        f"ordinary worker (run_job, same jobs): {np.mean(ow) * 1e3:.0f} ms wall, {np.mean(oc) * 1e3:.0f} ms CPU per job"
    )
    cpu_side = np.mean(pc) + np.mean(fc)
    print(f"CPU side per job (prepare + finish CPU): {cpu_side * 1e3:.0f} ms -> {1 / cpu_side:.2f} jobs/s per core")


if __name__ == "__main__":
    main()
