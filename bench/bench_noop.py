"""No-op jobs through the whole service: jobs/s from creation to final state (issue 18, item 2).

    python bench/bench_noop.py [--jobs 2000] [--batch 1000] [--store DIR] [--s3]

Starts a local Ray (num_cpus=2) with the dispatcher and `--workers` CPU workers (default 1), and a real controller
(uvicorn on 127.0.0.1); the workers run `noop_job` (the `job_fn` hook: reads nothing, returns a
small result). One case's inputs are uploaded once, then `--jobs` jobs are created in batches of
`--batch` (POST /v1/batches) and the batches polled (GET /v1/batches/{id}?limit=1, every 0.5 s)
until every job is final. Prints creation time, time to the last final state, jobs/s, the CPU seconds of
the controller (this process), the dispatcher and the workers over that time, and checks that
every job succeeded on its first attempt (nothing lost, nothing run twice).

`--store DIR`: run on that local store, e.g. one planted by bench_control_plane.py with a big
history (jobs are added to its tenant `alpha`; its queued jobs run too and are counted apart);
default a fresh temp folder. `--s3`: a fresh moto_server on loopback instead.
Run it with `PYTHONPATH` naming the checkout to measure, as bench_control_plane.py.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
TENANT, TOKEN = "alpha", "tok-noop-bench-0123456789"


def noop_job(spec, store) -> dict:
    """The job function the workers run: no store access, no compute."""
    return {"kind": spec.kind, "status": "succeeded", "noop": True}


def _wait(cond, timeout_s: float, what: str, every_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every_s)
    raise SystemExit(f"timed out after {timeout_s} s: {what}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--store", type=Path)
    ap.add_argument("--s3", action="store_true")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--workers", type=int, default=1, help="CPU workers (each takes one of the 2 Ray CPUs)")
    ap.add_argument("--job-batch", type=int, default=4, help="jobs per dispatched batch (OCCLUTRACE_BATCH_SIZE)")
    args = ap.parse_args()

    import httpx
    import psutil
    import ray
    import uvicorn

    import occlutrace_compute
    from occlutrace_compute.service.config import ServiceConfig
    from occlutrace_compute.service.dispatcher import get_dispatcher
    from occlutrace_compute.service.server import build_app

    sys.path.insert(0, str(BENCH_DIR.parent / "tests"))
    from test_service_support import mesh_bytes

    code = str(Path(occlutrace_compute.__file__).resolve().parents[1])
    tmp = Path(tempfile.mkdtemp())
    (tmp / "tokens").write_text(f"{TENANT} {TOKEN}\n")
    moto = None
    extra: dict = {}
    if args.s3:
        from s3server import MotoServer

        moto = MotoServer(tmp)
        moto.start()
        atexit.register(moto.stop)  # also when the set-up below fails
        info = moto.info
        store_url = "s3://noop-bench"
        extra = {
            "s3_endpoint": info.endpoint,
            "s3_access_key": info.access_key,
            "s3_secret_key": info.secret_key,
            "s3_region": info.region,
        }
    else:
        store_url = f"file://{args.store or tmp / 'store'}"
    env = {"PYTHONPATH": os.pathsep.join([str(BENCH_DIR), code, str(BENCH_DIR.parent / "tests")])}
    os.environ["RAY_worker_niceness"] = "0"  # noqa: SIM112 (Ray reads this exact name)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        namespace="occlutrace-noop",
        runtime_env={"env_vars": env},
    )
    config = ServiceConfig.from_env(
        store=store_url,
        tokens_file=str(tmp / "tokens"),
        job_fn="bench_noop:noop_job",
        ray_namespace="occlutrace-noop",
        cpu_workers=args.workers,
        max_workers=args.workers,
        batch_size=args.job_batch,
        rate_per_s=10_000.0,
        rate_burst=10_000,
        **extra,
    )
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(config),
            host="127.0.0.1",
            port=port,
            access_log=False,
            log_level="warning",
            limit_concurrency=1000,
            timeout_keep_alive=30,
        )
    )
    logging.getLogger("occlutrace").setLevel(logging.WARNING)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait(lambda: server.started, 60, "uvicorn start", 0.05)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300)
    try:
        _wait(lambda: http.get("/readyz").status_code == 200, 180, "controller ready", 0.5)
        for role, seed in (("fixed", 0), ("moving", 1)):
            r = http.post("/v1/cases/noop-1/files", files={"file": (f"{role}.stl", mesh_bytes(seed))})
            assert r.status_code == 201, r.text
        # The worker up and warm before the clock starts: one job through.
        job = {"case": "noop-1", "kind": "pair", "inputs": {"fixed": "fixed.stl", "moving": "moving.stl"}}
        warm = http.post("/v1/jobs", json=job).json()["job_id"]
        _wait(lambda: http.get(f"/v1/jobs/{warm}").json()["state"] == "succeeded", 300, "warm-up job", 0.2)

        dispatcher = get_dispatcher(config)
        _wait(  # every worker up, so that each one's CPU is counted from the start
            lambda: len(ray.get(dispatcher.stats.remote(), timeout=60).get("worker_pids", [])) >= args.workers,
            300,
            f"{args.workers} workers ready",
            0.2,
        )
        stats = ray.get(dispatcher.stats.remote(), timeout=60)
        procs = {"controller + client (this process)": [psutil.Process()]}
        procs["dispatcher"] = [psutil.Process(stats["pid"])]
        procs["workers"] = [psutil.Process(pid) for pid in stats.get("worker_pids", [])]
        cpu0 = {name: _cpu(ps) for name, ps in procs.items()}
        t0 = time.perf_counter()
        batches = []
        for start in range(0, args.jobs, args.batch):
            n = min(args.batch, args.jobs - start)
            r = http.post("/v1/batches", json={"jobs": [job] * n})
            assert r.status_code == 201, r.text
            batches.append(r.json()["batch_id"])
        t_created = time.perf_counter() - t0
        final_at_created = sum(
            http.get(f"/v1/batches/{b}", params={"limit": 1}).json()["counts"].get("succeeded", 0) for b in batches
        )
        pending = set(batches)
        statuses: dict[str, dict] = {}

        def all_done() -> bool:  # counts only while waiting (limit=1): a client polling progress
            for batch_id in list(pending):
                if http.get(f"/v1/batches/{batch_id}", params={"limit": 1}).json()["done"]:
                    pending.discard(batch_id)
            return not pending

        _wait(all_done, args.timeout, "every job final", 0.5)
        t_final = time.perf_counter() - t0
        cpu = {name: _cpu(ps) - cpu0[name] for name, ps in procs.items()}
        for batch_id in batches:  # every job's attempts, once all are final
            statuses[batch_id] = http.get(f"/v1/batches/{batch_id}", params={"limit": 1000}).json()
        counts: dict[str, int] = {}
        attempts: dict[int, int] = {}
        for status in statuses.values():
            for state, k in status["counts"].items():
                counts[state] = counts.get(state, 0) + k
            for j in status["jobs"]:
                attempts[j["attempts"]] = attempts.get(j["attempts"], 0) + 1
        print(f"code: {code}  store: {'moto S3' if args.s3 else store_url}")
        print(f"{args.workers} worker(s), {args.job_batch} jobs a dispatched batch")
        print(
            f"{args.jobs} no-op jobs in batches of {args.batch}: created in {t_created:.1f} s"
            f" ({args.jobs / t_created:.0f} jobs/s), all final after {t_final:.1f} s"
            f" -> {args.jobs / t_final:.0f} jobs/s end to end"
        )
        print(f"{final_at_created} jobs final when the last batch was created")
        print(
            "CPU seconds from the first creation to the last final state: "
            + ", ".join(f"{name} {sec:.1f} s ({1000 * sec / args.jobs:.1f} ms/job)" for name, sec in cpu.items())
            + f"; load average {os.getloadavg()[0]:.1f}"
        )
        print(f"states: {counts}  attempts: {attempts}")
        assert counts == {"succeeded": args.jobs}, counts
        assert attempts == {1: args.jobs}, attempts
    finally:
        http.close()
        server.should_exit = True
        thread.join(30)
        dispatcher = get_dispatcher(config)
        ray.get(dispatcher.shutdown.remote(), timeout=30)
        ray.kill(dispatcher, no_restart=True)
        ray.shutdown()
        if moto is not None:
            moto.stop()


def _cpu(procs: list) -> float:
    """User + system CPU seconds of `procs` (and their threads) so far."""
    return sum(t.user + t.system for t in (p.cpu_times() for p in procs))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
