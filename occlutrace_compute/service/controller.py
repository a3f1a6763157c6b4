"""What the route handlers share and the API's logic that needs no HTTP: `Controller` holds the
config, the store, the auth limits and the dispatcher link, and does the idempotent creation of
jobs and batches, the pagination of job lists and batch pages, input intake, the staging sweep and
the case purge. Routers (service/routes/) translate between HTTP and these methods; the unit
tests (tests/test_service_controller.py) call them directly.

Every state lives in the object store, so any number of replicas can serve the same store. A
job is created by writing its record (the source of truth) and then notifying the dispatcher; if
the notification is lost, the dispatcher's periodic rescan finds the job anyway.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import Request
from pydantic import ValidationError

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.jobs.models import TERMINAL_STATES, JobRecord, JobSpec
from occlutrace_compute.service import purges, schemas as s
from occlutrace_compute.service.auth import (
    FailedAuthLimiter,
    RateLimiter,
    TokenRegistry,
)
from occlutrace_compute.service.callbacks import CallbackPool, callback_url_problem
from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.errors import (
    ApiError,
    FileTooLarge,
    not_found,
    purged_meanwhile,
)
from occlutrace_compute.service.instrumented import InstrumentedStore
from occlutrace_compute.service.intake import checked_case, clean_mesh
from occlutrace_compute.service.link import DispatcherLink
from occlutrace_compute.service.logs import REQUEST_ID, log
from occlutrace_compute.service.metrics import controller_metrics
from occlutrace_compute.service.purges import CasePurged
from occlutrace_compute.service.records import (
    ID_RE,
    JobRef,
    JobRepo,
    batch_key,
    idempotency_key,
    new_id,
    ref_of,
)
from occlutrace_compute.service.signing import UrlGrant, sign_grant
from occlutrace_compute.service.worker import status_body
from occlutrace_compute.storage.base import KeyNotFound, ObjectStore
from occlutrace_compute.storage.keys import (
    case_prefix,
    check_id,
    input_key,
    job_prefix,
    purge_case as purge_case_objects,
    split_case_key,
)

logger = logging.getLogger("occlutrace.controller")
HIDDEN_OUTPUTS = ("job.json", "cancel")
PINNED_INPUTS = "inputs/"  # a job's own copies of its inputs, under its prefix (not outputs)
STAGING_INDEX = "staging/"  # staging/<upload id>.json -> {tenant, case}; ids sort by creation time
OUTPUT_KEY_RE = re.compile(r"^jobs/[a-z][0-9a-f]{12,40}/outputs/[^/]+\Z")


def created_s(object_id: str) -> float | None:
    """Creation time of a `new_id` id (a letter, then 12 hex digits of ms since the epoch)."""
    try:
        return int(object_id[1:13], 16) / 1000.0
    except ValueError:
        return None


def body_hash(model: Any) -> str:
    return hashlib.sha256(json.dumps(model.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def staging_entry(upload_id: str) -> str:
    return f"{STAGING_INDEX}{upload_id}.json"


@dataclass(frozen=True)
class JobCreated:
    """`create_job`'s outcome: the job, and whether it existed already (an idempotent retry)."""

    record: JobRecord
    existed: bool


@dataclass(frozen=True)
class BatchCreated:
    """`create_batch`'s outcome: the batch id, its jobs' status bodies (cases purged meanwhile
    left out), and whether the batch existed already (an idempotent retry)."""

    batch_id: str
    jobs: list[dict]
    existed: bool


