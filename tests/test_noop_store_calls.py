"""What one no-op job costs the store (issue 18, item 2): objects touched and synced writes per job,
counted by a wrapper around a real local store, through the controller's batch creation and the
real worker class. The path is CPU-bound on a small box (bench/RESULTS.md, "Issue 18: no-op path,
third session"), and each store call, and each fsync above all, is CPU per job: these bounds keep
calls the guarantees do not need from coming back. The old path: 10 objects and ~9 syncs a job
at creation, ~13.3 objects and ~10 syncs a job on the worker."""

from __future__ import annotations

import os
import threading
from collections import Counter

import pytest

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.service import schemas as s
from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.controller import Controller
from occlutrace_compute.service.records import JobRef, JobRepo
from occlutrace_compute.service.worker import AlignWorker
from occlutrace_compute.storage import local
from occlutrace_compute.storage.keys import input_key
from occlutrace_compute.storage.local import LocalStore

JOBS, WORKER_BATCH = 48, 4


def noop_job(spec, store) -> dict:
    """No store access, no compute: what is left is the service's own cost."""
    return {"noop": True}


class CountingStore(LocalStore):
    """Counts every object the service reads, checks, writes or deletes (a batched write of
    empty entries counts one per entry), whatever thread makes the call."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.ops: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _count(self, op: str, n: int = 1) -> None:
        with self._lock:
            self.ops[op] += n

    def put(self, key, data, content_type="application/octet-stream"):
        self._count("put")
        return super().put(key, data, content_type)

    def put_transient(self, key, data):
        self._count("put_transient")
        return super().put_transient(key, data)

    def put_empty_many(self, keys):
        keys = list(keys)
        self._count("put", len(keys))
        return super().put_empty_many(keys)

    def put_if_absent(self, key, data, content_type="application/octet-stream"):
        self._count("put_if_absent")
        return super().put_if_absent(key, data, content_type)

    def copy(self, src, dst):
        self._count("copy")
        return super().copy(src, dst)

    def get(self, key):
        self._count("get")
        return super().get(key)

    def exists(self, key):
        self._count("exists")
        return super().exists(key)

    def list(self, prefix, start_after=None, limit=None):
        self._count("list")
        return super().list(prefix, start_after, limit)

    def delete(self, key):
        self._count("delete")
        return super().delete(key)

    def delete_prefix(self, prefix):
        self._count("delete_prefix")
        return super().delete_prefix(prefix)


def test_a_noop_job_costs_few_store_calls_and_syncs(tmp_path, monkeypatch):
    store = CountingStore(tmp_path / "store")
    for role in ("fixed", "moving"):
        store.put(input_key("alpha", "case-1", f"{role}.stl"), b"solid x\nendsolid x\n")
    config = ServiceConfig(
        store=f"file://{store.root}",
        tokens_file=str(tmp_path / "tokens"),
        job_fn="test_noop_store_calls:noop_job",
        staging_sweep_s=0,
    )
    ctl = Controller(config, store, link=None)
    syncs = Counter[str]()
    real_fsync = local.os.fsync

    def counted_fsync(fd: int) -> None:
        syncs[threading.current_thread().name] += 1
        real_fsync(fd)

    monkeypatch.setattr(local.os, "fsync", counted_fsync)
    job = s.JobCreate(case="case-1", kind="pair", inputs={"fixed": "fixed.stl", "moving": "moving.stl"})
    store.ops.clear()
    syncs.clear()
    created = ctl.create_batch("alpha", s.BatchCreate(jobs=[job] * JOBS), None)
    create_ops, create_syncs = sum(store.ops.values()), sum(syncs.values())

    worker = AlignWorker(config, "w-count")
    worker.store, worker.repo = store, JobRepo(store)
    keys = [JobRef("alpha", "case-1", j["job_id"]).key for j in created.jobs]
    store.ops.clear()
    syncs.clear()
    for start in range(0, JOBS, WORKER_BATCH):
        outcomes = worker.run_batch(keys[start : start + WORKER_BATCH])
        assert [o.state for o in outcomes] == ["succeeded"] * WORKER_BATCH
    worker_ops, worker_syncs = sum(store.ops.values()), sum(syncs.values())

    # nothing lost, nothing run twice, counters right
    repo = JobRepo(store)
    records = repo.load_many([JobRef.parse(k) for k in keys])  # type: ignore[misc]
    assert all(r is not None and r.state == "succeeded" and r.attempts == 1 for r in records)
    assert repo.queued_refs() == []
    states = repo.batch_states("alpha", created.batch_id, [(JobRef.parse(k).job_id, "case-1") for k in keys])  # type: ignore[union-attr]
    assert set(states.values()) == {"succeeded"}

    per_job = {
        "creation objects": create_ops / JOBS,
        "creation syncs": create_syncs / JOBS,
        "worker objects": worker_ops / JOBS,
        "worker syncs": worker_syncs / JOBS,
    }
    # creation: 2 input copies, id index entry, queue marker, listing entry, record (was 10: an
    # existence check per input and per record, and every record read back for the answer),
    # and per batch its record, its case marker and the purge generation reads
    assert per_job["creation objects"] <= 6.5, (per_job, store.ops)
    # the record (2 syncs: file, folder), index entry and marker (2 each), the copies' folders
    # (1 each); the listing entries share their folder's sync
    assert per_job["creation syncs"] <= 8.5, per_job
    # worker: record read, 2 records written, state and batch entries, hint, running entry and
    # its removal, marker removed, 2 cancel checks, the purge generation (4 reads a batch): 12
    assert per_job["worker objects"] <= 12.1, (per_job, store.ops)
    # 2 records (file + folder each); the batch's state and batch entries share their folders'
    # syncs; the running entry and the hint are hints (no sync)
    assert per_job["worker syncs"] <= 5.0, per_job


def test_empty_entries_land_whole_private_and_durable_in_their_folders(tmp_path, monkeypatch):
    """The batched empty entries and the in-place empty hint: every key a file of 0600 and no
    bytes, no temp file left, one folder sync per folder (not per entry), and a key under an
    object refused by name."""
    s = LocalStore(tmp_path)
    synced: list[str] = []
    real_fsync = local._fsync_dir
    monkeypatch.setattr(local, "_fsync_dir", lambda folder: (synced.append(folder), real_fsync(folder)))
    keys = [f"t/index/state/succeeded/a/{i:03d}.case" for i in range(30)] + [
        f"t/batches/b/done/{i:03d}.x" for i in range(30)
    ]
    s.put_empty_many(keys)
    assert sorted(synced) == sorted({os.path.join(str(s.root), *k.split("/")[:-1]) for k in keys})
    s.put_transient("t/batches/b/running/j1", b"")
    s.put("t/blob", b"data")
    s.put_transient("t/batches/b/running/j1", b"")  # again: still empty, still one file
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in files) == sorted(
        [*keys, "t/batches/b/running/j1", "t/blob"]
    )
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in files)
    assert all(p.stat().st_size == 0 for p in files if p.name != "blob")
    for write in (lambda: s.put_empty_many(["t/blob/x"]), lambda: s.put_transient("t/blob/x", b"")):
        with pytest.raises(InputRejected, match="itself an object"):
            write()
