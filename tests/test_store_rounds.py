"""Batched store rounds (issue 18, item 2): jobs created and run in parallel rounds, a worker's
running hint, a lost worker's batch-mates given their attempt back, purge keys found per batch."""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace

import pytest
from test_control_plane_scale import CountingStore

from occlutrace_compute.jobs.models import JobRecord, JobSpec
from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.dispatcher import Dispatcher
from occlutrace_compute.service.fairqueue import FairQueue
from occlutrace_compute.service.records import JobRef, JobRepo, new_id
from occlutrace_compute.service.worker import AlignWorker, running_hint_key
from occlutrace_compute.storage import local
from occlutrace_compute.storage.local import LocalStore

SEEN: dict[str, list[str]] = {}


def states_at_start(spec, store) -> dict:
    """A job function that notes the states of its batch-mates' records when it starts."""
    repo = JobRepo(store)
    SEEN[spec.job_id] = [r.state for r in repo.load_many([JobRef(spec.tenant, spec.case, j) for j in SEEN["batch"]])]
    return {"ok": True}


def records(n: int, case: str = "case-1", batch_id: str | None = None) -> list[JobRecord]:
    out = []
    for _ in range(n):
        job_id = new_id("j")
        spec = JobSpec(
            job_id=job_id,
            tenant="alpha",
            case=case,
            kind="pair",
            inputs={r: f"tenants/alpha/cases/{case}/jobs/{job_id}/inputs/{r}/{r}.stl" for r in ("fixed", "moving")},
        )
        out.append(
            JobRecord(
                spec=spec,
                batch_id=batch_id,
                sources={r: f"tenants/alpha/cases/{case}/inputs/{r}.stl" for r in ("fixed", "moving")},
            )
        )
    return out


@pytest.fixture
def store(tmp_path):
    s = LocalStore(tmp_path / "store")
    for role in ("fixed", "moving"):
        s.put(f"tenants/alpha/cases/case-1/inputs/{role}.stl", b"solid x\nendsolid x\n")
    return s


def test_put_transient_is_visible_at_once_without_fsync(tmp_path, monkeypatch):
    s = LocalStore(tmp_path)
    calls = []
    monkeypatch.setattr(local.os, "fsync", lambda fd: calls.append(fd))
    s.put_transient("ops/running/w1.json", b'{"key": 1}')
    assert s.get("ops/running/w1.json") == b'{"key": 1}' and calls == []
    s.put("ops/x", b"1")
    assert len(calls) == 2  # a durable put: the file, then its folder
    assert os.listdir(tmp_path / "ops" / "running") == ["w1.json"]  # no temp file left


def test_create_many_pins_inputs_indexes_and_queues_every_job(store):
    repo = JobRepo(store)
    batch = records(30, batch_id="b0123456789abc")
    created, purged = repo.create_many(batch)
    assert len(created) == 30 and purged == set()
    again, _ = repo.create_many(batch)  # a retry: nothing created twice
    assert again == []
    assert sorted(ref.job_id for ref, _ in repo.queued_refs()) == sorted(r.spec.job_id for r in batch)
    for r in batch:
        assert store.get(r.spec.inputs["fixed"]) == b"solid x\nendsolid x\n"
        assert repo.find("alpha", r.spec.job_id) == JobRef("alpha", "case-1", r.spec.job_id)


def test_a_batch_is_marked_running_in_one_round_and_ends_final(store, tmp_path):
    repo = JobRepo(store)
    batch = records(6, batch_id="b0123456789abc")
    repo.create_many(batch)
    SEEN.clear()
    SEEN["batch"] = [r.spec.job_id for r in batch]
    config = ServiceConfig(store=f"file://{store.root}", job_fn="test_store_rounds:states_at_start")
    worker = AlignWorker(config, "w-test")
    outcomes = worker.run_batch([JobRef("alpha", "case-1", r.spec.job_id).key for r in batch])
    assert [o.state for o in outcomes] == ["succeeded"] * 6 and all(o.final for o in outcomes)
    # every job of the batch was charged before the first one ran: the start is one round
    first = SEEN[batch[0].spec.job_id]
    assert first == ["running"] * 6
    assert repo.batch_states("alpha", "b0123456789abc", [(r.spec.job_id, "case-1") for r in batch]) == {
        r.spec.job_id: "succeeded" for r in batch
    }
    assert repo.queued_refs() == []
    # the last hint stays (the dispatcher deletes it with the worker): it names the last job run
    last = JobRef("alpha", "case-1", batch[-1].spec.job_id).key
    assert store.get_json(running_hint_key("w-test")) == {"key": last, "attempt": 1}
    assert store.list("tenants/alpha/batches/b0123456789abc/running/") == []
    assert all(rec.attempts == 1 for rec in repo.load_many([JobRef("alpha", "case-1", r.spec.job_id) for r in batch]))