class Controller:
    """What the route handlers share: config, store, auth, limits, the dispatcher link."""

    def __init__(self, config: ServiceConfig, store: ObjectStore, link: DispatcherLink | None) -> None:
        self.config = config
        self.metrics = controller_metrics()
        self.store = InstrumentedStore(store, self.metrics.store_errors)
        self.repo = JobRepo(self.store)
        self.tokens = TokenRegistry(config.tokens_file)
        self.limiter = RateLimiter(config.rate_per_s, config.rate_burst)
        self.auth_failures = FailedAuthLimiter(config.auth_fail_per_s, config.auth_fail_burst)
        self.callbacks = CallbackPool(config.callback_concurrency)
        self.link = link
        self._key_locks: dict[str, list] = {}  # name -> [lock, users]
        self._key_locks_guard = threading.Lock()
        self._conditional_writes: str | None = None

    def conditional_writes(self) -> str:
        """ "ok" when the store honours create-if-absent, probed once per process: an S3-compatible
        store that ignores `If-None-Match` would let two replicas both win an idempotency claim
        (each replica still serialises its own requests, so this is reported, not fatal)."""
        if self._conditional_writes is None:
            key = f"ops/conditional-write-probe/{new_id('p')}.json"
            try:
                first = self.store.put_json_if_absent(key, {})
                again = self.store.put_json_if_absent(key, {})
            finally:
                self.store.delete(key)
            self._conditional_writes = "ok" if first and not again else "unsupported"
            if self._conditional_writes != "ok":
                log(
                    logger,
                    logging.ERROR,
                    "the object store ignores conditional writes: idempotency keys hold "
                    "within each controller replica only",
                )
        return self._conditional_writes

    def scrub_batch(self, tenant: str, batch_id: str, case: str) -> bool:
        """Forget `case` in one batch record: its jobs stay counted (as purged), its label goes."""
        key = batch_key(tenant, batch_id)
        try:
            batch = self.store.get_json(key)
        except KeyNotFound:
            return False
        if not any(entry[1] == case for entry in batch["jobs"]):
            return False
        batch["jobs"] = [[job_id, None if c == case else c] for job_id, c in batch["jobs"]]
        self.store.put_json(key, batch)
        return True

    def write_probe(self) -> None:
        """Write and delete a small object: a store that reads but cannot write is not ready."""
        key = f"ops/write-probe/{new_id('p')}"
        try:
            self.store.put(key, b"\0" * 4096)
        finally:
            self.store.delete(key)

    @contextmanager
    def key_lock(self, name: str) -> Iterator[None]:
        """Serialises requests with the same idempotency key within this replica."""
        with self._key_locks_guard:
            entry = self._key_locks.setdefault(name, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._key_locks_guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._key_locks[name]

    # -- jobs --------------------------------------------------------------------------------

    def build_record(
        self,
        tenant: str,
        body: s.JobCreate,
        job_id: str,
        batch_id: str | None,
        idem: str | None,
        callbacks_seen: dict[str, str | None] | None = None,
        generations: dict[str, int] | None = None,
        present: set[str] | None = None,
    ) -> JobRecord:
        """The job's record, validated. `callbacks_seen` carries callback URL checks across the
        jobs of one request: a batch of 1000 jobs usually names one URL, resolved once;
        `generations` likewise the purge generation of each case (read once per case), and
        `present` the input keys found to exist (a batch's jobs usually share their inputs: one
        check each, not one per job; an input deleted later fails the job's copy instead)."""
        generations = {} if generations is None else generations
        # a case in `generations` passed the label checks for an earlier job of this request
        case = body.case if body.case in generations else checked_case(body.case, self.config.allow_patterns)
        keys = {role: self.input_source(tenant, case, role, name) for role, name in body.inputs.items()}
        if body.callback_url:
            seen = {} if callbacks_seen is None else callbacks_seen
            if body.callback_url not in seen:
                seen[body.callback_url] = callback_url_problem(body.callback_url, self.config.callback_allow_private)
            problem = seen[body.callback_url]
            if problem:
                raise ApiError(422, "invalid_callback", "callback_url refused", source="callback_url", problem=problem)
        # the store only now, the request being valid: the generation first (a purge after this
        # point is seen by the record's creation), then the inputs, which must exist
        if case not in generations:
            generations[case] = purges.generation(self.store, tenant, case)
        present = set() if present is None else present
        for role, key in keys.items():
            if key not in present:
                if not self.store.exists(key):
                    raise InputRejected(f"input {role!r}", f"no committed file {body.inputs[role]!r} in case {case!r}")
                present.add(key)
        pinned = {
            role: f"{job_prefix(tenant, case, job_id)}{PINNED_INPUTS}{role}/{key.rsplit('/', 1)[-1]}"
            for role, key in keys.items()
        }
        try:
            spec = JobSpec(
                job_id=job_id,
                tenant=tenant,
                case=case,
                kind=body.kind,
                inputs=pinned,
                options=body.options,
                allow=self.config.allow_patterns,
            )
        except ValidationError as exc:
            raise ApiError(
                422, "invalid_job", "invalid job", source="inputs", problem=exc.errors()[0].get("msg", str(exc))
            ) from None
        return JobRecord(
            spec=spec,
            batch_id=batch_id,
            callback_url=body.callback_url,
            idempotency_key=idem,
            generation=generations[case],
            sources=keys,
            request_id=REQUEST_ID.get(),
        )

    def input_source(self, tenant: str, case: str, role: str, name: str) -> str:
        """The key a job input names, checked without a store call: a committed file of the case
        (`inputs/<name>`, by name or full key) or an output of an earlier job of the SAME tenant
        and case. Nothing else: not staging (uncommitted, unsanitised), not job records."""
        source = f"input {role!r}"
        if "/" not in name:
            return input_key(tenant, case, name)
        parts = split_case_key(name)
        if parts.tenant != tenant or parts.case != case:
            raise InputRejected(source, f"{name!r} is not a file of case {case!r}")
        if not (parts.rest.startswith("inputs/") and parts.rest.count("/") == 1) and not OUTPUT_KEY_RE.match(
            parts.rest
        ):
            raise InputRejected(source, f"{name!r} is neither a committed input nor an earlier job's output")
        return name

    def submit(self, record: JobRecord) -> None:
        """Pin the inputs (each copied under the job's own prefix: a later upload of the same name
        cannot change a queued job's input) and create the record; CasePurged if the case was
        purged meanwhile (then nothing of the job is left)."""
        ref = JobRef(record.spec.tenant, record.spec.case, record.spec.job_id)
        if self.store.exists(ref.key):  # created by an earlier try or replica
            return
        try:
            for role, key in record.sources.items():
                try:
                    self.store.copy(key, record.spec.inputs[role])
                except KeyNotFound:
                    raise InputRejected(
                        f"input {role!r}", f"{key.rsplit('/', 1)[-1]!r} was deleted meanwhile"
                    ) from None
            created = self.repo.create(record)
        except (InputRejected, CasePurged):
            self.repo.discard(ref, record.batch_id)
            raise
        if not created:
            return
        self.metrics.jobs_submitted.labels(kind=record.spec.kind).inc()
        log(
            logger,
            logging.INFO,
            "job submitted",
            tenant=ref.tenant,
            job_id=ref.job_id,
            kind=record.spec.kind,
            batch_id=record.batch_id,
        )
        if self.link is not None:
            self.link.notify(ref.key)

    def submit_many(self, records: list[JobRecord], fresh: bool = False) -> tuple[set[str], set[str]]:
        """`submit` for the jobs of one batch in a few parallel store rounds (`JobRepo.create_many`),
        the dispatcher notified once per chunk of jobs created (workers start on the first jobs
        of a big batch while the rest are written); returns (the ids of the jobs this call
        created, the cases purged meanwhile: nothing of their jobs is left). `fresh`: the job
        ids were made by this request, so no record can exist yet (no existence check per job).
        InputRejected if an input was deleted meanwhile (nothing of the call left)."""

        def created_now(chunk: list[JobRecord]) -> None:
            kinds: dict[str, int] = {}
            for record in chunk:
                kinds[record.spec.kind] = kinds.get(record.spec.kind, 0) + 1
                log(
                    logger,
                    logging.INFO,
                    "job submitted",
                    tenant=record.spec.tenant,
                    job_id=record.spec.job_id,
                    kind=record.spec.kind,
                    batch_id=record.batch_id,
                )
            for kind, count in kinds.items():
                self.metrics.jobs_submitted.labels(kind=kind).inc(count)
            if self.link is not None:
                self.link.notify_many([ref_of(r).key for r in chunk])

        created, purged = self.repo.create_many(records, fresh=fresh, on_created=created_now)
        return {r.spec.job_id for r in created}, purged

    def status(self, tenant: str, job_id: str) -> tuple[JobRef, JobRecord]:
        ref = self.repo.find(tenant, job_id)
        record = self.repo.load(ref) if ref else None
        if ref is None or record is None:
            raise not_found("job")
        return ref, record

    def idempotent(self, tenant: str, key: str | None, body: Any) -> dict | None:
        """The stored answer of an earlier request with this key, or None; 422 on reuse."""
        if key is None:
            return None
        try:
            saved = self.store.get_json(idempotency_key(tenant, key))
        except KeyNotFound:
            return None
        if saved.get("body") != body_hash(body):
            raise ApiError(
                422,
                "idempotency_key_reused",
                "Idempotency-Key was used for a different request",
                source="Idempotency-Key",
                problem="reused with a different request body",
            )
        return saved

    def claim(self, tenant: str, key: str, body: Any, answer: dict) -> dict:
        """For a key `idempotent` found no record of: `answer` (the ids this request will create),
        recorded with a create-if-absent write, or the answer of a request that recorded one
        first (422 if its body differed). The write is atomic across controller replicas, so two
        simultaneous first requests with one key agree on one set of ids."""
        if self.store.put_json_if_absent(idempotency_key(tenant, key), {**answer, "body": body_hash(body)}):
            return answer
        saved = self.idempotent(tenant, key, body)
        if saved is None:  # the record that won is gone again (a purge in between): go on unrecorded
            log(logger, logging.WARNING, "idempotency record vanished after a lost claim", tenant=tenant)
            return answer
        return saved

    # -- urls --------------------------------------------------------------------------------

    def download_url(self, request: Request, tenant: str, key: str) -> str:
        expires = timedelta(seconds=self.config.url_expiry_s)
        url = self.store.presigned_get(key, expires)
        if url:
            return url
        token = sign_grant(self.config.url_secret, UrlGrant(tenant, key, "GET", time.time() + self.config.url_expiry_s))
        return str(request.url_for("download", token=token))

    # -- idempotent creation -------------------------------------------------------------------

    def idempotency_lock(self, tenant: str, key: str | None) -> Any:
        """Serialises requests that carry the same Idempotency-Key (within this replica)."""
        return self.key_lock(f"{tenant}\0{key}" if key else new_id("l"))

    def create_job(self, tenant: str, body: s.JobCreate, key: str | None) -> JobCreated:
        """Create one job, at most once per Idempotency-Key `key`: a retry (same key, same body)
        gets the job the first request created (`existed`), without re-validation; the same key
        with another body is 422. Across replicas the key's claim is a create-if-absent write,
        so two simultaneous first requests agree on one job id; a claim whose job was never
        stored (a crash, or another replica still writing) is completed with the claimed id.
        Cost: O(1) store calls plus one copy per input."""
        with self.idempotency_lock(tenant, key):
            saved = self.idempotent(tenant, key, body)  # a retry: answered without re-validation
            record: JobRecord | None = None
            if saved is None:
                record = self.build_record(tenant, body, new_id("j"), None, key)
                if not key:  # no key (or an empty one): nothing to claim
                    self.submit(record)
                    return JobCreated(record, existed=False)
                saved = self.claim(tenant, key, body, {"job_id": record.spec.job_id})
            ref = self.repo.find(tenant, saved["job_id"])
            existing = self.repo.load(ref) if ref else None
            if existing is not None:
                return JobCreated(existing, existed=True)
            if record is None or record.spec.job_id != saved["job_id"]:  # not stored yet (a crash, another replica)
                record = self.build_record(tenant, body, saved["job_id"], None, key)
            self.submit(record)
            return JobCreated(record, existed=False)

    def create_batch(self, tenant: str, body: s.BatchCreate, key: str | None) -> BatchCreated:
        """Create many jobs at once, all validated before any is stored; idempotent per `key` as
        `create_job` (a retry answers the first request's batch and job ids). A case purged
        while the batch is written leaves no trace in it. Cost: O(jobs) store calls."""
        with self.idempotency_lock(tenant, key):
            callbacks_seen: dict[str, str | None] = {}
            generations: dict[str, int] = {}
            present: set[str] = set()

            def build(ids: dict) -> list[JobRecord]:
                return [
                    self.build_record(tenant, job, job_id, ids["batch_id"], key, callbacks_seen, generations, present)
                    for job, job_id in zip(body.jobs, ids["job_ids"])
                ]

            saved = self.idempotent(tenant, key, body)  # 422 first if the key was used otherwise
            ids = saved or {"batch_id": new_id("b"), "job_ids": [new_id("j") for _ in body.jobs]}
            records = build(ids)  # all validated before anything is stored
            fresh = not saved  # ids made here: nothing of the batch can be stored yet
            if key and not saved:
                claimed = self.claim(tenant, key, body, ids)
                if claimed["batch_id"] != ids["batch_id"]:  # an earlier request's ids
                    ids, records, fresh = claimed, build(claimed), False
            batch_id = ids["batch_id"]
            existed = not fresh and self.store.exists(batch_key(tenant, batch_id))
            for case in sorted({r.spec.case for r in records}):  # first: how a purge finds the batch
                self.store.put(f"{case_prefix(tenant, case)}batches/{batch_id}", b"")
            self.store.put_json(
                batch_key(tenant, batch_id),
                {"batch_id": batch_id, "jobs": [[r.spec.job_id, r.spec.case] for r in records]},
            )
            try:
                created, purged = self.submit_many(records, fresh=fresh)
            except InputRejected:
                if not existed:  # an input deleted meanwhile: no job of the batch was left, nor is its record
                    self.store.delete(batch_key(tenant, batch_id))
                    for case in sorted({r.spec.case for r in records}):
                        self.store.delete(f"{case_prefix(tenant, case)}batches/{batch_id}")
                raise
            purged |= {case for case, gen in generations.items() if not purges.still(self.store, tenant, case, gen)}
            for case in purged:  # a purge that ran meanwhile: the batch keeps no trace of the case
                self.scrub_batch(tenant, batch_id, case)
                self.store.delete(f"{case_prefix(tenant, case)}batches/{batch_id}")
            kept = [record for record in records if record.spec.case not in purged]
            # a job this call created is answered as created; one stored earlier (a retry, another
            # replica) as it is now: one read per such job, none for a new batch
            older = [r for r in kept if r.spec.job_id not in created]
            currents = dict(zip((r.spec.job_id for r in older), self.repo.load_many([ref_of(r) for r in older])))
            statuses = [status_body(currents.get(r.spec.job_id) or r) for r in kept]
            return BatchCreated(batch_id, statuses, existed)

    # -- pagination ----------------------------------------------------------------------------

    def list_jobs(self, tenant: str, state: str | None, after: str | None, limit: int) -> s.JobList:
        """The tenant's jobs, oldest first: one page of at most `limit`, `next` the cursor of the
        next page (None at the end); a filtered page may hold fewer than `limit` jobs and still
        have a `next`. Cost O(limit) whatever the tenant's history: one index listing and the
        page's records."""
        if after is not None and not ID_RE.match(after):
            raise ApiError(
                422,
                "invalid_cursor",
                "`after` must be a job id (a page's `next`)",
                source="after",
                problem="not a job id",
            )
        refs, cursor = self.repo.page_refs(tenant, state, after, limit)
        records = self.repo.load_many(refs)
        jobs = [status_body(r) for r in records if r is not None and (state is None or r.state == state)]
        return s.JobList(jobs=[s.JobStatus(**j) for j in jobs], next=cursor)

    def batch_page(self, tenant: str, batch_id: str, after: str | None, limit: int) -> dict:
        """Counts by state over the whole batch (purged jobs as "purged"), and one page of its
        jobs in job-id order: the next `limit` members after `after` that are not purged, `next`
        None on the last page. Cost: one read per member for the counts, `limit` for the page."""
        try:
            check_id("batch id", batch_id)
            batch = self.store.get_json(batch_key(tenant, batch_id))
        except (KeyNotFound, InputRejected):
            raise not_found("batch") from None
        members = sorted(batch["jobs"])  # pages follow job-id order
        states = self.repo.batch_states(tenant, batch_id, [(job_id, case) for job_id, case in members])
        counts: dict[str, int] = {}
        for state in states.values():
            counts[state or "purged"] = counts.get(state or "purged", 0) + 1
        # The page: the next `limit` members that are not purged, read in parallel.
        wanted = [
            JobRef(tenant, case, job_id)
            for job_id, case in members
            if (after is None or job_id > after) and states[job_id] is not None
        ][:limit]
        page = [status_body(r) for r in self.repo.load_many(wanted) if r is not None]
        last = wanted[-1].job_id if wanted else None
        done = all(state in TERMINAL_STATES or state == "purged" for state in counts)
        more = last is not None and any(job_id > last for job_id, _ in members)
        return {
            "batch_id": batch_id,
            "total": len(batch["jobs"]),
            "counts": counts,
            "done": done,
            "jobs": page,
            "next": last if more else None,
        }

    # -- inputs --------------------------------------------------------------------------------

    def store_input(
        self, tenant: str, case: str, name: str, data: bytes, generation: int | None = None
    ) -> s.UploadInfo:
        """Sanitise and store one input, unless the case is purged meanwhile (checked before and
        after the write; the input is deleted again then, and the answer is 409)."""
        clean = clean_mesh(data, name, self.config.max_upload_bytes, self.config.allow_patterns)
        key = input_key(tenant, case, name)
        started = purges.generation(self.store, tenant, case) if generation is None else generation
        if not purges.still(self.store, tenant, case, started):
            raise purged_meanwhile(case)
        self.store.put(key, clean)
        if not purges.still(self.store, tenant, case, started):
            self.store.delete(key)
            raise purged_meanwhile(case)
        self.metrics.bytes_in.inc(len(data))
        log(logger, logging.INFO, "input stored", tenant=tenant, bytes=len(clean))
        return s.UploadInfo(name=name, key=key, bytes=len(clean))

    def commit_staged(self, tenant: str, case: str, upload_id: str) -> s.UploadInfo:
        """Validate, sanitise and store what was PUT to an upload URL; the staging goes either way."""
        staging = f"{case_prefix(tenant, case)}staging/{upload_id}/"
        created = created_s(upload_id)
        if created is None or created + self.config.staging_ttl_s < time.time():  # expired, maybe not swept yet
            raise not_found("upload")
        try:
            meta = self.store.get_json(staging + "meta.json")
        except KeyNotFound:
            raise not_found("upload") from None
        name = meta["name"]
        try:
            size = self.store.size(staging + "data")  # a HEAD: an oversized object is never read
        except KeyNotFound:
            raise ApiError(409, "not_uploaded", "nothing was PUT to the upload URL yet", source=name) from None
        try:
            if size > self.config.max_upload_bytes:
                raise FileTooLarge(name, size, self.config.max_upload_bytes)
            return self.store_input(
                tenant, case, name, self.store.get(staging + "data"), int(meta.get("generation", 0))
            )
        finally:
            self.store.delete_prefix(staging)
            self.store.delete(staging_entry(upload_id))

    def sweep_staging(self, now: float | None = None) -> int:
        """Delete uploads whose staging outlived `staging_ttl_s` (never committed); returns how many.
        Upload ids sort by creation time, so the sweep stops at the first one still valid: one
        listing plus one read and two deletes per expired upload."""
        now = time.time() if now is None else now
        swept = 0
        for key in self.store.list(STAGING_INDEX):
            upload_id = key[len(STAGING_INDEX) : -len(".json")]
            created = created_s(upload_id)
            if created is None:
                continue
            if created + self.config.staging_ttl_s > now:
                break
            try:
                entry = self.store.get_json(key)
                self.store.delete_prefix(f"{case_prefix(entry['tenant'], entry['case'])}staging/{upload_id}/")
            except KeyNotFound:
                pass
            self.store.delete(key)
            swept += 1
        if swept:
            log(logger, logging.INFO, "expired uploads deleted", count=swept)
        return swept

    def sweep_forever(self, every_s: float, stopping: threading.Event) -> None:
        """The staging sweeper's loop (a thread), every `every_s` seconds until `stopping` is set
        (by the app's shutdown: service/app.py)."""
        while not stopping.wait(every_s):
            try:
                self.sweep_staging()
            except Exception as exc:
                log(logger, logging.WARNING, "staging sweep failed", error=type(exc).__name__)

    # -- purge ---------------------------------------------------------------------------------

    def purge_case(self, tenant: str, case: str) -> s.PurgeResult:
        """Delete every object of the case (inputs, staging, jobs, outputs), its job index and
        queue entries, its upload index entries and its label in batch records; on a versioned
        bucket the older versions of all of these too (`unremoved` lists what the bucket refused).
        Final: see purges.py for why no writer that started before can bring anything back.
        Cost: one listing and one delete per object of the case, one read per batch naming the case, one call per job, upload and
        batch naming it, plus (versioned buckets) one version listing per touched key; nothing
        proportional to the tenant's other cases."""
        check_id("case label", case)
        number = purges.begin(self.store, tenant, case)
        prefix = case_prefix(tenant, case)
        removed = purge_case_objects(self.store, tenant, case)
        touched: list[str] = []
        job_ids = {k[len(prefix) + 5 :].split("/", 1)[0] for k in removed if k.startswith(prefix + "jobs/")}
        batch_ids = {k[len(prefix) + 8 :] for k in removed if k.startswith(prefix + "batches/")}
        # indexes, queue markers, batch entries: each job's batch from the batch records (O(batches) reads)
        for extra in self.repo.case_outside_keys(tenant, case, job_ids, batch_ids):
            if self.store.exists(extra):
                self.store.delete(extra)
                removed.append(extra)
            touched.append(extra)
        uploads = {k[len(prefix) + 8 :].split("/", 1)[0] for k in removed if k.startswith(prefix + "staging/")}
        for upload_id in sorted(uploads):
            entry = staging_entry(upload_id)
            if self.store.exists(entry):
                self.store.delete(entry)
                removed.append(entry)
            touched.append(entry)
        for batch_id in sorted(batch_ids):  # the batches that named the case (markers under the case)
            self.scrub_batch(tenant, batch_id, case)
            touched.append(batch_key(tenant, batch_id))
        versions, unremoved = self.store.purge_versions(prefix)
        for key in touched:
            more, refused = self.store.purge_versions(key, exact=True)
            versions, unremoved = versions + more, unremoved + refused
        purges.end(self.store, tenant, case, number)
        if unremoved:
            log(
                logger,
                logging.ERROR,
                "purge left object versions the bucket refused to delete",
                tenant=tenant,
                count=len(unremoved),
            )
        log(logger, logging.INFO, "case purged", tenant=tenant, count=len(removed))
        return s.PurgeResult(
            case=case, removed=sorted(removed), count=len(removed), versions_removed=versions, unremoved=unremoved
        )
