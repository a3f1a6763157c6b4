"""The control plane's cost follows the work in flight or the page, never the history (issue 18).

Real parts: a local folder store, moto_server on loopback (behind a request-recording TCP gate),
the FastAPI app, and Ray for the dispatcher. The history is planted with `JobRepo`, the way the
service writes it, so the tests hold whatever the store layout's details are.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import socket
import threading
import time

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st
from test_service_support import JOB_FN, Gate, ray_session, wait_for, write_tokens

from occlutrace_compute.jobs.models import TERMINAL_STATES, JobRecord, JobSpec
from occlutrace_compute.service.app import create_app
from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.records import JobRef, JobRepo
from occlutrace_compute.storage import LocalStore, S3Store
from occlutrace_compute.storage.base import ObjectStore

STATES = ("queued", "running", "succeeded", "failed", "rejected", "cancelled")


def make_s3(endpoint: str, server, bucket: str, prefix: str = "") -> S3Store:
    return S3Store(endpoint, server.access_key, server.secret_key, bucket, prefix=prefix, region=server.region)


class RecordingGate(Gate):
    """A Gate that also records the request line (method, path) of every HTTP request through it."""

    _REQUEST = re.compile(rb"(GET|PUT|HEAD|DELETE|POST) (/\S*) HTTP/1\.[01]\r\n")

    def __init__(self, upstream_port: int) -> None:
        self.requests: list[tuple[str, str]] = []
        self._rec_lock = threading.Lock()
        super().__init__(upstream_port)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:  # type: ignore[override]
        to_server = src.getpeername()[1] != self.upstream_port
        carry = b""
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                if to_server:
                    data = carry + chunk
                    found = [(m.group(1).decode(), m.group(2).decode()) for m in self._REQUEST.finditer(data)]
                    with self._rec_lock:
                        self.requests += found
                    cut = data.rfind(b"\r\n")
                    carry = data[cut + 2 :][-200:] if cut >= 0 else data[-200:]
                dst.sendall(chunk)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def take(self) -> list[tuple[str, str]]:
        with self._rec_lock:
            out, self.requests = self.requests, []
        return out


# -- the store's paginated listing ------------------------------------------------------------

_SEGMENT = st.sampled_from(["a", "b", "b.txt", "b-1", "c", "ca", "0", "z", "Z", "a.b"])
_KEYS = st.sets(st.lists(_SEGMENT, min_size=1, max_size=3).map("/".join), min_size=0, max_size=25)


def _consistent(keys: set[str]) -> list[str]:
    """Drop keys that would need another key to be a folder (a/b and a/b/c cannot both be objects)."""
    out: list[str] = []
    for key in sorted(keys, key=len):
        parts = key.split("/")
        if any("/".join(parts[:i]) in out for i in range(1, len(parts))):
            continue
        if any(k.startswith(key + "/") for k in out):
            continue
        out.append(key)
    return sorted(out)


def _check_pages(store: ObjectStore, keys: list[str], prefix: str, start_after: str | None, limit: int) -> None:
    folder = prefix.rstrip("/") + "/" if prefix else ""
    under = sorted(k for k in keys if k.startswith(folder))
    expected = [k for k in under if start_after is None or k > start_after]
    assert store.list(prefix, start_after=start_after, limit=limit) == expected[:limit]
    assert store.list(prefix, start_after=start_after) == expected
    assert list(store.iter_keys(prefix, start_after=start_after, page=limit)) == expected


_PAGE_ARGS = {
    "keys": _KEYS,
    "prefix": st.sampled_from(["", "a", "b", "a/b"]),
    "start_after": st.none()
    | _SEGMENT
    | st.lists(_SEGMENT, min_size=1, max_size=4).map("/".join)
    | st.text(alphabet="abz/.-0~", max_size=6),
    "limit": st.integers(1, 7),
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**_PAGE_ARGS)
def test_local_pages_equal_the_sorted_filtered_listing(tmp_path_factory, keys, prefix, start_after, limit):
    store = LocalStore(tmp_path_factory.mktemp("pages"))
    keys = _consistent(keys)
    for key in keys:
        store.put(key, b"")
    _check_pages(store, keys, prefix, start_after, limit)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**_PAGE_ARGS)
def test_s3_pages_equal_the_sorted_filtered_listing(s3_server, s3_bucket, keys, prefix, start_after, limit):
    store = make_s3(s3_server.endpoint, s3_server, s3_bucket, prefix=f"p{os.urandom(5).hex()}")
    keys = _consistent(keys)
    for key in keys:
        store.put(key, b"")
    _check_pages(store, keys, prefix, start_after, limit)


def test_local_page_reads_only_the_folders_on_its_path(tmp_path, monkeypatch):
    """20 x 20 x 10 keys; a page in the middle reads the folders on the way there, not all 400."""
    store = LocalStore(tmp_path)
    for i, j in itertools.product(range(20), range(20)):
        folder = tmp_path / "h" / f"{i:02d}" / f"{j:02d}"
        folder.mkdir(parents=True)
        for k in range(10):
            (folder / f"k{k}").write_bytes(b"")
    reads: list[str] = []
    real = os.scandir
    monkeypatch.setattr(os, "scandir", lambda p: (reads.append(str(p)), real(p))[1])
    page = store.list("h", start_after="h/17/13/k4", limit=12)
    assert page == [f"h/17/13/k{k}" for k in range(5, 10)] + [f"h/17/14/k{k}" for k in range(7)]
    assert len(reads) <= 4, reads  # h, h/17, h/17/13, h/17/14 (and nothing else)


def test_s3_page_is_one_list_request(s3_server, s3_bucket):
    writer = make_s3(s3_server.endpoint, s3_server, s3_bucket)
    names = [f"idx/{i:05d}" for i in range(330)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: writer.put(k, b""), names))
    gate = RecordingGate(int(s3_server.endpoint.rsplit(":", 1)[1]))
    try:
        store = make_s3(gate.endpoint, s3_server, s3_bucket)
        store.exists("warm-up")  # the bucket check and a first connection
        gate.take()
        assert store.list("idx", start_after="idx/00199", limit=50) == names[200:250]
        requests = gate.take()
        assert len(requests) == 1 and "start-after=" in requests[0][1] and "max-keys=50" in requests[0][1], requests
        assert list(store.iter_keys("idx", page=100)) == names
        assert len(gate.take()) == 4
    finally:
        gate.close()


# -- the job listing: O(page) store calls, whatever the history --------------------------------


class CountingStore(LocalStore):
    """A local store that counts reads (the calls a page pays for)."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.calls = 0

    def get(self, key):
        self.calls += 1
        return super().get(key)

    def exists(self, key):
        self.calls += 1
        return super().exists(key)

    def list(self, prefix, *page, **paging):
        self.calls += 1
        return super().list(prefix, *page, **paging)