def test_a_lost_worker_charges_only_the_job_its_hint_names(store):
    """The worker charged its batch of 4 at start and died running the third: that one keeps
    its attempt, the other three get theirs back (the old accounting charged at each job's own
    start; batched starts keep that promise through the hint)."""
    repo = JobRepo(store)
    batch = records(4, batch_id="b0123456789abc")
    repo.create_many(batch)
    for r in batch:
        r.state, r.attempts = "running", 1
    assert all(repo.save_many(batch))
    culprit = JobRef("alpha", "case-1", batch[2].spec.job_id)
    d, slot = _dead_worker(store, repo, culprit)
    refs = [JobRef("alpha", "case-1", r.spec.job_id) for r in batch]
    d._worker_lost(slot, refs, RuntimeError("killed"))
    after = {rec.spec.job_id: (rec.state, rec.attempts) for rec in repo.load_many(refs)}
    assert after == {r.spec.job_id: ("queued", 1 if r.spec.job_id == culprit.job_id else 0) for r in batch}
    assert d.queue.depth == 4 and not store.exists(running_hint_key("w-dead"))
    assert store.list("tenants/alpha/batches/b0123456789abc/running/") == []


def _slot(worker_id: str) -> SimpleNamespace:
    """A dispatcher's worker slot, as `_worker_lost` uses it (no Ray)."""
    return SimpleNamespace(
        ready=True,
        index=0,
        worker_id=worker_id,
        handle=SimpleNamespace(info=SimpleNamespace(remote=lambda: None)),
        info_ref=None,
        incarnation=0,
        lost_hint=None,
        fast=True,
    )


def _dead_worker(store, repo: JobRepo, culprit: JobRef) -> tuple[Dispatcher, SimpleNamespace]:
    """A dispatcher (no Ray, no threads) and the slot of worker "w-dead", whose running hint
    names `culprit` at attempt 1: what `_worker_lost` finds after that worker died."""
    store.put_transient(running_hint_key("w-dead"), f'{{"key": "{culprit.key}", "attempt": 1}}'.encode())
    d = object.__new__(Dispatcher)
    d.repo, d.config, d.queue = repo, ServiceConfig(store=f"file://{store.root}", max_attempts=3), FairQueue()
    return d, _slot("w-dead")


@pytest.mark.parametrize("culprit_batch_first", [True, False])
def test_two_batches_lost_together_share_one_hint(store, culprit_batch_first):
    """A fast worker holds two batches (dispatcher.PIPELINE); it dies running a job of the
    first. Whichever failed batch the dispatcher handles first, the job the hint names keeps
    its charge and every other job gets its attempt back: read per batch, the hint would be
    gone for the second one, and a job that kills workers would be refunded forever."""
    repo = JobRepo(store)
    first, second = records(3), records(3)
    repo.create_many(first + second)
    for r in first:  # the first batch started (charged); the second waits in the actor's queue
        r.state, r.attempts = "running", 1
    assert all(repo.save_many(first))
    culprit = JobRef("alpha", "case-1", first[1].spec.job_id)
    d, slot = _dead_worker(store, repo, culprit)
    batches = [[JobRef("alpha", "case-1", r.spec.job_id) for r in b] for b in (first, second)]
    for refs in batches if culprit_batch_first else batches[::-1]:
        d._worker_lost(slot, refs, RuntimeError("killed"), 0)  # both sent to incarnation 0
    after = {rec.spec.job_id: (rec.state, rec.attempts) for rec in repo.load_many(batches[0] + batches[1])}
    want = {r.spec.job_id: ("queued", 0) for r in first + second}
    want[culprit.job_id] = ("queued", 1)
    assert after == want
    assert slot.incarnation == 1 and not store.exists(running_hint_key("w-dead"))


