"""Job records in the object store: keys, reads, writes and the small indexes around them.

The record (`tenants/<t>/cases/<c>/jobs/<id>/job.json`) is the source of truth. Beside it:
- `tenants/<t>/index/jobs/<id>.json` -> {"case"}: find a job by id and list a tenant's jobs
  (ids sort by creation time);
- `queue/<t>/<id>.json` -> {"case"}: the cheap "active jobs" list the dispatcher rescans; written
  before the record and removed once the job is final (a marker without a record is dropped);
- `tenants/<t>/idempotency/<sha256(key)>.json` -> {"job_id"|"batch_id"};
- `tenants/<t>/batches/<id>.json` -> the batch's job ids;
- `.../jobs/<id>/cancel`: the cancel marker, checked by the worker after it writes a result.

Writes of a record check the case's purge generation before and after (purges.py): a record
whose case was purged meanwhile is not written, or is deleted again with everything of its job.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass

from occlutrace_compute.jobs.models import TERMINAL_STATES, JobRecord, utcnow
from occlutrace_compute.service.purges import CasePurged, still
from occlutrace_compute.storage.base import KeyNotFound, ObjectStore
from occlutrace_compute.storage.keys import job_prefix, job_record_key

ID_RE = re.compile(r"^[a-z][0-9a-f]{12,40}$")
JOB_KEY_RE = re.compile(r"^tenants/([^/]+)/cases/([^/]+)/jobs/([^/]+)/job\.json$")
QUEUE_PREFIX = "queue/"


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
    def parse(cls, key: str) -> "JobRef | None":
        m = JOB_KEY_RE.match(key)
        return cls(*m.groups()) if m else None


def ref_of(record: JobRecord) -> JobRef:
    return JobRef(record.spec.tenant, record.spec.case, record.spec.job_id)


class JobRepo:
    """Typed access to job records and their indexes in one store."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def load(self, ref: JobRef) -> JobRecord | None:
        try:
            return JobRecord.model_validate(self.store.get_json(ref.key))
        except KeyNotFound:
            return None

    def save(self, record: JobRecord) -> bool:
        """Write the record unless its case was purged since the job was created (checked before
        and after the write, see purges.py): False then, and everything of the job is deleted."""
        ref = ref_of(record)
        if not self.current(record):
            self.discard(ref)
            return False
        self.store.put_json(ref.key, _stamped(record))
        if record.state in TERMINAL_STATES:
            self.store.delete(queue_key(record.spec.tenant, record.spec.job_id))
        if not self.current(record):
            self.discard(ref)
            return False
        return True

    def current(self, record: JobRecord) -> bool:
        """Whether the record's case is still at the purge generation the job was created under."""
        return still(self.store, record.spec.tenant, record.spec.case, record.generation)

    def discard(self, ref: JobRef) -> None:
        """Delete every object of a job whose case was purged under it: its folder, index entry
        and queue marker (the purge may have listed the case before some of them were written)."""
        self.store.delete_prefix(ref.prefix)
        self.store.delete(index_key(ref.tenant, ref.job_id))
        self.store.delete(queue_key(ref.tenant, ref.job_id))

    def create(self, record: JobRecord) -> bool:
        """Index and queue marker first, the record last and only where none exists (False then):
        a crash leaves no record without a marker, and a second creator of the same job (the
        loser of an idempotency race between replicas) cannot reset a record a worker has moved on.
        Raises CasePurged (after deleting what it wrote) if the case was purged meanwhile."""
        ref = ref_of(record)
        if not self.current(record):
            self.discard(ref)
            raise CasePurged(ref.case)
        self.store.put_json(index_key(ref.tenant, ref.job_id), {"case": ref.case})
        self.store.put_json(queue_key(ref.tenant, ref.job_id), {"case": ref.case})
        created = self.store.put_json_if_absent(ref.key, _stamped(record))
        if not self.current(record):
            self.discard(ref)
            raise CasePurged(ref.case)
        return created

    def find(self, tenant: str, job_id: str) -> JobRef | None:
        """The tenant's job with that id, or None (another tenant's id finds nothing)."""
        if not ID_RE.match(job_id):
            return None
        try:
            case = self.store.get_json(index_key(tenant, job_id))["case"]
        except KeyNotFound:
            return None
        return JobRef(tenant, case, job_id)

    def list_ids(self, tenant: str) -> list[str]:
        prefix = index_prefix(tenant)
        return [k[len(prefix):-len(".json")] for k in self.store.list(prefix) if k.endswith(".json")]

    def queued_refs(self) -> list[tuple[JobRef, str]]:
        """(ref, marker key) for every queue marker: the dispatcher's periodic rescan."""
        out = []
        for key in self.store.list(QUEUE_PREFIX):
            parts = key[len(QUEUE_PREFIX):].split("/")
            if len(parts) != 2 or not parts[1].endswith(".json"):
                continue
            try:
                case = self.store.get_json(key)["case"]
            except KeyNotFound:
                continue
            out.append((JobRef(parts[0], case, parts[1][: -len(".json")]), key))
        return out

    def all_job_refs(self) -> list[JobRef]:
        """Every job record in the store: the full scan done when the dispatcher (re)starts."""
        return [r for r in (JobRef.parse(k) for k in self.store.list("tenants/")) if r is not None]

    def cancelled(self, ref: JobRef) -> bool:
        return self.store.exists(cancel_key(ref.tenant, ref.case, ref.job_id))


def _stamped(record: JobRecord) -> dict:
    """The record as stored, its `updated_at` set to now."""
    record.updated_at = utcnow()
    return record.model_dump(mode="json")
