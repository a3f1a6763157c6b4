"""The controller's logic without HTTP (service/controller.py): idempotent creation of jobs and
batches (retries, a reused key, a claim whose job was never stored, two replicas racing on one
key) and pagination of job lists and batch pages (drawn sizes and page limits: every job once,
in id order, pages bounded); the 413-vs-422 choice by error type (service/errors.py)."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.service import schemas as s
from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.controller import Controller
from occlutrace_compute.service.errors import ApiError, FileTooLarge, rejected_status
from occlutrace_compute.service.intake import clean_mesh
from occlutrace_compute.storage.keys import input_key
from occlutrace_compute.storage.local import LocalStore

TENANT = "alpha"
INPUTS = {"fixed": "fixed.stl", "moving": "moving.stl"}


def _controller(root: Path) -> Controller:
    config = ServiceConfig.from_env(store=f"file://{root / 'store'}", staging_sweep_s=0)
    return Controller(config, LocalStore(root / "store"), link=None)


def _case(ctl: Controller, case: str, tenant: str = TENANT) -> s.JobCreate:
    """A case with its two input files (raw bytes: the controller only checks they exist)."""
    for name in INPUTS.values():
        ctl.store.put(input_key(tenant, case, name), b"solid x\nendsolid x\n")
    return s.JobCreate(case=case, kind="pair", inputs=INPUTS)


def _records(ctl: Controller, tenant: str = TENANT) -> list[str]:
    return sorted(k for k in ctl.store.list(f"tenants/{tenant}/cases/") if k.endswith("/job.json"))


def test_a_job_is_created_once_per_idempotency_key(tmp_path):
    ctl = _controller(tmp_path)
    body = _case(ctl, "c1")
    first = ctl.create_job(TENANT, body, "key-1")
    again = ctl.create_job(TENANT, body, "key-1")
    assert not first.existed and again.existed and again.record.spec.job_id == first.record.spec.job_id
    assert len(_records(ctl)) == 1
    with pytest.raises(ApiError) as reused:  # the same key for another request
        ctl.create_job(
            TENANT, s.JobCreate(case="c1", kind="pair", inputs={"fixed": "moving.stl", "moving": "fixed.stl"}), "key-1"
        )
    assert reused.value.status == 422 and reused.value.error == "idempotency_key_reused"
    unkeyed = {ctl.create_job(TENANT, body, None).record.spec.job_id for _ in range(2)}
    assert len(unkeyed) == 2 and len(_records(ctl)) == 3
    other = ctl.create_job("beta", _case(ctl, "c1", "beta"), "key-1")  # keys are per tenant
    assert not other.existed and other.record.spec.job_id != first.record.spec.job_id


def test_a_claim_whose_job_was_never_stored_is_completed_with_the_claimed_id(tmp_path):
    """Replica A claimed the key and crashed before writing the job: replica B's retry creates
    the job under A's id (not a second id), and a further retry finds it."""
    a, b = _controller(tmp_path), _controller(tmp_path)
    body = _case(a, "c2")
    claimed = "j" + "0" * 12 + "abcdef012345"
    assert a.claim(TENANT, "key-2", body, {"job_id": claimed}) == {"job_id": claimed}
    assert _records(a) == []
    done = b.create_job(TENANT, body, "key-2")
    assert not done.existed and done.record.spec.job_id == claimed and len(_records(b)) == 1
    assert a.create_job(TENANT, body, "key-2").existed


def test_two_replicas_racing_on_one_key_create_one_job(tmp_path):
    replicas = [_controller(tmp_path) for _ in range(4)]
    body = _case(replicas[0], "c3")
    start = threading.Barrier(len(replicas), timeout=30)
    ids: list[str] = []

    def create(ctl: Controller) -> None:
        start.wait()
        ids.append(ctl.create_job(TENANT, body, "key-3").record.spec.job_id)

    threads = [threading.Thread(target=create, args=(ctl,)) for ctl in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(ids) == len(replicas) and len(set(ids)) == 1 and len(_records(replicas[0])) == 1


@settings(max_examples=8, deadline=None)
@given(n=st.integers(0, 9), limit=st.integers(1, 4), state=st.sampled_from([None, "queued"]))
def test_job_pages_cover_every_job_once_in_id_order(n, limit, state):
    with tempfile.TemporaryDirectory() as root:
        ctl = _controller(Path(root))
        body = _case(ctl, "c4")
        made = sorted(ctl.create_job(TENANT, body, None).record.spec.job_id for _ in range(n))
        seen: list[str] = []
        after = None
        for _ in range(n + 2):  # n jobs take at most n // limit + 1 pages
            page = ctl.list_jobs(TENANT, state, after, limit)
            assert len(page.jobs) <= limit
            seen += [j.job_id for j in page.jobs]
            after = page.next
            if after is None:
                break
        assert after is None and seen == made


@settings(max_examples=6, deadline=None)
@given(n=st.integers(1, 8), limit=st.integers(1, 3))
def test_batch_pages_cover_every_member_once_and_a_retry_creates_nothing(n, limit):
    with tempfile.TemporaryDirectory() as root:
        ctl = _controller(Path(root))
        batch = s.BatchCreate(jobs=[_case(ctl, f"c{i % 3}") for i in range(n)])
        created = ctl.create_batch(TENANT, batch, "batch-key")
        retried = ctl.create_batch(TENANT, batch, "batch-key")
        assert not created.existed and retried.existed and retried.batch_id == created.batch_id
        assert [j["job_id"] for j in retried.jobs] == [j["job_id"] for j in created.jobs]
        assert len(_records(ctl)) == n
        seen: list[str] = []
        after = None
        for _ in range(n + 2):
            page = ctl.batch_page(TENANT, created.batch_id, after, limit)
            assert page["total"] == n and page["counts"] == {"queued": n} and not page["done"]
            assert len(page["jobs"]) <= limit
            seen += [j["job_id"] for j in page["jobs"]]
            after = page["next"]
            if after is None:
                break
        assert after is None and seen == sorted(j["job_id"] for j in created.jobs)


def test_bad_cursors_and_unknown_batches_are_specific_errors(tmp_path):
    ctl = _controller(tmp_path)
    with pytest.raises(ApiError) as cursor:
        ctl.list_jobs(TENANT, None, "../etc", 10)
    assert cursor.value.status == 422 and cursor.value.error == "invalid_cursor"
    for batch_id in ("b" + "0" * 24, "../x"):
        with pytest.raises(ApiError) as missing:
            ctl.batch_page(TENANT, batch_id, None, 10)
        assert missing.value.status == 404


def test_413_or_422_is_chosen_by_error_type_not_message():
    assert rejected_status(FileTooLarge("big.stl", 10, 5)) == 413
    # the old code matched the text: an error merely worded like it was answered 413
    assert rejected_status(InputRejected("a.stl", "file too large: 10 bytes > limit 5")) == 422
    assert rejected_status(InputRejected("a.stl", "not a mesh")) == 422
    with pytest.raises(FileTooLarge) as big:
        clean_mesh(b"x" * 11, "big.stl", 10)
    assert (big.value.size, big.value.limit, big.value.source) == (11, 10, "big.stl")
