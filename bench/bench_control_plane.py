"""Control-plane costs against the size of the history (issue 18): restart, pages, batch status.

    python bench/bench_control_plane.py --sizes 10000 100000 1000000 [--store DIR] [--label after]
    python bench/bench_control_plane.py --s3 --sizes 5000 20000          # moto_server on loopback

A store is pre-filled, directly in the store layout, with N finished job records (of one tenant,
4 jobs a case) plus `--active` queued ones and one 1000-job batch: each job has its record, its
id index entry (`index/jobs/<id>.json`), its listing entries (`index/all/...`, and
`index/state/succeeded/...` when finished) and, when active, its queue marker. Layouts of the old
and the new code are both written, so the same store measures either version: run the script
with `PYTHONPATH` naming the checkout to measure (`--label` names it in the output), e.g. the
code before issue 18 from `git archive 5674512 | tar -x -C /tmp/old`.

Timed, median of `--repeat` (the slow ones once):
- restart: the dispatcher's `_rebuild` (the code that runs before its first dispatch), on the
  store alone (no Ray: the same method with a queue that records what it is given);
- page: `GET /v1/jobs?limit=50`, the last page (after the newest finished job: the active ones);
- filtered page: `GET /v1/jobs?limit=50&state=rejected` (no job has that state: the worst case);
- batch: `GET /v1/batches/{id}` of the 1000-job batch (100 per page, counts over all 1000).
Pages go through the real FastAPI app in this process (TestClient), store calls included.
Local planting skips fsync (the layout is the same); a store already planted (`DIR/planted.json`)
is reused, so the before and after runs read the very same files.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

BENCH_DIR = Path(__file__).resolve().parent
TENANT, TOKEN = "alpha", "tok-bench-0123456789"
BATCH_JOBS = 1000
START_MS = 1_700_000_000_000  # history ids: one job every 30 ms from here (about 8 h per 1M)


def job_id(i: int, start_ms: int = START_MS, step_ms: int = 30) -> str:
    return f"j{start_ms + i * step_ms:012x}{i:012x}"


def shard(jid: str) -> str:
    return f"{jid[1:6]}/{jid[6:9]}"


def record_json(jid: str, case: str, state: str, batch_id: str | None) -> str:
    inputs = {
        "fixed": f"tenants/{TENANT}/cases/{case}/inputs/fixed.stl",
        "moving": f"tenants/{TENANT}/cases/{case}/inputs/moving.stl",
    }
    return json.dumps(
        {
            "spec": {
                "job_id": jid,
                "tenant": TENANT,
                "case": case,
                "kind": "pair",
                "inputs": inputs,
                "options": {
                    "device": "auto",
                    "tolerance_mm": 0.05,
                    "contact_threshold_mm": 0.1,
                    "settle": False,
                    "landmarks": None,
                },
            },
            "state": state,
            "attempts": 1 if state != "queued" else 0,
            "reason": None,
            "batch_id": batch_id,
            "callback_url": None,
            "idempotency_key": None,
            "created_at": "2026-12-01T00:00:00Z",
            "updated_at": "2026-12-01T00:00:01Z",
            "result": {"status": "succeeded"} if state == "succeeded" else None,
        },
        indent=2,
        sort_keys=True,
    )


def layout(n: int, active: int) -> list[tuple[str, str, str, str | None]]:
    """(job id, case, state, batch id) of the planted jobs: n finished, then `active` queued."""
    jobs = []
    for i in range(n):
        jobs.append((job_id(i), f"c{i // 4:07d}", "succeeded", "b000000000000batch" if i < BATCH_JOBS else None))
    now = START_MS + n * 30 + 60_000
    for k in range(active):
        jobs.append((job_id(n + k, now, 1), f"live{k:04d}", "queued", None))
    return jobs


def objects_of(jid: str, case: str, state: str, batch: str | None, id_index: bool = True) -> list[tuple[str, bytes]]:
    t = f"tenants/{TENANT}"
    out = [
        (f"{t}/cases/{case}/jobs/{jid}/job.json", record_json(jid, case, state, batch).encode()),
        (f"{t}/index/all/{shard(jid)}/{jid}.{case}", b""),
    ]
    if id_index or state == "queued":
        out.append((f"{t}/index/jobs/{jid}.json", json.dumps({"case": case}).encode()))
    if state == "queued":
        out.append((f"queue/{TENANT}/{jid}.json", json.dumps({"case": case}).encode()))
    else:
        out.append((f"{t}/index/state/{state}/{shard(jid)}/{jid}.{case}", b""))
        if batch:
            out.append((f"{t}/batches/{batch}/done/{jid}.{state}", b""))
    return out


def batch_object(jobs) -> tuple[str, bytes]:
    members = [[jid, case] for jid, case, _, batch in jobs if batch]
    return (
        f"tenants/{TENANT}/batches/b000000000000batch.json",
        json.dumps({"batch_id": "b000000000000batch", "jobs": members}).encode(),
    )


SPARSE_RECORDS = 5000


def plant_local(root: Path, n: int, active: int, id_index: bool = True, sparse: bool = False) -> None:
    """Plain file writes in the LocalStore layout (no fsync: a bench fixture, not the service).
    `sparse`: past the first SPARSE_RECORDS finished jobs (which hold the batch and the first
    pages), only the listing and state index entries are written, not the records."""
    marker = root / "planted.json"
    want = {"n": n, "active": active, "id_index": id_index, "sparse": sparse}
    if marker.exists() and {"id_index": True, "sparse": False, **json.loads(marker.read_text())} == want:
        return
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"{root} holds another planting: use an empty folder")
    t0 = time.perf_counter()
    jobs = layout(n, active)
    made: set[str] = set()
    flags = os.O_CREAT | os.O_WRONLY | os.O_TRUNC
    for i, job in enumerate(jobs):
        if sparse and SPARSE_RECORDS <= i < n:
            jid, case, state, _ = job
            for prefix in ("all", f"state/{state}"):
                folder = f"{root}/tenants/{TENANT}/index/{prefix}/{shard(jid)}"
                if folder not in made:
                    os.makedirs(folder, exist_ok=True)
                    made.add(folder)
                os.close(os.open(f"{folder}/{jid}.{case}", flags, 0o600))
            if i % 100_000 == 0:
                print(f"  planted {i:,} jobs ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
            continue
        for key, data in objects_of(*job, id_index=id_index):
            path = root / key
            parent = str(path.parent)
            if parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(parent)
            with open(path, "wb") as f:
                f.write(data)
        if i % 100_000 == 0 and i:
            print(f"  planted {i:,} jobs ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    key, data = batch_object(jobs)
    (root / key).parent.mkdir(parents=True, exist_ok=True)
    (root / key).write_bytes(data)
    marker.write_text(json.dumps(want))
    print(f"  planted {n:,} + {active} jobs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


def plant_s3(store, n: int, active: int) -> None:
    jobs = layout(n, active)
    objects = [obj for job in jobs for obj in objects_of(*job)] + [batch_object(jobs)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda kv: store.put(*kv), objects))
    print(
        f"  planted {n:,} + {active} jobs ({len(objects):,} objects) in {time.perf_counter() - t0:.0f} s",
        file=sys.stderr,
    )


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def measure(store, config_store_url: str, n: int, active: int, repeat: int, slow_repeat: int) -> dict:
    from fastapi.testclient import TestClient

    from occlutrace_compute.service.app import create_app
    from occlutrace_compute.service.config import ServiceConfig
    from occlutrace_compute.service.dispatcher import Dispatcher
    from occlutrace_compute.service.records import JobRepo

    # The dispatcher's start-up, without Ray: its own _rebuild on a stand-in that records the queue.
    def restart() -> int:
        queued: list = []
        Dispatcher._rebuild(SimpleNamespace(repo=JobRepo(store), _enqueue=queued.append))
        return len(queued)

    row: dict = {"n": n, "active": active}
    t_restart, queued = timed(restart, slow_repeat)
    assert queued == active, f"the rebuild queued {queued} jobs, {active} are active"
    row["restart_s"] = t_restart

    tokens = Path(tempfile.mkdtemp()) / "tokens"
    tokens.write_text(f"{TENANT} {TOKEN}\n")
    config = ServiceConfig.from_env(store=config_store_url, tokens_file=str(tokens), rate_burst=10**6, rate_per_s=10**6)
    client = TestClient(create_app(config, store=store), headers={"Authorization": f"Bearer {TOKEN}"})
    logging.getLogger("occlutrace").setLevel(logging.WARNING)  # no access log line per request

    def get(path: str, **params):
        r = client.get(path, params=params)
        assert r.status_code == 200, r.text
        return r.json()

    last_finished = job_id(n - 1)
    row["page_s"], page = timed(lambda: get("/v1/jobs", limit=50, after=last_finished), repeat)
    assert len(page["jobs"]) == min(50, active), page
    row["first_page_s"], page = timed(lambda: get("/v1/jobs", limit=50), repeat)
    assert len(page["jobs"]) == 50
    row["filtered_page_s"], page = timed(lambda: get("/v1/jobs", limit=50, state="rejected"), slow_repeat)
    assert page["jobs"] == []
    row["batch_s"], batch = timed(lambda: get("/v1/batches/b000000000000batch"), repeat)
    assert batch["total"] == BATCH_JOBS and batch["counts"] == {"succeeded": BATCH_JOBS}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--active", type=int, default=300)
    ap.add_argument("--store", type=Path, help="parent folder of the planted stores (kept for reuse)")
    ap.add_argument("--s3", action="store_true", help="moto_server on loopback instead of a local folder")
    ap.add_argument(
        "--s3-endpoint",
        help="with --s3: a running moto_server (http://127.0.0.1:PORT) whose buckets "
        "keep the planting for the next run (else a fresh one is started)",
    )
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--slow-repeat", type=int, default=1, help="repeats of the restart and the filtered page")
    ap.add_argument(
        "--no-id-index",
        action="store_true",
        help="plant no `index/jobs/<id>.json` for finished jobs: read only by the old code's "
        "listing (and by lookups by id, not timed here); saves a file per job (1M runs on tmpfs)",
    )
    ap.add_argument(
        "--sparse",
        action="store_true",
        help="plant the records of the first 5,000 finished jobs only (the others: their index "
        "entries): what the new code reads; for 1M on a tmpfs, whose inodes run out",
    )
    ap.add_argument("--label", default="")
    ap.add_argument("--json", type=Path, help="append one JSON line per size here")
    args = ap.parse_args()

    import occlutrace_compute

    code = str(Path(occlutrace_compute.__file__).resolve().parents[1])
    print(f"code: {code}  label: {args.label or '-'}  store: {'moto S3' if args.s3 else 'local folder'}")
    print(f"{'jobs':>9} {'restart':>9} {'page':>8} {'1st page':>9} {'filtered':>9} {'batch':>8}   (s)")
    moto = None
    if args.s3:
        sys.path.insert(0, str(BENCH_DIR.parent / "tests"))
        from s3server import MotoServer, S3Endpoint

        if args.s3_endpoint:
            info = S3Endpoint(args.s3_endpoint)
        else:
            moto = MotoServer(Path(tempfile.mkdtemp()))
            moto.start()
            info = moto.info
    try:
        for n in args.sizes:
            if args.s3:
                from occlutrace_compute.storage import S3Store

                store = S3Store(info.endpoint, info.access_key, info.secret_key, f"bench-{n}", region=info.region)
                planted = {"n": n, "active": args.active}
                if not store.exists("planted.json") or store.get_json("planted.json") != planted:
                    plant_s3(store, n, args.active)
                    store.put_json("planted.json", planted)
                url = f"file://{tempfile.mkdtemp()}"  # unused: the app is given the store
            else:
                from occlutrace_compute.storage import LocalStore

                root = (args.store or Path(tempfile.gettempdir()) / "occlutrace-bench-cp") / f"n{n}"
                root.mkdir(parents=True, exist_ok=True)
                plant_local(root, n, args.active, id_index=not args.no_id_index, sparse=args.sparse)
                store, url = LocalStore(root), f"file://{root}"
            row = measure(store, url, n, args.active, args.repeat, args.slow_repeat)
            row.update(
                label=args.label,
                code=code,
                backend="s3" if args.s3 else "local",
                store=str(args.store) if not args.s3 else "moto",
                id_index=not args.no_id_index,
                sparse=args.sparse,
            )
            print(
                f"{n:>9,} {row['restart_s']:>9.3f} {row['page_s']:>8.3f} {row['first_page_s']:>9.3f}"
                f" {row['filtered_page_s']:>9.3f} {row['batch_s']:>8.3f}",
                flush=True,
            )
            if args.json:
                with args.json.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    finally:
        if moto is not None:
            moto.stop()


if __name__ == "__main__":
    main()
