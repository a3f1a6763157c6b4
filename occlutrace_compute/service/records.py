"""Job records in the object store: keys, reads, writes and the small indexes around them.

The record (`tenants/<t>/cases/<c>/jobs/<id>/job.json`) is the source of truth. Beside it:
- `tenants/<t>/index/jobs/<id>.json` -> {"case", "batch"?}: find a job by id (ids sort by
  creation time);
- `queue/<t>/<id>.json` -> {"case"}: the cheap "active jobs" list the dispatcher rebuilds from
  and rescans, and the index of the queued/running filters; written before the record and
  removed once the job is final and indexed as such (a marker without a record is dropped);
- `tenants/<t>/index/all/<ts>/<id>.<case>` (empty): every job, for the unfiltered listing, and
  `tenants/<t>/index/state/<final state>/<ts>/<id>.<case>` (empty), written when the job becomes
  final: the listings read a page of these (O(page)), never the tenant's whole history. `<ts>`
  is `<id[1:6]>/<id[6:9]>` (creation time, 74 h then 65 s buckets): it keeps every folder of a
  local store small and keeps the keys in id order. Entries are hints checked against the record
  (a lost race may leave a stale one, which the listings skip);
- `tenants/<t>/idempotency/<sha256(key)>.json` -> {"job_id"|"batch_id"};
- `tenants/<t>/batches/<id>.json` -> the batch's job ids, and `tenants/<t>/batches/<id>/done/
  <job id>.<final state>` (empty) per member once final, `.../running/<job id>` (empty) while a
  member is marked running: the batch's counters (two listings, no record read; a member in
  neither is queued). The running entry is a hint (`put_transient`: not synced; a lost one
  shows a running member queued), written beside the record, removed with the queue
  marker or when the job goes back to the queue; a crash between may leave it a little stale
  (a queued member counted running until its next run ends);
- `.../jobs/<id>/cancel`: the cancel marker, checked by the worker after it writes a result.

Writes of a record check the case's purge generation before and after (purges.py): a record
whose case was purged meanwhile is not written, or is deleted again with everything of its job.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.jobs.models import TERMINAL_STATES, JobRecord, utcnow
from occlutrace_compute.service.purges import CasePurged, still
from occlutrace_compute.storage.base import KeyNotFound, ObjectStore
from occlutrace_compute.storage.keys import job_prefix, job_record_key

ID_RE = re.compile(r"^[a-z][0-9a-f]{12,40}\Z")
JOB_KEY_RE = re.compile(r"^tenants/([^/]+)/cases/([^/]+)/jobs/([^/]+)/job\.json\Z")
QUEUE_PREFIX = "queue/"
T = TypeVar("T")
R = TypeVar("R")
# Parallel store calls for a page, a rebuild or a batched write round: hides S3 round trips, and
# on a local folder concurrent fsyncs share journal commits (16 writers: ~0.6 ms a put against
# ~10 ms one at a time on the dev box's disk, see bench/RESULTS.md, issue 18).
READ_THREADS = 16
# Jobs whose entries and records `create_many` writes before telling the caller (who notifies the
# dispatcher): workers start on a big batch's first jobs while the rest are written; each chunk
# costs two more rounds (~2 journal commits on a local disk).
CREATE_CHUNK = 100
# After `<id>.` in a listing key comes the case id, whose characters all sort below this one.
_AFTER_ANY_CASE = "~"
JSON_TYPE = "application/json"


def new_id(prefix: str) -> str:
    """Time-sortable id: prefix letter + 12 hex digits of ms since epoch + 12 random hex digits."""
    return f"{prefix}{int(time.time() * 1000):012x}{os.urandom(6).hex()}"


def cancel_key(tenant: str, case: str, job_id: str) -> str:
    return job_prefix(tenant, case, job_id) + "cancel"


def index_prefix(tenant: str) -> str:
    return f"tenants/{tenant}/index/jobs/"


def index_key(tenant: str, job_id: str) -> str:
    return f"{index_prefix(tenant)}{job_id}.json"


def queue_key(tenant: str, job_id: str) -> str:
    return f"{QUEUE_PREFIX}{tenant}/{job_id}.json"


def marker_job(key: str) -> tuple[str, str] | None:
    """(tenant, job id) a queue marker key names (`queue/<t>/<id>.json`), None if malformed."""
    parts = key[len(QUEUE_PREFIX) :].split("/")
    if len(parts) != 2 or not parts[1].endswith(".json"):
        return None
    return parts[0], parts[1][: -len(".json")]


def queue_prefix(tenant: str) -> str:
    return f"{QUEUE_PREFIX}{tenant}/"


def all_index_prefix(tenant: str) -> str:
    return f"tenants/{tenant}/index/all/"


def state_index_prefix(tenant: str, state: str) -> str:
    return f"tenants/{tenant}/index/state/{state}/"


def batch_done_prefix(tenant: str, batch_id: str) -> str:
    return f"tenants/{tenant}/batches/{batch_id}/done/"


def batch_done_key(tenant: str, batch_id: str, job_id: str, state: str) -> str:
    """`tenants/<t>/batches/<b>/done/<id>.<state>` (empty): a member job's final state, written
    when it becomes final, so a batch's counts are one listing, not a read of every member."""
    return f"{batch_done_prefix(tenant, batch_id)}{job_id}.{state}"