def test_purge_keys_cost_one_read_per_batch_not_per_job(tmp_path):
    store = CountingStore(tmp_path / "store")
    for role in ("fixed", "moving"):
        store.put(f"tenants/alpha/cases/case-1/inputs/{role}.stl", b"x")
    repo = JobRepo(store)
    jobs = records(20, batch_id="b0000000000001") + records(20, batch_id="b0000000000002") + records(5)
    for batch_id in ("b0000000000001", "b0000000000002"):
        store.put_json(
            f"tenants/alpha/batches/{batch_id}.json",
            {"batch_id": batch_id, "jobs": [[r.spec.job_id, "case-1"] for r in jobs if r.batch_id == batch_id]},
        )
    repo.create_many(jobs)
    want = sorted(k for r in jobs for k in repo.outside_keys(JobRef("alpha", "case-1", r.spec.job_id)))
    gets = []
    real_get = store.get
    lock = threading.Lock()

    def counted(key: str) -> bytes:
        with lock:
            gets.append(key)
        return real_get(key)

    store.get = counted
    got = repo.case_outside_keys("alpha", "case-1", [r.spec.job_id for r in jobs], ["b0000000000001", "b0000000000002"])
    assert sorted(got) == want
    assert len(gets) == 2, gets  # the two batch records; outside_keys read 45 index entries


def test_create_many_leaves_nothing_when_an_input_vanished(store):
    from occlutrace_compute.errors import InputRejected

    repo = JobRepo(store)
    batch = records(10, batch_id="b0123456789abc")
    store.delete("tenants/alpha/cases/case-1/inputs/moving.stl")  # deleted between validation and creation
    with pytest.raises(InputRejected, match="moving.stl"):
        repo.create_many(batch)
    assert repo.queued_refs() == []
    assert store.list("tenants/alpha/index/") == [] and store.list("tenants/alpha/cases/case-1/jobs/") == []


def test_local_puts_are_private_complete_and_leave_no_temp_file(tmp_path):
    """The lean put path (os calls, folders made only when missing): every kind of write lands
    whole, 0600, in folders it made, with no temp file left, also when put_if_absent loses."""
    s = LocalStore(tmp_path)
    payload = os.urandom(200_000)  # larger than one os.write may take
    s.put("a/b/c/d.bin", payload)
    s.put_transient("a/b/hint.json", b"{}")
    assert s.put_if_absent("a/e/f.json", b"1") and not s.put_if_absent("a/e/f.json", b"2")
    s.copy("a/b/c/d.bin", "x/y/z.bin")
    assert s.get("a/b/c/d.bin") == payload and s.get("x/y/z.bin") == payload and s.get("a/e/f.json") == b"1"
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in files) == [
        "a/b/c/d.bin",
        "a/b/hint.json",
        "a/e/f.json",
        "x/y/z.bin",
    ]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in files)


def test_a_rescan_reads_only_the_markers_of_jobs_it_does_not_hold(tmp_path):
    """The dispatcher rescans the queue markers every `rescan_s`: the markers of jobs it holds
    are listed, not read (on S3 a deep queue cost a GET per marker per rescan)."""
    store = CountingStore(tmp_path / "store")
    for role in ("fixed", "moving"):
        store.put(f"tenants/alpha/cases/case-1/inputs/{role}.stl", b"x")
    repo = JobRepo(store)
    jobs = records(20)
    repo.create_many(jobs)
    queue = FairQueue()
    for r in jobs[:15]:
        queue.enqueue(JobRef("alpha", "case-1", r.spec.job_id))
    assert queue.jobs() == {("alpha", r.spec.job_id) for r in jobs[:15]}
    store.calls = 0
    found = repo.queued_refs(queue.jobs())
    assert sorted(ref.job_id for ref, _ in found) == sorted(r.spec.job_id for r in jobs[15:])
    assert store.calls == 1 + 5  # one listing, the five unknown markers read