def plant(
    repo: JobRepo,
    n: int,
    states: list[str] | None = None,
    tenant: str = "alpha",
    start_ms: int | None = None,
    case_of=lambda i: f"case-{i % 7}",
    batch_id: str | None = None,
) -> list[JobRecord]:
    """`n` jobs as the service writes them (create, then a transition to their state), ids spread
    over minutes so that they fall into several index shards."""
    start_ms = start_ms or int(time.time() * 1000) - 10_000_000
    out = []
    for i in range(n):
        job_id = f"j{start_ms + i * 997:012x}{i:012x}"
        case = case_of(i)
        spec = JobSpec(
            job_id=job_id,
            tenant=tenant,
            case=case,
            kind="pair",
            inputs={
                "fixed": f"tenants/{tenant}/cases/{case}/inputs/f.stl",
                "moving": f"tenants/{tenant}/cases/{case}/inputs/m.stl",
            },
        )
        record = JobRecord(spec=spec, batch_id=batch_id)
        assert repo.create(record)
        state = states[i] if states else "succeeded"
        if state != "queued":
            record.state = state
            repo.save(record)
        out.append(record)
    return out


def _app(tmp_path, store):
    tokens = write_tokens(tmp_path / "tokens", {"tok-alpha-0123456789": "alpha", "tok-beta-01234567890": "beta"})
    config = ServiceConfig.from_env(store=f"file://{store.root}", tokens_file=str(tokens), job_fn=JOB_FN)
    app = create_app(config, store=store)
    return TestClient(app, headers={"Authorization": "Bearer tok-alpha-0123456789"})