def batch_running_key(tenant: str, batch_id: str, job_id: str) -> str:
    """`tenants/<t>/batches/<b>/running/<id>` (empty): a member marked running (see the module)."""
    return f"tenants/{tenant}/batches/{batch_id}/running/{job_id}"


def listing_key(prefix: str, job_id: str, case: str) -> str:
    """`<prefix><id[1:6]>/<id[6:9]>/<id>.<case>`: sorted like the ids, sharded by creation time."""
    return f"{prefix}{job_id[1:6]}/{job_id[6:9]}/{job_id}.{case}"


def listing_start(prefix: str, after: str | None) -> str | None:
    """The `start_after` that lists the entries of ids greater than `after` (a valid id)."""
    return None if after is None else f"{prefix}{after[1:6]}/{after[6:9]}/{after}.{_AFTER_ANY_CASE}"


def parse_listing_key(tenant: str, key: str) -> JobRef | None:
    job_id, _, case = key.rsplit("/", 1)[-1].partition(".")
    return JobRef(tenant, case, job_id) if ID_RE.match(job_id) and case else None


_POOL_PREFIX = "store-round"
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def parallel_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """`[fn(x) for x in items]`, up to READ_THREADS at a time, on one pool per process (a pool
    made per call cost ~1-2 ms of thread starts per round). Called from one of the pool's own
    threads it runs in that thread, one at a time: a nested call cannot wait for threads that
    wait for it. The first exception raised by `fn` is raised (after every call ended)."""
    global _pool
    items = list(items)
    if len(items) <= 1 or threading.current_thread().name.startswith(_POOL_PREFIX):
        return [fn(x) for x in items]
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix=_POOL_PREFIX)
        pool = _pool
    futures = [pool.submit(fn, x) for x in items]
    wait(futures)
    return [f.result() for f in futures]


