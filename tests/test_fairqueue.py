"""The dispatcher's fair queue alone (no Ray, no store): the tenant round-robin docs/service.md
promises, membership (a job is held once), deferral. Sequences are drawn at random."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from occlutrace_compute.service.fairqueue import FairQueue
from occlutrace_compute.service.records import JobRef


def ref(tenant: str, i: int) -> JobRef:
    return JobRef(tenant, "case-1", f"j{i:012x}000000000000")


@settings(max_examples=60, deadline=None)
@given(backlogs=st.lists(st.integers(0, 40), min_size=1, max_size=6), size=st.integers(1, 7), late=st.integers(0, 5))
def test_a_tenant_waits_behind_at_most_one_job_of_each_other_tenant(backlogs, size, late):
    """Tenant t has backlogs[t] jobs; a last tenant's single job, queued after `late` batches,
    leaves within the next (number of tenants) jobs dispatched, whatever the others' backlogs;
    every job leaves exactly once, each tenant's jobs in their own order."""
    q = FairQueue()
    n = 0
    for t, count in enumerate(backlogs):
        for _ in range(count):
            q.enqueue(ref(f"t{t}", n))
            n += 1
    out: list[JobRef] = []
    for _ in range(late):
        out += q.next_batch(size)
    lone = ref("lone", n)
    assert q.enqueue(lone)
    position = len(out)
    while batch := q.next_batch(size):
        out += batch
    assert len(out) == n + 1 and len({r.key for r in out}) == n + 1
    assert out.index(lone) - position < len(backlogs) + 1
    for t in range(len(backlogs)):
        ids = [r.job_id for r in out if r.tenant == f"t{t}"]
        assert ids == sorted(ids)


def test_batches_alternate_tenants_and_the_rotation_carries_over():
    q = FairQueue()
    for i in range(6):
        q.enqueue(ref("big", i))
    q.enqueue(ref("small", 100))
    q.enqueue(ref("small", 101))
    first = [r.tenant for r in q.next_batch(3)]
    second = [r.tenant for r in q.next_batch(3)]
    assert first == ["big", "small", "big"]
    assert second == ["small", "big", "big"]  # small's turn came first: the rotation went on
    assert q.depth == 2 and q.in_flight == 6


@settings(max_examples=80, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["enqueue", "defer", "batch", "done", "tick"]), st.integers(0, 9)), max_size=80
    )
)
def test_a_job_is_held_once_whatever_the_order_of_events(ops):
    """Notifications, rescans, re-queues and deferrals overlap in the dispatcher: whatever their
    order, each job is in at most one place (queued, deferred, busy), a batch hands out only
    queued jobs, and the counts agree with a plain model of the three sets."""
    q = FairQueue()
    queued: set[str] = set()
    deferred: dict[str, float] = {}
    busy: set[str] = set()
    refs = {i: ref(f"t{i % 3}", i) for i in range(10)}
    clock = 0.0
    for op, i in ops:
        r = refs[i]
        if op == "enqueue":
            assert q.enqueue(r) == (r.key not in queued | busy | set(deferred))
            if r.key not in queued | busy | set(deferred):
                queued.add(r.key)
        elif op == "defer":
            if q.defer(r, clock + 1.0):
                busy.discard(r.key)
                deferred[r.key] = clock + 1.0
        elif op == "batch":
            batch = {b.key for b in q.next_batch(3)}
            assert batch <= queued and len(batch) == min(3, len(queued))
            queued -= batch
            busy |= batch
        elif op == "done":
            q.done([r])
            busy.discard(r.key)
        else:
            clock += 1.0
            q.release_due(clock)
            due = {k for k, t in deferred.items() if t <= clock}
            queued |= due
            for k in due:
                del deferred[k]
        assert q.depth == len(queued) + len(deferred) and q.in_flight == len(busy)
        assert all((x.key in q) == (x.key in queued | busy | set(deferred)) for x in refs.values())
        assert sorted(w.key for w in q.waiting()) == sorted(queued | set(deferred))


def test_deferred_jobs_come_back_when_due_and_not_before():
    q = FairQueue()
    a, b = ref("t", 1), ref("t", 2)
    assert q.defer(a, due=5.0) and q.defer(b, due=2.0)
    assert not q.enqueue(a) and a.key in q  # held (deferred): a notification changes nothing
    assert q.release_due(1.0) == 0 and q.next_batch(4) == []
    assert q.release_due(2.0) == 1 and q.next_batch(4) == [b]
    assert q.release_due(10.0) == 1 and q.next_batch(4) == [a]
    q.done([a, b])
    assert a.key not in q and q.depth == 0 and q.in_flight == 0
    assert q.enqueue(a)  # free again: a later notification queues it
