"""Service overhead: the same pair jobs through the HTTP controller + Ray workers, and in one process.

    python bench/bench_service.py [--jobs 20] [--workers 1] [--clients 200] [--poll-s 0.05]

Starts a real controller (uvicorn on 127.0.0.1, free port), a local Ray (num_cpus=2) with its
dispatcher and CPU workers, and a local store in a temp dir. Cases: the two sample pairs plus
synthetic pairs (`synth.make_pair_case`, 0.5 mm grid like samples/, or --spacing). Phases:

1. sequential: per case, upload fixed+moving, create the job, poll it every `--poll-s` until it
   is final (a callback receiver on 127.0.0.1 records the completion POST too); interleaved with
   the same case's compute in this process (`pipeline.run_case` on the stored, sanitised bytes,
   alternating which goes first, so load drift on the shared box hits both alike);
2. burst: all jobs created at once on the uploaded inputs: throughput (jobs/min);
3. job creation latency under `--clients` concurrent clients (those jobs are cancelled at once).

Overhead = (end-to-end - in-process compute) / in-process compute. The workers run the real
`jobs.runner.run_job` through `timed_job` below (the injectable `job_fn`), which only adds
timestamps and store-call timers, so the end-to-end time splits into upload, create, queue wait,
store reads, worker compute, store writes and completion (record write, Ray return, polling).
Both sides run with the same OMP_NUM_THREADS (1 unless set: Ray gives 1-CPU actors one thread)
and, unless --keep-ray-niceness, the same niceness (Ray starts workers at nice 15, which on a busy
shared box slows the worker's compute against this process's; not a service cost).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch load: same threads as the workers

import argparse
import asyncio
import http.server
import json
import logging
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _data import pair_case_dir, role_files

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SAMPLES = REPO / "samples"
SAMPLE_SPACING_MM = 0.5  # samples/ grid (scripts/make_samples.py)
BURST_POLL_S = 1.0
TERMINAL = ("succeeded", "failed", "rejected", "cancelled")
TOKEN, TENANT = "tok-bench", "alpha"


# -- the worker side: imported by the Ray workers as `bench_service:timed_job` ----------------


class _TimedStore:
    """Delegates to the worker's store; adds up the seconds spent in get and put."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.get_s, self.put_s = inner, 0.0, 0.0

    def get(self, key: str) -> bytes:
        t0 = time.perf_counter()
        try:
            return self.inner.get(key)
        finally:
            self.get_s += time.perf_counter() - t0

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        t0 = time.perf_counter()
        try:
            self.inner.put(key, data, content_type)
        finally:
            self.put_s += time.perf_counter() - t0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def timed_job(spec: Any, store: Any) -> dict:
    """The real `run_job`, with wall-clock start/end and store timers in `benchctl/<job>.json`."""
    from occlutrace_compute.jobs.runner import run_job

    timed = _TimedStore(store)
    start = time.time()
    result = run_job(spec, timed)
    end = time.time()
    marks = {"start": start, "end": end, "get_s": timed.get_s, "put_s": timed.put_s, "nice": os.nice(0)}
    store.put(f"benchctl/{spec.job_id}.json", json.dumps(marks).encode(), "application/json")
    return result


# -- the client side ---------------------------------------------------------------------------


@dataclass
class Case:
    label: str
    files: dict[str, Path]  # role -> file


@dataclass
class Sample:
    label: str
    upload_s: float = 0.0
    create_s: float = 0.0
    t_create: float = 0.0  # wall clock at the create call
    t_created: float = 0.0  # create answered
    t_seen: float = 0.0  # final state seen by polling
    t_callback: float | None = None
    marks: dict = field(default_factory=dict)
    inproc_s: float = 0.0
    inproc_stages: dict = field(default_factory=dict)
    worker_stages: dict = field(default_factory=dict)
    state: str = ""