def light_map(store: ObjectStore, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """`parallel_map` for reads, existence checks and deletes: inline where the store says such
    a call is cheaper than a thread hand-off (`light_calls_inline`: a local folder), in parallel
    where each is a round trip (S3)."""
    if getattr(store, "light_calls_inline", False):
        return [fn(x) for x in items]
    return parallel_map(fn, items)


def empty_writes(store: ObjectStore, keys: list[str]) -> list[Callable[[], None]]:
    """The calls that write the empty entries `keys`, for one parallel round: one
    `put_empty_many` per folder where the store makes them cheaper together (a local folder:
    one sync per folder, not per entry; the folders' syncs in parallel), else one put each
    (S3: round trips in parallel)."""
    if not keys:
        return []
    if getattr(store, "light_calls_inline", False):
        folders: dict[str, list[str]] = {}
        for key in keys:
            folders.setdefault(key.rpartition("/")[0], []).append(key)
        return [partial(store.put_empty_many, group) for group in folders.values()]
    return [partial(store.put, key, b"") for key in keys]


def _call(write: Callable[[], None]) -> None:
    write()


def idempotency_key(tenant: str, key: str) -> str:
    return f"tenants/{tenant}/idempotency/{hashlib.sha256(key.encode()).hexdigest()}.json"


def batch_key(tenant: str, batch_id: str) -> str:
    return f"tenants/{tenant}/batches/{batch_id}.json"


@dataclass(frozen=True)
class JobRef:
    tenant: str
    case: str
    job_id: str

    @property
    def key(self) -> str:
        return job_record_key(self.tenant, self.case, self.job_id)

    @property
    def prefix(self) -> str:
        return job_prefix(self.tenant, self.case, self.job_id)

    @classmethod
    def parse(cls, key: str) -> JobRef | None:
        m = JOB_KEY_RE.match(key)
        return cls(*m.groups()) if m else None


def ref_of(record: JobRecord) -> JobRef:
    return JobRef(record.spec.tenant, record.spec.case, record.spec.job_id)


class JobRepo:
    """Typed access to job records and their indexes in one store."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def load(self, ref: JobRef) -> JobRecord | None:
        try:  # pydantic parses the bytes itself: ~2x faster than json.loads + model_validate
            return JobRecord.model_validate_json(self.store.get(ref.key))
        except KeyNotFound:
            return None

    def state_of(self, ref: JobRef) -> str | None:
        """The job's state alone (None: no record), without validating the whole record: what
        a batch's counts need of a member that is not final yet."""
        try:
            state = self.store.get_json(ref.key).get("state")
        except KeyNotFound:
            return None
        return str(state) if state is not None else None

    def save(self, record: JobRecord) -> bool:
        """Write the record unless its case was purged since the job was created (checked before
        and after the write, see purges.py): False then, and everything of the job is deleted."""
        ref = ref_of(record)
        if not self.current(record):
            self.discard(ref, record.batch_id)
            return False
        self.store.put(ref.key, _stamped(record), JSON_TYPE)
        if record.state in TERMINAL_STATES:
            self.finalize(record)
        else:
            self._running_entry(record)
        if not self.current(record):
            self.discard(ref, record.batch_id)
            return False
        return True

    def finalize(self, record: JobRecord) -> None:
        """A final record: its state index entry, then (only then) its queue marker removed, so
        a crash in between leaves the marker, and the dispatcher's rescan calls this again."""
        ref = ref_of(record)
        self.store.put(listing_key(state_index_prefix(ref.tenant, record.state), ref.job_id, ref.case), b"")
        if record.batch_id:
            self.store.put(batch_done_key(ref.tenant, record.batch_id, ref.job_id, record.state), b"")
            self.store.delete(batch_running_key(ref.tenant, record.batch_id, ref.job_id))
        self.store.delete(queue_key(ref.tenant, ref.job_id))

    def _running_entry(self, record: JobRecord) -> None:
        """A batch member's running entry, after its record: written while running, gone once queued."""
        if record.batch_id and record.state in ("running", "queued"):
            key = batch_running_key(record.spec.tenant, record.batch_id, record.spec.job_id)
            if record.state == "running":  # a hint (a lost one shows the member queued): not synced
                self.store.put_transient(key, b"")
            else:
                self.store.delete(key)

    def save_many(self, records: list[JobRecord]) -> list[bool]:
        """`save` for many records in a few parallel rounds instead of one chain per record: the
        purge generation read once per case, every record written, the final ones' entries
        (`finalize_many`), the generations read again; `save`'s answer per record (False: its
        case was purged, everything of the job deleted). Same guarantees as `save` for each one:
        each record is written before its own entries, each marker removed after its entries.
        Cost: 3 parallel rounds of store calls + 2 reads per distinct case."""
        if not records:
            return []
        ok = self._current_many(records)
        live = [r for r, good in zip(records, ok) if good]
        # one round: the records, and beside them (hints, see the module) the running entries
        writes: list[Callable[[], None]] = [
            partial(self.store.put, ref_of(r).key, _stamped(r), JSON_TYPE) for r in live
        ]
        writes += [partial(self._running_entry, r) for r in live if r.state not in TERMINAL_STATES and r.batch_id]
        parallel_map(_call, writes)
        self.finalize_many([r for r in live if r.state in TERMINAL_STATES])
        after = iter(self._current_many(live))
        answer = [good and next(after) for good in ok]
        for record, good in zip(records, answer):
            if not good:
                self.discard(ref_of(record), record.batch_id)
        return answer

    def finalize_many(self, records: list[JobRecord]) -> None:
        """`finalize` for many final records: every entry in one parallel round, then every
        marker removed in another (a crash in between leaves markers: the rescan finishes)."""
        entries = []
        for record in records:
            ref = ref_of(record)
            entries.append(listing_key(state_index_prefix(ref.tenant, record.state), ref.job_id, ref.case))
            if record.batch_id:
                entries.append(batch_done_key(ref.tenant, record.batch_id, ref.job_id, record.state))
        parallel_map(_call, empty_writes(self.store, entries))
        gone = [queue_key(r.spec.tenant, r.spec.job_id) for r in records]
        gone += [batch_running_key(r.spec.tenant, r.batch_id, r.spec.job_id) for r in records if r.batch_id]
        parallel_map(self.store.delete, gone)

    def _current_many(self, records: list[JobRecord]) -> list[bool]:
        """`current` of each record, the tombstone read once per (tenant, case, generation)."""
        cases = sorted({(r.spec.tenant, r.spec.case, r.generation) for r in records})
        answers = dict(zip(cases, light_map(self.store, lambda c: still(self.store, *c), cases)))
        return [answers[(r.spec.tenant, r.spec.case, r.generation)] for r in records]

    def current(self, record: JobRecord) -> bool:
        """Whether the record's case is still at the purge generation the job was created under."""
        return still(self.store, record.spec.tenant, record.spec.case, record.generation)

    def discard(self, ref: JobRef, batch_id: str | None = None) -> None:
        """Delete every object of a job whose case was purged under it: its folder and every key
        it has outside the case prefix (index entries, listing and state entries, batch done
        entries, queue marker; the purge may have listed the case before some were written)."""
        outside = self.outside_keys(ref, batch_id)
        self.store.delete_prefix(ref.prefix)
        for key in outside:
            self.store.delete(key)

    def create(self, record: JobRecord) -> bool:
        """Index and queue marker first, the record last and only where none exists (False then):
        a crash leaves no record without a marker, and a second creator of the same job (the
        loser of an idempotency race between replicas) cannot reset a record a worker has moved on.
        Raises CasePurged (after deleting what it wrote) if the case was purged meanwhile."""
        ref = ref_of(record)
        if not self.current(record):
            self.discard(ref, record.batch_id)
            raise CasePurged(ref.case)
        entry = {"case": ref.case, **({"batch": record.batch_id} if record.batch_id else {})}
        self.store.put_json(index_key(ref.tenant, ref.job_id), entry)
        self.store.put(listing_key(all_index_prefix(ref.tenant), ref.job_id, ref.case), b"")
        self.store.put_json(queue_key(ref.tenant, ref.job_id), {"case": ref.case})
        created = self.store.put_if_absent(ref.key, _stamped(record), JSON_TYPE)
        if not self.current(record):
            self.discard(ref, record.batch_id)
            raise CasePurged(ref.case)
        return created

    def create_many(
        self,
        records: list[JobRecord],
        fresh: bool = False,
        on_created: Callable[[list[JobRecord]], None] | None = None,
    ) -> tuple[list[JobRecord], set[str]]:
        """Pin the inputs of many jobs and create them, in parallel rounds (what `create` and the
        controller's per-job submit do, with the same order per job): records already stored
        (an earlier try, another replica) skipped; the inputs copied under each job's prefix
        (`record.sources` -> `record.spec.inputs`); then, CREATE_CHUNK jobs at a time, the id
        index, listing entry and queue marker of each job, then each record, created only where
        none exists (`fresh`: the caller made the ids just now, so none can exist: no existence
        check per job), then `on_created(the chunk's new records)`: a caller that notifies the
        dispatcher there lets workers start on the first jobs of a 1000-job batch while the rest
        are written. Returns (the records this call created, the cases purged meanwhile: nothing
        of their jobs is left). A source deleted meanwhile raises InputRejected before any job
        was created (the copies come first), with every copy deleted again.
        Cost: 1 + 2 per chunk parallel rounds of store calls and 2 reads per case and chunk,
        where one at a time a local folder paid ~10 synced writes in a row per job."""
        if not records:
            return [], set()
        if fresh:
            todo = list(records)
        else:
            exists = light_map(self.store, lambda r: self.store.exists(ref_of(r).key), records)
            todo = [r for r, there in zip(records, exists) if not there]
        purged = self._purged_cases(todo)
        todo = [r for r in todo if r.spec.case not in purged]
        copies = [(src, r.spec.inputs[role]) for r in todo for role, src in r.sources.items()]

        def pin(pair: tuple[str, str]) -> str | None:
            try:
                self.store.copy(*pair)
            except KeyNotFound:
                return pair[0]
            return None

        gone = [src for src in parallel_map(pin, copies) if src is not None]
        if gone:
            parallel_map(lambda r: self.discard(ref_of(r), r.batch_id), todo)
            raise InputRejected("job input", f"{gone[0].rsplit('/', 1)[-1]!r} was deleted meanwhile")
        created: list[JobRecord] = []
        skipped: list[JobRecord] = []  # jobs of a case an earlier chunk found purged: inputs copied, nothing else
        for start in range(0, len(todo), CREATE_CHUNK):
            chunk = [r for r in todo[start : start + CREATE_CHUNK] if r.spec.case not in purged]
            skipped += [r for r in todo[start : start + CREATE_CHUNK] if r.spec.case in purged]
            writes: list[Callable[[], None]] = []
            for record in chunk:
                ref = ref_of(record)
                entry = {"case": ref.case, **({"batch": record.batch_id} if record.batch_id else {})}
                writes += [
                    partial(self.store.put, index_key(ref.tenant, ref.job_id), _json(entry), JSON_TYPE),
                    partial(self.store.put, queue_key(ref.tenant, ref.job_id), _json({"case": ref.case}), JSON_TYPE),
                ]
            listings = [listing_key(all_index_prefix(r.spec.tenant), r.spec.job_id, r.spec.case) for r in chunk]
            parallel_map(_call, writes + empty_writes(self.store, listings))
            made = parallel_map(lambda r: self.store.put_if_absent(ref_of(r).key, _stamped(r), JSON_TYPE), chunk)
            late = self._purged_cases(chunk)
            if late:  # this chunk's jobs of the case go; its later jobs are skipped (copies: discarded below)
                parallel_map(lambda r: self.discard(ref_of(r), r.batch_id), [r for r in chunk if r.spec.case in late])
                purged |= late
            new = [r for r, fresh_one in zip(chunk, made) if fresh_one and r.spec.case not in late]
            created += new
            if new and on_created is not None:
                on_created(new)
        if skipped:
            parallel_map(lambda r: self.discard(ref_of(r), r.batch_id), skipped)
        return created, purged

    def _purged_cases(self, records: list[JobRecord]) -> set[str]:
        """The cases of `records` no longer at their records' purge generation (one read each)."""
        current = self._current_many(records)
        return {r.spec.case for r, ok in zip(records, current) if not ok}

    def find(self, tenant: str, job_id: str) -> JobRef | None:
        """The tenant's job with that id, or None (another tenant's id finds nothing)."""
        if not ID_RE.match(job_id):
            return None
        try:
            case = self.store.get_json(index_key(tenant, job_id))["case"]
        except KeyNotFound:
            return None
        return JobRef(tenant, case, job_id)

    def page_refs(
        self, tenant: str, state: str | None, after: str | None, limit: int
    ) -> tuple[list[JobRef], str | None]:
        """One page of the tenant's job refs in id order, after job id `after` (a valid id or
        None): up to `limit` entries of the index that answers `state` (None: every job; queued
        or running: the queue markers; a final state: its state index), and the cursor for the
        next page (None at the end). Entries are hints: the caller checks each record's state.
        Cost: one LIST of `limit` keys (plus one GET per queue marker, in parallel)."""
        if state is None or state in TERMINAL_STATES:
            prefix = all_index_prefix(tenant) if state is None else state_index_prefix(tenant, state)
            keys = self.store.list(prefix, start_after=listing_start(prefix, after), limit=limit)
            refs = [r for r in (parse_listing_key(tenant, k) for k in keys) if r is not None]
        else:
            prefix = queue_prefix(tenant)
            start = None if after is None else queue_key(tenant, after)
            keys = self.store.list(prefix, start_after=start, limit=limit)
            refs = [r for r, _ in self._marker_refs(keys)]
        last = keys[-1] if len(keys) == limit else None
        if last is None:
            return refs, None
        return refs, last.rsplit("/", 1)[-1].partition(".")[0]

    def load_many(self, refs: list[JobRef]) -> list[JobRecord | None]:
        """The records of `refs` (None where gone), read in parallel."""
        return light_map(self.store, self.load, refs)

    def queued_refs(self, known: set[tuple[str, str]] | None = None) -> list[tuple[JobRef, str]]:
        """(ref, marker key) for every queue marker: the active jobs, whatever the history size.
        Markers are listed a page at a time and read in parallel: O(active jobs). Markers of
        the `known` (tenant, job id) pairs are skipped unread: the dispatcher's rescan passes
        the jobs it holds already, so a rescan of a deep queue is its listing, not a GET per
        marker every `rescan_s` (on S3, 1000 queued jobs were 1000 GETs every 10 s)."""
        out: list[tuple[JobRef, str]] = []
        page: list[str] = []
        for key in self.store.iter_keys(QUEUE_PREFIX):
            if known and marker_job(key) in known:
                continue
            page.append(key)
            if len(page) == 1000:
                out += self._marker_refs(page)
                page = []
        return out + self._marker_refs(page)

    def _marker_refs(self, keys: list[str]) -> list[tuple[JobRef, str]]:
        def read(key: str) -> tuple[JobRef, str] | None:
            named = marker_job(key)
            if named is None:
                return None
            try:
                case = self.store.get_json(key)["case"]
            except KeyNotFound:
                return None
            return JobRef(named[0], case, named[1]), key

        return [r for r in light_map(self.store, read, keys) if r is not None]

    def batch_states(self, tenant: str, batch_id: str, members: list[tuple[str, str | None]]) -> dict[str, str | None]:
        """job id -> state (None: purged) of the batch's `members` ([job id, case] pairs), from
        one listing of the batch's entries: a done entry gives a final state, a running entry
        "running", neither "queued" (module docstring). Only a member with two done entries
        (a lost race) has its record read. Cost: one listing of at most twice the batch's size,
        no record read: the same for an active batch as for a finished one."""
        done: dict[str, set[str]] = {}
        running: set[str] = set()
        prefix = f"tenants/{tenant}/batches/{batch_id}/"
        for key in self.store.iter_keys(prefix):
            kind, _, name = key[len(prefix) :].partition("/")
            if kind == "done":
                job_id, _, state = name.partition(".")
                done.setdefault(job_id, set()).add(state)
            elif kind == "running":
                running.add(name)
        states: dict[str, str | None] = {}
        unsure: list[JobRef] = []
        for job_id, case in members:
            final = done.get(job_id)
            if case is None:  # the member's case was purged: its label is scrubbed from the batch
                states[job_id] = None
            elif final is not None and len(final) == 1:
                states[job_id] = next(iter(final))
            elif final is not None:
                unsure.append(JobRef(tenant, case, job_id))
            else:
                states[job_id] = "running" if job_id in running else "queued"
        for ref, read in zip(unsure, light_map(self.store, self.state_of, unsure)):
            states[ref.job_id] = read
        return states

    def outside_keys(self, ref: JobRef, batch: str | None = None) -> list[str]:
        """The keys of a job kept outside its case prefix (indexes, queue marker, its batch's
        done and running entries): a purge of the case deletes them too. Without `batch` it reads
        the job's id index entry for it, so call it before deleting that (a writer discarding its
        own job passes the record's batch: a concurrent purge may have deleted the index entry
        already). A purge of a whole case uses `case_outside_keys` (no read per job)."""
        if batch is None:
            try:
                batch = self.store.get_json(index_key(ref.tenant, ref.job_id)).get("batch")
            except KeyNotFound:
                batch = None
        return _outside(ref, batch)

    def case_outside_keys(self, tenant: str, case: str, job_ids: Iterable[str], batch_ids: Iterable[str]) -> list[str]:
        """`outside_keys` of every job of a case being purged: `job_ids` (the case's job folders)
        and `batch_ids` (the case's batch markers, `cases/<c>/batches/<b>`, written before any
        job of the batch). Each job's batch is found in the batch records (read in parallel),
        not in its id index entry: O(batches) reads instead of O(jobs). Call it before the
        batches are scrubbed of the case (a scrubbed record no longer names its jobs' case)."""
        batch_ids = sorted(set(batch_ids))

        def members(batch_id: str) -> list[str]:
            try:
                doc = self.store.get_json(batch_key(tenant, batch_id))
            except KeyNotFound:  # created, purged or discarded around us: its jobs carry no batch entries
                return []
            return [str(entry[0]) for entry in doc.get("jobs", []) if len(entry) == 2 and entry[1] == case]

        batch_of: dict[str, str] = {}
        for batch_id, job_list in zip(batch_ids, light_map(self.store, members, batch_ids)):
            for job_id in job_list:
                batch_of[job_id] = batch_id
        return [
            key
            for job_id in sorted(set(job_ids))
            for key in _outside(JobRef(tenant, case, job_id), batch_of.get(job_id))
        ]

    def cancelled(self, ref: JobRef) -> bool:
        return self.store.exists(cancel_key(ref.tenant, ref.case, ref.job_id))


def _outside(ref: JobRef, batch: str | None) -> list[str]:
    """The keys `outside_keys` names for a job of `batch` (None: created alone)."""
    finals = sorted(TERMINAL_STATES)
    keys = [
        index_key(ref.tenant, ref.job_id),
        queue_key(ref.tenant, ref.job_id),
        listing_key(all_index_prefix(ref.tenant), ref.job_id, ref.case),
        *(listing_key(state_index_prefix(ref.tenant, st), ref.job_id, ref.case) for st in finals),
    ]
    if batch:
        keys += [batch_done_key(ref.tenant, batch, ref.job_id, st) for st in finals]
        keys.append(batch_running_key(ref.tenant, batch, ref.job_id))
    return keys


def _json(obj: object) -> bytes:
    """A small entry's JSON (without an indent: json's C encoder, not its Python one)."""
    return json.dumps(obj, sort_keys=True).encode()


def _stamped(record: JobRecord) -> bytes:
    """The record as stored (JSON), its `updated_at` set to now. pydantic writes the bytes itself:
    ~0.02 ms a record where `model_dump` + `json.dumps(indent=2, sort_keys=True)` (the pure-Python
    encoder, which an indent selects) took ~0.14 ms, paid 3 times per job (bench/RESULTS.md,
    issue 18 third session). A float that is not finite is written as null (valid JSON)."""
    record.updated_at = utcnow()
    return record.model_dump_json(indent=2).encode()