@pytest.fixture
def no_fsync(monkeypatch):
    """Planting a history fast: the same files, without the local store's durability syncs."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def test_a_filtered_page_costs_the_same_store_calls_at_any_history_size(tmp_path, no_fsync):
    """No job matches the filter: the old listing read every record of the tenant (2 per job)."""
    costs = {}
    for n in (40, 400):
        store = CountingStore(tmp_path / f"store-{n}")
        plant(JobRepo(store), n, states=["failed"] * n)
        client = _app(tmp_path, store)
        costs[n] = {}
        for state in (None, "succeeded", "queued", "failed"):
            store.calls = 0
            page = client.get("/v1/jobs", params={"limit": 10, **({"state": state} if state else {})}).json()
            costs[n][state] = store.calls
            want = 10 if state in (None, "failed") else 0
            assert len(page["jobs"]) == want, (n, state, page)
    assert costs[40] == costs[400], costs
    assert max(costs[400].values()) <= 1 + 10, costs  # one index listing + the page's records


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_pages_walk_every_job_once_in_id_order_for_every_filter(tmp_path, backend, request, no_fsync):
    if backend == "local":
        store: ObjectStore = LocalStore(tmp_path / "store")
    else:
        server = request.getfixturevalue("s3_server")
        store = make_s3(server.endpoint, server, request.getfixturevalue("s3_bucket"))
    rng = random.Random(18)
    states = [rng.choice(STATES) for _ in range(60 if backend == "local" else 30)]
    records = plant(JobRepo(store), len(states), states=states)
    plant(JobRepo(store), 5, tenant="beta", start_ms=int(time.time() * 1000) - 9_000_000)
    tokens = write_tokens(tmp_path / "tokens", {"tok-alpha-0123456789": "alpha"})
    config = ServiceConfig.from_env(store=f"file://{tmp_path / 'unused'}", tokens_file=str(tokens), job_fn=JOB_FN)
    client = TestClient(create_app(config, store=store), headers={"Authorization": "Bearer tok-alpha-0123456789"})
    for state in (None, *STATES):
        seen, after, pages = [], None, 0
        while True:
            params = {"limit": 7, **({"state": state} if state else {}), **({"after": after} if after else {})}
            page = client.get("/v1/jobs", params=params).json()
            assert len(page["jobs"]) <= 7
            seen += [(j["job_id"], j["state"]) for j in page["jobs"]]
            after, pages = page["next"], pages + 1
            if after is None:
                break
            assert pages < 100
        want = [(r.spec.job_id, r.state) for r in records if state is None or r.state == state]
        assert seen == want, state
    assert client.get("/v1/jobs", params={"after": "not-an-id"}).status_code == 422


def test_a_stale_index_entry_is_skipped(tmp_path):
    """A lost race (a cancel overwriting a just-finished job) leaves the job in two state indexes:
    each listing shows it once, in the state its record holds."""
    store = LocalStore(tmp_path / "store")
    repo = JobRepo(store)
    (record,) = plant(repo, 1, states=["succeeded"])
    record.state = "cancelled"
    repo.save(record)
    client = _app(tmp_path, store)
    assert client.get("/v1/jobs", params={"state": "succeeded"}).json()["jobs"] == []
    assert [j["state"] for j in client.get("/v1/jobs", params={"state": "cancelled"}).json()["jobs"]] == ["cancelled"]
    assert [j["state"] for j in client.get("/v1/jobs").json()["jobs"]] == ["cancelled"]


def test_purge_removes_the_case_from_every_index(tmp_path, no_fsync):
    store = LocalStore(tmp_path / "store")
    states = [STATES[i % len(STATES)] for i in range(24)]
    records = plant(JobRepo(store), 24, states=states, case_of=lambda i: "gone-1" if i % 2 else "kept-1")
    client = _app(tmp_path, store)
    purged = client.delete("/v1/cases/gone-1").json()
    gone = {r.spec.job_id for r in records if r.spec.case == "gone-1"}
    leftovers = [k for k in store.list("") if any(j in k for j in gone) or "gone-1" in k]
    assert leftovers == []
    assert all(any(j in k for k in purged["removed"]) for j in gone)
    for state in (None, *STATES):
        listed = client.get("/v1/jobs", params={"limit": 100, **({"state": state} if state else {})}).json()["jobs"]
        assert {j["case"] for j in listed} <= {"kept-1"}
    assert len(client.get("/v1/jobs", params={"limit": 100}).json()["jobs"]) == 12


def test_batch_status_reads_the_done_entries_not_every_member(tmp_path, no_fsync):
    """A 300-job batch, 3 members active: counts from one listing of its entries, and only the
    page's records read (the oldest status read all 300 records per request, the next one every
    active member's); a purged case's members count as purged."""
    store = CountingStore(tmp_path / "store")
    rng = random.Random(7)
    states = [rng.choice(("succeeded", "failed", "rejected", "cancelled")) for _ in range(300)]
    states[:5] = ["queued", "running", "queued", "succeeded", "failed"]
    records = plant(
        JobRepo(store), 300, states=states, batch_id="b0123456789abcdef", case_of=lambda i: f"case-{i % 10}"
    )
    for case in {r.spec.case for r in records}:  # as POST /v1/batches writes them: how a purge finds the batch
        store.put(f"tenants/alpha/cases/{case}/batches/b0123456789abcdef", b"")
    store.put_json(
        "tenants/alpha/batches/b0123456789abcdef.json",
        {"batch_id": "b0123456789abcdef", "jobs": [[r.spec.job_id, r.spec.case] for r in records]},
    )
    client = _app(tmp_path, store)
    store.calls = 0
    status = client.get("/v1/batches/b0123456789abcdef", params={"limit": 20}).json()
    want: dict[str, int] = {}
    for state in states:
        want[state] = want.get(state, 0) + 1
    assert status["counts"] == want and status["total"] == 300 and not status["done"]
    assert [j["job_id"] for j in status["jobs"]] == [r.spec.job_id for r in records[:20]]
    # batch, one listing of its done and running entries, the page: no read of an active member
    # (the counters' point: an active batch costs what a finished one does; the old code read 3 more)
    assert store.calls <= 2 + 20, store.calls
    purged = {r.spec.job_id for r in records if r.spec.case == "case-3"}
    assert client.delete("/v1/cases/case-3").status_code == 200
    assert [k for k in store.list("tenants/alpha/batches/") if any(j in k for j in purged)] == []
    status = client.get("/v1/batches/b0123456789abcdef", params={"limit": 300}).json()
    assert status["counts"]["purged"] == 30 and sum(status["counts"].values()) == 300
    assert {j["job_id"] for j in status["jobs"]} == {r.spec.job_id for r in records} - purged


# -- the dispatcher's restart: the active jobs' markers, nothing of the history ----------------


def test_dispatcher_restart_reads_nothing_of_the_history(tmp_path, s3_server, s3_bucket):
    """120 finished jobs of history and 3 queued ones on S3: the dispatcher (on Ray, its store
    reached through a recording gate) runs the 3 without one request naming a history job.
    The old start-up scan listed the whole `tenants/` tree and read every job record."""
    from occlutrace_compute.service.dispatcher import get_dispatcher

    direct = make_s3(s3_server.endpoint, s3_server, s3_bucket)
    repo = JobRepo(direct)
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> None:
        plant(repo, 1, start_ms=1_700_000_000_000 + i * 1000, case_of=lambda _: f"hist-{i % 50}")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(120)))
    active = []
    for i in range(3):
        case = f"live-{i}"
        for role in ("f", "m"):
            direct.put(f"tenants/alpha/cases/{case}/inputs/{role}.stl", b"solid x\nendsolid x\n")
        active += plant(repo, 1, states=["queued"], start_ms=int(time.time() * 1000) + i, case_of=lambda _: case)
    gate = RecordingGate(int(s3_server.endpoint.rsplit(":", 1)[1]))
    tokens = write_tokens(tmp_path / "tokens", {"tok-alpha-0123456789": "alpha"})
    config = ServiceConfig.from_env(
        store=f"s3://{s3_bucket}",
        s3_endpoint=gate.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        s3_region=s3_server.region,
        tokens_file=str(tokens),
        job_fn=JOB_FN,
        ray_namespace="scale",
        rescan_s=1.0,
        cpu_workers=1,
    )
    try:
        with ray_session(num_cpus=2):
            import ray

            dispatcher = get_dispatcher(config)
            try:
                for record in active:
                    ref = JobRef("alpha", record.spec.case, record.spec.job_id)
                    wait_for(
                        lambda: (r := repo.load(ref)) is not None and r.state in TERMINAL_STATES,
                        120,
                        f"job {ref.job_id} to finish",
                        every_s=0.2,
                    )
                    assert repo.load(ref).state == "succeeded"
            finally:
                ray.get(dispatcher.shutdown.remote(), timeout=30)
                ray.kill(dispatcher, no_restart=True)
    finally:
        gate.close()
    requests = gate.take()
    assert requests, "the dispatcher reached the store through the gate"
    touched = [path for _, path in requests if "hist-" in path or "prefix=tenants" in path]
    assert touched == [], touched[:5]


def test_reindex_lists_jobs_stored_before_the_indexes(tmp_path, no_fsync):
    from occlutrace_compute.service.reindex import reindex

    store = LocalStore(tmp_path / "store")
    states = [STATES[i % len(STATES)] for i in range(18)]
    records = plant(JobRepo(store), 18, states=states, batch_id="b0123456789abcdef")
    for prefix in ("tenants/alpha/index/all/", "tenants/alpha/index/state/", "tenants/alpha/batches/"):
        store.delete_prefix(prefix)  # a store written before the indexes existed
    client = _app(tmp_path, store)
    assert client.get("/v1/jobs").json()["jobs"] == []
    assert reindex(store) == 18 and reindex(store) == 18  # again: the same keys
    assert [j["job_id"] for j in client.get("/v1/jobs").json()["jobs"]] == [r.spec.job_id for r in records]
    for state in STATES:
        listed = client.get("/v1/jobs", params={"state": state}).json()["jobs"]
        assert [j["job_id"] for j in listed] == [r.spec.job_id for r in records if r.state == state]
    done = store.list("tenants/alpha/batches/b0123456789abcdef/done/")
    assert len(done) == sum(s in TERMINAL_STATES for s in states)