class CallbackSink:
    """Records the arrival time of each completion POST, by job id."""

    def __init__(self) -> None:
        sink = self
        self.arrived: dict[str, float] = {}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                now = time.time()
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                sink.arrived.setdefault(body["job_id"], now)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond: Callable[[], Any], timeout_s: float, what: str, every_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every_s)
    raise TimeoutError(f"timed out after {timeout_s} s: {what}")


def make_cases(n: int, folder: Path, spacing_mm: float) -> list[Case]:
    """The sample pairs first (0.5 mm grid only), then synthetic pairs (clean/changed, PLY/STL)."""
    cases = []
    samples = ("case-0001-pair", "case-0002-changed") if spacing_mm == SAMPLE_SPACING_MM else ()
    for i, sample in enumerate(samples[:n]):
        cases.append(Case(f"case-{9000 + i}", role_files(SAMPLES / sample)))
    for seed in range(len(cases), n):
        fmt = "stl" if seed % 2 else "ply"
        scenario = "changed" if seed % 3 == 0 else "clean"
        d, _ = pair_case_dir(folder / f"synth-{seed}", seed, scenario, spacing_mm, fmt)
        cases.append(Case(f"case-{9000 + seed}", role_files(d)))
    return cases


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        import httpx
        import ray
        import uvicorn

        from occlutrace_compute.service.config import ServiceConfig
        from occlutrace_compute.service.server import build_app

        self.args = args
        tokens = tmp / "tokens"
        tokens.write_text(f"{TENANT} {TOKEN}\n")
        env = {
            "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), str(REPO)]),
            "OMP_NUM_THREADS": os.environ["OMP_NUM_THREADS"],
        }
        if not args.keep_ray_niceness:  # Ray starts workers at nice 15: slower than this process on a busy box
            os.environ["RAY_worker_niceness"] = "0"  # noqa: SIM112 (Ray reads this exact name)
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            namespace="occlutrace-bench",
            runtime_env={"env_vars": env},
        )
        self.config = ServiceConfig.from_env(
            store=f"file://{tmp / 'store'}",
            tokens_file=str(tokens),
            job_fn="bench_service:timed_job",
            ray_namespace="occlutrace-bench",
            cpu_workers=args.workers,
            max_workers=args.workers,
            batch_size=4,
            rate_per_s=10_000.0,
            rate_burst=10_000,
            callback_backoff_s=0.05,
            callback_allow_private=True,  # the bench's receiver listens on 127.0.0.1
        )
        self.store = self.config.open_store()
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        server_config = uvicorn.Config(
            build_app(self.config),
            host="127.0.0.1",
            port=port,
            access_log=False,
            log_level="warning",
            limit_concurrency=1000,
            backlog=1024,
            timeout_keep_alive=30,
        )
        logging.getLogger("occlutrace").setLevel(logging.WARNING)  # no per-request log lines here
        self.server = uvicorn.Server(server_config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        _wait(lambda: self.server.started, 60, "uvicorn start", 0.05)
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        self.sink = CallbackSink()
        _wait(lambda: self.http.get("/readyz").status_code == 200, 120, "controller ready", 0.2)

    def close(self) -> None:
        import ray

        from occlutrace_compute.service.dispatcher import get_dispatcher

        self.http.close()
        self.sink.close()
        self.server.should_exit = True
        self.thread.join(30)
        dispatcher = get_dispatcher(self.config)
        ray.get(dispatcher.shutdown.remote(), timeout=30)
        ray.kill(dispatcher, no_restart=True)
        ray.shutdown()

    # -- one job -------------------------------------------------------------------------------

    def upload(self, case: Case) -> float:
        t0 = time.perf_counter()
        for path in case.files.values():
            r = self.http.post(f"/v1/cases/{case.label}/files", files={"file": (path.name, path.read_bytes())})
            if r.status_code != 201:
                raise RuntimeError(f"upload {case.label}/{path.name}: {r.status_code} {r.text}")
        return time.perf_counter() - t0

    def create(self, case: Case, sample: Sample) -> str:
        body = {
            "case": case.label,
            "kind": "pair",
            "callback_url": self.sink.url,
            "inputs": {role: p.name for role, p in case.files.items()},
        }
        sample.t_create = time.time()
        r = self.http.post("/v1/jobs", json=body)
        sample.t_created = time.time()
        if r.status_code != 201:
            raise RuntimeError(f"create {case.label}: {r.status_code} {r.text}")
        sample.create_s = sample.t_created - sample.t_create
        return r.json()["job_id"]

    def state(self, job_id: str) -> str:
        return self.http.get(f"/v1/jobs/{job_id}").json()["state"]

    def marks(self, job_id: str) -> dict:
        return json.loads(self.store.get(f"benchctl/{job_id}.json"))

    def service_job(self, case: Case, upload: bool) -> Sample:
        sample = Sample(case.label)
        if upload:
            sample.upload_s = self.upload(case)
        job_id = self.create(case, sample)
        sample.state = _wait(
            lambda: (s := self.state(job_id)) in TERMINAL and s, 600, f"job {job_id}", self.args.poll_s
        )
        sample.t_seen = time.time()
        if sample.state != "succeeded":
            raise RuntimeError(f"job {job_id} of {case.label} ended {sample.state}")
        sample.marks = self.marks(job_id)
        sample.worker_stages = self.http.get(f"/v1/jobs/{job_id}/result").json()["result"]["timings_seconds"]
        try:
            _wait(lambda: job_id in self.sink.arrived, 5, "callback", 0.01)
            sample.t_callback = self.sink.arrived[job_id]
        except TimeoutError:
            sample.t_callback = None
        return sample

    def in_process(self, case: Case) -> tuple[float, dict]:
        """run_case on the bytes the worker got (the stored, sanitised inputs): wall s, stage s."""
        from occlutrace_compute.jobs.models import JobOptions
        from occlutrace_compute.jobs.pipeline import InputFile, run_case
        from occlutrace_compute.storage.keys import input_key

        inputs = {
            role: InputFile(p.name, self.store.get(input_key(TENANT, case.label, p.name)))
            for role, p in case.files.items()
        }
        t0 = time.perf_counter()
        out = run_case("pair", inputs, JobOptions(), case.label)
        return time.perf_counter() - t0, out.result["timings_seconds"]

    # -- phases --------------------------------------------------------------------------------

    def sequential(self, cases: list[Case]) -> list[Sample]:
        warm = self.service_job(cases[0], upload=True)  # warm-up (imports in the worker and here), not counted
        self.warm_upload_s = warm.upload_s
        self.in_process(cases[0])
        samples = []
        for i, case in enumerate(cases):
            if i % 2:
                sample = self.service_job(case, upload=True)
                sample.inproc_s, sample.inproc_stages = self.in_process(case)
            else:
                upload_s = self.upload(case) if i else self.warm_upload_s  # case 0: the warm-up's upload
                inproc, stages = self.in_process(case)
                sample = self.service_job(case, upload=False)
                sample.upload_s, sample.inproc_s, sample.inproc_stages = upload_s, inproc, stages
            samples.append(sample)
            print(
                f"  {case.label}: e2e {sample.t_seen - sample.t_create:.2f} s, in-process {sample.inproc_s:.2f} s",
                flush=True,
            )
        return samples

    def burst(self, cases: list[Case]) -> tuple[float, list[Sample]]:
        samples = [Sample(c.label) for c in cases]
        t0 = time.time()
        ids = [self.create(c, s) for c, s in zip(cases, samples)]
        left = dict(zip(ids, samples))
        deadline = time.monotonic() + 60 * len(cases)
        while left and time.monotonic() < deadline:  # completion times come from the callbacks:
            for job_id in list(left):  # polling N jobs every 50 ms would steal the worker's CPU
                state = self.state(job_id)
                if state in TERMINAL:
                    left[job_id].state, left[job_id].t_seen = state, time.time()
                    left.pop(job_id)
            time.sleep(BURST_POLL_S)
        if left:
            raise TimeoutError(f"{len(left)} burst jobs not final")
        for job_id, s in zip(ids, samples):
            s.marks = self.marks(job_id)
            s.t_callback = self.sink.arrived.get(job_id)
        end = max(s.t_callback or s.t_seen for s in samples)
        return end - t0, samples

    def concurrent_create(self, case: Case, clients: int) -> list[float]:
        import httpx

        body = {"case": case.label, "kind": "pair", "inputs": {role: p.name for role, p in case.files.items()}}

        async def one(http: httpx.AsyncClient, i: int) -> tuple[float, str]:
            t0 = time.perf_counter()
            r = await http.post("/v1/jobs", json=body, headers={"Idempotency-Key": f"bench-load-{i}"})
            if r.status_code not in (200, 201):
                raise RuntimeError(f"create {i}: {r.status_code} {r.text}")
            return time.perf_counter() - t0, r.json()["job_id"]

        async def main() -> list[tuple[float, str]]:
            limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
            async with httpx.AsyncClient(
                base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120, limits=limits
            ) as http:
                return await asyncio.gather(*(one(http, i) for i in range(clients)))

        results = asyncio.run(main())
        for _, job_id in results:  # cancel: the point was the creation, not 200 more computes
            self.http.post(f"/v1/jobs/{job_id}/cancel")
        _wait(lambda: all(self.state(j) in TERMINAL for _, j in results), 600, "load jobs final", 0.5)
        return sorted(lat for lat, _ in results)


# -- report ------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def report(
    samples: list[Sample],
    burst_s: float,
    burst: list[Sample],
    create_lat: list[float],
    load: tuple[tuple[float, ...], tuple[float, ...]],
    args: argparse.Namespace,
) -> str:
    inproc = [s.inproc_s for s in samples]
    e2e = [s.t_seen - s.t_create for s in samples]
    e2e_up = [s.t_seen - s.t_create + s.upload_s for s in samples]
    over = [(e - c) / c for e, c in zip(e2e, inproc)]
    over_up = [(e - c) / c for e, c in zip(e2e_up, inproc)]
    cb = [s for s in samples if s.t_callback]
    over_cb = [(s.t_callback - s.t_create - s.inproc_s) / s.inproc_s for s in cb]
    worker = [s.marks["end"] - s.marks["start"] - s.marks["get_s"] - s.marks["put_s"] for s in samples]
    parts = {
        "upload (2 files, HTTP + validation + store)": [s.upload_s for s in samples],
        "create (POST /v1/jobs)": [s.create_s for s in samples],
        "queue wait (created -> job_fn start)": [s.marks["start"] - s.t_created for s in samples],
        "store reads in the worker": [s.marks["get_s"] for s in samples],
        "compute in the worker (run_case)": worker,
        "store writes in the worker (outputs)": [s.marks["put_s"] for s in samples],
        "completion (job_fn end -> final seen by polling)": [s.t_seen - s.marks["end"] for s in samples],
        "completion (job_fn end -> callback received)": [s.t_callback - s.marks["end"] for s in cb],
    }
    n = len(samples)
    lines = [
        f"load average at start {load[0][0]:.2f} {load[0][1]:.2f} {load[0][2]:.2f}, "
        f"at end {load[1][0]:.2f} {load[1][1]:.2f} {load[1][2]:.2f}; OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
        f"{args.spacing} mm grid, {args.workers} CPU worker(s) at nice {samples[0].marks['nice']}, poll every {args.poll_s * 1000:.0f} ms",
        "",
        f"Sequential, {n} pair jobs (p50 / p90 / max, seconds unless stated):",
        "",
        "| figure | p50 | p90 | max |",
        "| --- | --- | --- | --- |",
    ]

    def row(name: str, values: list[float], fmt: str = "{:.3f}") -> None:
        if values:
            lines.append(
                f"| {name} | {fmt.format(pct(values, 0.5))} | {fmt.format(pct(values, 0.9))} | "
                f"{fmt.format(max(values))} |"
            )

    row("in-process compute (run_case)", inproc)
    row("end-to-end, create -> final seen", e2e)
    row("end-to-end, upload start -> final seen", e2e_up)
    for name, values in parts.items():
        row(name, values)
    row("overhead, create -> final seen (% of in-process)", [100 * o for o in over], "{:.1f} %")
    row("overhead, create -> callback (% of in-process)", [100 * o for o in over_cb], "{:.1f} %")
    row("overhead incl. upload (% of in-process)", [100 * o for o in over_up], "{:.1f} %")
    row("worker compute / in-process compute", [w / c for w, c in zip(worker, inproc)], "{:.2f}")
    service_fixed = [e - w for e, w in zip(e2e, worker)]
    row("service time outside compute (e2e - worker compute)", service_fixed)
    row("same, as % of in-process compute", [100 * f / c for f, c in zip(service_fixed, inproc)], "{:.1f} %")
    for stage in samples[0].inproc_stages:
        row(
            f"stage `{stage}`: worker / in-process",
            [
                s.worker_stages[stage] / s.inproc_stages[stage]
                for s in samples
                if s.inproc_stages.get(stage) and s.worker_stages.get(stage)
            ],
            "{:.2f}",
        )
    lines += [
        "",
        f"Burst: {len(burst)} jobs created at once on the uploaded inputs: all final after "
        f"{burst_s:.1f} s = {60 * len(burst) / burst_s:.1f} jobs/min; in one process the same jobs "
        f"take {sum(inproc):.1f} s in sequence = {60 * n / sum(inproc):.1f} jobs/min "
        f"(service throughput {100 * sum(inproc) / burst_s:.0f} % of in-process).",
    ]
    bq = [s.marks["start"] - s.t_created for s in burst]
    lines.append(
        f"Burst queue wait p50 {pct(bq, 0.5):.1f} s, max {max(bq):.1f} s; burst create call p50 "
        f"{1000 * pct([s.create_s for s in burst], 0.5):.0f} ms."
    )
    if create_lat:
        lines.append(
            f"Job creation under {len(create_lat)} concurrent clients (one POST /v1/jobs each, "
            f"Idempotency-Key): p50 {pct(create_lat, 0.5) * 1000:.0f} ms, p90 {pct(create_lat, 0.9) * 1000:.0f} ms, "
            f"p99 {pct(create_lat, 0.99) * 1000:.0f} ms, max {max(create_lat) * 1000:.0f} ms."
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1, help="CPU workers (the local Ray has 2 CPUs)")
    parser.add_argument("--clients", type=int, default=200, help="concurrent creators; 0 skips that phase")
    parser.add_argument("--poll-s", type=float, default=0.05)
    parser.add_argument(
        "--spacing",
        type=float,
        default=SAMPLE_SPACING_MM,
        help="synthetic grid in mm (0.15: the generator's full resolution; samples only at 0.5)",
    )
    parser.add_argument(
        "--keep-ray-niceness", action="store_true", help="leave Ray's worker niceness (15) instead of 0, this process's"
    )
    args = parser.parse_args()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="occlutrace-bench-service-") as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        cases = make_cases(args.jobs, tmp / "cases", args.spacing)
        print(f"{len(cases)} cases ready in {time.perf_counter() - t0:.1f} s", flush=True)
        bench = Bench(args, tmp)
        try:
            print("sequential phase", flush=True)
            samples = bench.sequential(cases)
            print("burst phase", flush=True)
            burst_s, burst = bench.burst(cases)
            create_lat = []
            if args.clients:
                print(f"{args.clients} concurrent creators", flush=True)
                create_lat = bench.concurrent_create(cases[0], args.clients)
        finally:
            bench.close()
    print()
    print(report(samples, burst_s, burst, create_lat, (load_start, os.getloadavg()), args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
