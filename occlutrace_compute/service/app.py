"""The controller: a stateless FastAPI app; every piece of state lives in the object store.

Any number of replicas can serve the same store. A job is created by writing its record (the
source of truth) and then notifying the dispatcher; if the notification is lost, the
dispatcher's periodic rescan finds the job anyway.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import math
import re
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated, Any, Iterator

from fastapi import Depends, FastAPI, File, Form, Header, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.jobs.models import TERMINAL_STATES, JobRecord, JobSpec
from occlutrace_compute.service import schemas as s
from occlutrace_compute.service import purges
from occlutrace_compute.service.auth import FailedAuthLimiter, RateLimiter, TokenRegistry
from occlutrace_compute.service.callbacks import CallbackPool, callback_url_problem, deliver
from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.docs import add_docs_routes, operation_id
from occlutrace_compute.service.instrumented import InstrumentedStore
from occlutrace_compute.service.intake import checked_case, checked_file_name, clean_mesh
from occlutrace_compute.service.link import DispatcherLink
from occlutrace_compute.service.logs import REQUEST_ID, log, setup_logging
from occlutrace_compute.service.metrics import controller_metrics
from occlutrace_compute.service.middleware import TENANT_SCOPE_KEY, AccessLog, Authenticate, SizeLimit
from occlutrace_compute.service.openapi import AUTHED, BATCH_LINKS, JOB_LINKS, problem
from occlutrace_compute.service.openapi import install as install_openapi
from occlutrace_compute.service.problems import PROBLEM_MEDIA_TYPE, problem_body, validation_problem
from occlutrace_compute.service.purges import CasePurged
from occlutrace_compute.service.records import (
    ID_RE,
    JobRef,
    JobRepo,
    batch_key,
    cancel_key,
    idempotency_key,
    new_id,
)
from occlutrace_compute.service.signing import UrlGrant, sign_grant, verify_grant
from occlutrace_compute.service.worker import status_body
from occlutrace_compute.storage.base import KeyNotFound, ObjectStore, StoreError
from occlutrace_compute.storage.local import DISK_ERRNOS
from occlutrace_compute.storage.keys import case_prefix, check_id, input_key, job_prefix, split_case_key
from occlutrace_compute.storage.keys import purge_case as purge_case_objects

logger = logging.getLogger("occlutrace.controller")
RETRY_AFTER_S = 5
HIDDEN_OUTPUTS = ("job.json", "cancel")
PINNED_INPUTS = "inputs/"  # a job's own copies of its inputs, under its prefix (not outputs)
STAGING_INDEX = "staging/"  # staging/<upload id>.json -> {tenant, case}; ids sort by creation time
OUTPUT_KEY_RE = re.compile(r"^jobs/[a-z][0-9a-f]{12,40}/outputs/[^/]+$")


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str, source: str | None = None,
                 problem: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message
        self.source, self.problem, self.headers = source, problem, headers or {}


def _not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"no such {what}")


def _purged_meanwhile(case: str) -> ApiError:
    return ApiError(409, "case_purged", "the case was purged while this request was writing to it; nothing was kept",
                    source="case", problem="purged")


def _created_s(object_id: str) -> float | None:
    """Creation time of a `new_id` id (a letter, then 12 hex digits of ms since the epoch)."""
    try:
        return int(object_id[1:13], 16) / 1000.0
    except ValueError:
        return None


def _body_hash(model: Any) -> str:
    return hashlib.sha256(json.dumps(model.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


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
        self.stopping = threading.Event()

    def conditional_writes(self) -> str:
        """"ok" when the store honours create-if-absent, probed once per process: an S3-compatible
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
                log(logger, logging.ERROR, "the object store ignores conditional writes: idempotency keys hold "
                    "within each controller replica only")
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

    def build_record(self, tenant: str, body: s.JobCreate, job_id: str, batch_id: str | None,
                     idem: str | None, callbacks_seen: dict[str, str | None] | None = None,
                     generations: dict[str, int] | None = None) -> JobRecord:
        """The job's record, validated. `callbacks_seen` carries callback URL checks across the
        jobs of one request: a batch of 1000 jobs usually names one URL, resolved once;
        `generations` likewise the purge generation of each case (read once per case)."""
        case = checked_case(body.case, self.config.allow_patterns)
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
        generations = {} if generations is None else generations
        if case not in generations:
            generations[case] = purges.generation(self.store, tenant, case)
        for role, key in keys.items():
            if not self.store.exists(key):
                raise InputRejected(f"input {role!r}", f"no committed file {body.inputs[role]!r} in case {case!r}")
        pinned = {role: f"{job_prefix(tenant, case, job_id)}{PINNED_INPUTS}{role}/{key.rsplit('/', 1)[-1]}"
                  for role, key in keys.items()}
        try:
            spec = JobSpec(job_id=job_id, tenant=tenant, case=case, kind=body.kind, inputs=pinned,
                           options=body.options, allow=self.config.allow_patterns)
        except ValidationError as exc:
            raise ApiError(422, "invalid_job", "invalid job", source="inputs",
                           problem=exc.errors()[0].get("msg", str(exc))) from None
        return JobRecord(spec=spec, batch_id=batch_id, callback_url=body.callback_url, idempotency_key=idem,
                         generation=generations[case], sources=keys, request_id=REQUEST_ID.get())

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
        if not (parts.rest.startswith("inputs/") and parts.rest.count("/") == 1) and not OUTPUT_KEY_RE.match(parts.rest):
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
                    raise InputRejected(f"input {role!r}", f"{key.rsplit('/', 1)[-1]!r} was deleted meanwhile") from None
            created = self.repo.create(record)
        except (InputRejected, CasePurged):
            self.repo.discard(ref, record.batch_id)
            raise
        if not created:
            return
        self.metrics.jobs_submitted.labels(kind=record.spec.kind).inc()
        log(logger, logging.INFO, "job submitted", tenant=ref.tenant, job_id=ref.job_id,
            kind=record.spec.kind, batch_id=record.batch_id)
        if self.link is not None:
            self.link.notify(ref.key)

    def status(self, tenant: str, job_id: str) -> tuple[JobRef, JobRecord]:
        ref = self.repo.find(tenant, job_id)
        record = self.repo.load(ref) if ref else None
        if ref is None or record is None:
            raise _not_found("job")
        return ref, record

    def idempotent(self, tenant: str, key: str | None, body: Any) -> dict | None:
        """The stored answer of an earlier request with this key, or None; 422 on reuse."""
        if key is None:
            return None
        try:
            saved = self.store.get_json(idempotency_key(tenant, key))
        except KeyNotFound:
            return None
        if saved.get("body") != _body_hash(body):
            raise ApiError(422, "idempotency_key_reused", "Idempotency-Key was used for a different request",
                           source="Idempotency-Key", problem="reused with a different request body")
        return saved

    def claim(self, tenant: str, key: str, body: Any, answer: dict) -> dict:
        """For a key `idempotent` found no record of: `answer` (the ids this request will create),
        recorded with a create-if-absent write, or the answer of a request that recorded one
        first (422 if its body differed). The write is atomic across controller replicas, so two
        simultaneous first requests with one key agree on one set of ids."""
        if self.store.put_json_if_absent(idempotency_key(tenant, key), {**answer, "body": _body_hash(body)}):
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


_bearer = HTTPBearer(auto_error=False)


def tenant_of(request: Request,
              credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    """The caller's tenant, found by the `Authenticate` middleware before the body was read (the
    bearer dependency stays for the OpenAPI schema); 429 over the tenant's rate."""
    ctl: Controller = request.app.state.controller
    tenant = request.scope.get(TENANT_SCOPE_KEY)
    if tenant is None:  # a route outside the middleware's reach: never served unauthenticated
        raise ApiError(401, "unauthorized", "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    wait = ctl.limiter.acquire(tenant)
    if wait > 0:
        raise ApiError(429, "rate_limited", "too many requests", headers={"Retry-After": str(math.ceil(wait))})
    return tenant


Tenant = Annotated[str, Depends(tenant_of)]
IfNoneMatch = Annotated[str | None, Header(alias="If-None-Match", description="an ETag of an earlier answer: 304 if the job is unchanged")]
LOCATION = {"Location": {"description": "the path of the created resource", "required": True,
                         "schema": {"type": "string"}}}
ETAG = {"ETag": {"description": "the status's entity tag, for If-None-Match", "required": True,
                 "schema": {"type": "string"}}}


READYZ_503: dict[int | str, dict[str, Any]] = {503: {"description": "not ready: the same body, `ready` false",
                   "content": {"application/json": {"schema": {"type": "object"}}}, "headers": {
    "Retry-After": {"description": "seconds to wait", "required": True, "schema": {"type": "integer"}}}}}


def _location(request: Request, collection: str, object_id: str) -> str:
    """The created resource's path (a relative reference, RFC 9110), under the ingress prefix."""
    return f"{request.scope.get('root_path', '').rstrip('/')}/v1/{collection}/{object_id}"


def _etag(body: dict) -> str:
    """A strong ETag of a status body: its canonical JSON's digest (the same body, the same tag,
    on every replica)."""
    return '"' + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32] + '"'


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 If-None-Match: `*`, or a list of tags compared weakly (a `W/` prefix ignored)."""
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200,
                                       description="a retried request with the same key creates nothing new")]


def create_app(config: ServiceConfig, store: ObjectStore | None = None,
               link: DispatcherLink | None = None) -> FastAPI:
    """The ASGI app. `link` None: no dispatcher (jobs are stored and wait for one)."""
    setup_logging()
    ctl = Controller(config, store or config.open_store(), link)
    app = FastAPI(
        title="OccluTrace Compute",
        version="1.0",
        description="Rigid alignment and analysis of de-identified dental surface meshes.",
        docs_url=None, redoc_url=None,  # served from the package's own assets (add_docs_routes): no CDN
        generate_unique_id_function=operation_id,
    )
    app.state.controller = ctl

    # -- errors ------------------------------------------------------------------------------

    # Every error answer is an RFC 9457 problem (service/problems.py), FastAPI's own included.
    def error_response(status: int, body: dict, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(status_code=status, content=body, headers=headers, media_type=PROBLEM_MEDIA_TYPE)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, problem_body(exc.status, exc.error, exc.message, exc.source, exc.problem),
                              exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's validation errors and malformed JSON: every failing field in `errors`."""
        return error_response(422, validation_problem(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Unknown routes (404), wrong methods (405, with Allow), unparsable multipart (400)."""
        codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        return error_response(exc.status_code, problem_body(exc.status_code, codes.get(exc.status_code, "http_error"),
                                                            detail), dict(exc.headers or {}))

    @app.exception_handler(InputRejected)
    async def _rejected(_: Request, exc: InputRejected) -> JSONResponse:
        status = 413 if exc.problem.startswith("file too large") else 422
        return error_response(status, problem_body(status, "rejected", str(exc), exc.source, exc.problem))

    @app.exception_handler(CasePurged)
    async def _purged(_: Request, exc: CasePurged) -> JSONResponse:
        return error_response(409, problem_body(409, "case_purged", "the case is being purged or was purged while "
                                                "this request wrote to it; nothing of the request was kept",
                                                "case", "purged"))

    @app.exception_handler(KeyNotFound)
    async def _missing(_: Request, exc: KeyNotFound) -> JSONResponse:
        return error_response(404, problem_body(404, "not_found", "no such object"))

    @app.exception_handler(StoreError)
    async def _store_down(_: Request, exc: StoreError) -> JSONResponse:
        log(logger, logging.WARNING, "store unavailable", error=type(exc).__name__)
        return error_response(503, problem_body(503, "store_unavailable", "the object store is unavailable; retry later"),
                              {"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(OSError)
    async def _disk(_: Request, exc: OSError) -> JSONResponse:
        """The controller's own disk (a multipart upload spools to a temp file): full is 503."""
        if exc.errno in DISK_ERRNOS:
            log(logger, logging.WARNING, "controller disk unavailable", error=errno.errorcode.get(exc.errno, "?"))
            return error_response(503, problem_body(503, "disk_unavailable", "the controller's disk is full or "
                                                    "failing; retry later"), {"Retry-After": str(RETRY_AFTER_S)})
        log(logger, logging.ERROR, "unexpected OS error", error=type(exc).__name__)
        return error_response(500, problem_body(500, "internal", "internal error"))

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        """A bug: the same problem shape, nothing of the exception in it (Starlette's error
        layer re-raises after this answer, so the traceback is still logged)."""
        return error_response(500, problem_body(500, "internal", "internal error"))

    # -- health and metrics ------------------------------------------------------------------

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses=READYZ_503)
    async def readyz() -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(asyncio.to_thread(ctl.store.exists, "readyz"), 10)
            await asyncio.wait_for(asyncio.to_thread(ctl.write_probe), 10)  # a full disk reads fine
            checks["store"] = "ok"
            checks["conditional_writes"] = await asyncio.wait_for(asyncio.to_thread(ctl.conditional_writes), 10)
        except Exception as exc:
            checks["store"] = type(exc).__name__
        # Only what this pod needs to serve: its store. Ray and the dispatcher are shared by every
        # replica; their health is occlutrace_dispatcher_up (see /metrics) and an alert, since
        # failing readiness on them would take every replica out of the Service at once.
        ok = checks["store"] == "ok"
        return JSONResponse(status_code=200 if ok else 503, content={"ready": ok, "checks": checks},
                            headers=None if ok else {"Retry-After": str(RETRY_AFTER_S)})

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        cluster = b""
        if ctl.link is not None:
            try:
                cluster = await ctl.link.call("metrics_text")
            except Exception:
                pass  # the dispatcher is restarting: serve the controller's own series
        ctl.metrics.dispatcher_up.set(1 if cluster else 0)
        text = ctl.metrics.exposition() + cluster
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    # -- uploads -----------------------------------------------------------------------------

    def store_input(tenant: str, case: str, name: str, data: bytes, generation: int | None = None) -> s.UploadInfo:
        """Sanitise and store one input, unless the case is purged meanwhile (checked before and
        after the write; the input is deleted again then, and the answer is 409)."""
        clean = clean_mesh(data, name, config.max_upload_bytes, config.allow_patterns)
        key = input_key(tenant, case, name)
        started = purges.generation(ctl.store, tenant, case) if generation is None else generation
        if not purges.still(ctl.store, tenant, case, started):
            raise _purged_meanwhile(case)
        ctl.store.put(key, clean)
        if not purges.still(ctl.store, tenant, case, started):
            ctl.store.delete(key)
            raise _purged_meanwhile(case)
        ctl.metrics.bytes_in.inc(len(data))
        log(logger, logging.INFO, "input stored", tenant=tenant, bytes=len(clean))
        return s.UploadInfo(name=name, key=key, bytes=len(clean))

    @app.post("/v1/cases/{case}/files", response_model=s.UploadInfo, status_code=201, tags=["uploads"],
              responses=problem(*AUTHED, 400, 409, 413, 422))
    def upload_file(case: str, tenant: Tenant, file: Annotated[UploadFile, File()],
                    name: Annotated[str | None, Form(max_length=255)] = None) -> s.UploadInfo:
        """Upload one mesh (STL/OBJ/PLY): validated and stripped of metadata before it is stored."""
        case = checked_case(case, config.allow_patterns)
        fname = checked_file_name(name or file.filename or "", config.allow_patterns)
        data = file.file.read(config.max_upload_bytes + 1)
        return store_input(tenant, case, fname, data)

    @app.post("/v1/cases/{case}/uploads", response_model=s.UploadUrlResponse, status_code=201, tags=["uploads"],
              responses=problem(*AUTHED, 409, 413, 422))
    def create_upload(case: str, body: s.UploadUrlRequest, request: Request, tenant: Tenant) -> s.UploadUrlResponse:
        """A time-limited, single-use PUT URL for a big file; commit it afterwards to validate and
        sanitise it. Uncommitted uploads are deleted `staging_ttl_s` after this call."""
        case = checked_case(case, config.allow_patterns)
        fname = checked_file_name(body.name, config.allow_patterns)
        generation = purges.generation(ctl.store, tenant, case)
        upload_id = new_id("u")
        staging = f"{case_prefix(tenant, case)}staging/{upload_id}/"
        entry = staging_entry(upload_id)
        ctl.store.put_json(entry, {"tenant": tenant, "case": case})  # first: the sweeper finds it whatever happens
        ctl.store.put_json(staging + "meta.json", {"name": fname, "generation": generation})
        if not purges.still(ctl.store, tenant, case, generation):
            ctl.store.delete_prefix(staging)
            ctl.store.delete(entry)
            raise _purged_meanwhile(case)
        token = sign_grant(config.url_secret, UrlGrant(tenant, staging + "data", "PUT",
                                                       time.time() + min(config.url_expiry_s, config.staging_ttl_s)))
        return s.UploadUrlResponse(
            upload_id=upload_id, url=str(request.url_for("upload_put", token=token)),
            expires_in=min(config.url_expiry_s, config.staging_ttl_s),
            commit=f"/v1/cases/{case}/uploads/{upload_id}/commit",
        )

    def staging_entry(upload_id: str) -> str:
        return f"{STAGING_INDEX}{upload_id}.json"

    @app.put("/v1/uploads/{token}", status_code=204, name="upload_put", tags=["uploads"],
             responses=problem(403, 409, 413, 503))
    async def upload_put(token: str, request: Request) -> Response:
        """The signed PUT target: the token authorises one upload, once. Refused (before the body
        is read) once it was used, committed, expired or its case purged."""
        grant = verify_grant(config.url_secret, token, "PUT")
        staging = grant.key[: -len("data")] if grant and grant.key.endswith("/data") else None
        if grant is None or staging is None:
            raise ApiError(403, "forbidden", "invalid or expired upload URL")
        parts = split_case_key(grant.key)
        try:
            meta = await asyncio.to_thread(ctl.store.get_json, staging + "meta.json")
        except KeyNotFound:  # committed, purged or expired: the grant died with its staging
            raise ApiError(403, "forbidden", "invalid or expired upload URL") from None
        started = int(meta.get("generation", 0))
        if not await asyncio.to_thread(purges.still, ctl.store, parts.tenant, parts.case, started):
            raise ApiError(403, "forbidden", "invalid or expired upload URL")
        if not await asyncio.to_thread(ctl.store.put_json_if_absent, staging + "used.json", {}):
            raise ApiError(409, "upload_used", "this upload URL was used already; ask for a new one")
        try:
            with tempfile.SpooledTemporaryFile(max_size=1 << 20) as spool:
                async for chunk in request.stream():  # SizeLimit bounds the total
                    spool.write(chunk)
                spool.seek(0)
                await asyncio.to_thread(ctl.store.put_stream, grant.key, iter(lambda: spool.read(1 << 20), b""))
        except BaseException:  # the body never arrived whole: the grant may be used again
            await asyncio.to_thread(ctl.store.delete, staging + "used.json")
            raise
        if not await asyncio.to_thread(purges.still, ctl.store, parts.tenant, parts.case, started):
            await asyncio.to_thread(ctl.store.delete_prefix, staging)
            raise ApiError(403, "forbidden", "invalid or expired upload URL")
        return Response(status_code=204)

    @app.post("/v1/cases/{case}/uploads/{upload_id}/commit", response_model=s.UploadInfo, status_code=201,
              tags=["uploads"], responses=problem(*AUTHED, 404, 409, 413, 422))
    def commit_upload(case: str, upload_id: str, tenant: Tenant) -> s.UploadInfo:
        case = checked_case(case, config.allow_patterns)
        check_id("upload id", upload_id)
        staging = f"{case_prefix(tenant, case)}staging/{upload_id}/"
        created = _created_s(upload_id)
        if created is None or created + config.staging_ttl_s < time.time():  # expired, maybe not swept yet
            raise _not_found("upload")
        try:
            meta = ctl.store.get_json(staging + "meta.json")
        except KeyNotFound:
            raise _not_found("upload") from None
        name = meta["name"]
        try:
            size = ctl.store.size(staging + "data")  # a HEAD: an oversized object is never read
        except KeyNotFound:
            raise ApiError(409, "not_uploaded", "nothing was PUT to the upload URL yet", source=name) from None
        try:
            if size > config.max_upload_bytes:
                raise InputRejected(name, f"file too large: {size} bytes > limit {config.max_upload_bytes}")
            return store_input(tenant, case, name, ctl.store.get(staging + "data"), int(meta.get("generation", 0)))
        finally:
            ctl.store.delete_prefix(staging)
            ctl.store.delete(staging_entry(upload_id))

    def sweep_staging(now: float | None = None) -> int:
        """Delete uploads whose staging outlived `staging_ttl_s` (never committed); returns how many.
        Upload ids sort by creation time, so the sweep stops at the first one still valid: one
        listing plus one read and two deletes per expired upload."""
        now = time.time() if now is None else now
        swept = 0
        for key in ctl.store.list(STAGING_INDEX):
            upload_id = key[len(STAGING_INDEX):-len(".json")]
            created = _created_s(upload_id)
            if created is None:
                continue
            if created + config.staging_ttl_s > now:
                break
            try:
                entry = ctl.store.get_json(key)
                ctl.store.delete_prefix(f"{case_prefix(entry['tenant'], entry['case'])}staging/{upload_id}/")
            except KeyNotFound:
                pass
            ctl.store.delete(key)
            swept += 1
        if swept:
            log(logger, logging.INFO, "expired uploads deleted", count=swept)
        return swept

    app.state.sweep_staging = sweep_staging
    if config.staging_sweep_s > 0:
        def sweeper() -> None:
            while not ctl.stopping.wait(config.staging_sweep_s):
                try:
                    sweep_staging()
                except Exception as exc:  # a store outage: next round
                    log(logger, logging.WARNING, "staging sweep failed", error=type(exc).__name__)

        threading.Thread(target=sweeper, name="staging-sweeper", daemon=True).start()

    # -- jobs and batches --------------------------------------------------------------------

    def idempotency_lock(tenant: str, key: str | None):
        """Serialises requests that carry the same Idempotency-Key (within this replica)."""
        return ctl.key_lock(f"{tenant}\0{key}" if key else new_id("l"))

    @app.post("/v1/jobs", response_model=s.JobStatus, status_code=201, tags=["jobs"],
              responses={201: {"headers": LOCATION, "links": JOB_LINKS},
                         200: {"model": s.JobStatus, "headers": LOCATION, "links": JOB_LINKS,
                               "description": "a retry with the same Idempotency-Key: the job the first request created"},
                         **problem(*AUTHED, 409, 413, 422)})
    def create_job(body: s.JobCreate, request: Request, response: Response, tenant: Tenant,
                   idempotency_key_: IdemKey = None) -> Any:
        """Create a pair or bite job on uploaded files of one case."""
        with idempotency_lock(tenant, idempotency_key_):
            saved = ctl.idempotent(tenant, idempotency_key_, body)  # a retry: answered without re-validation
            record = None if saved else ctl.build_record(tenant, body, new_id("j"), None, idempotency_key_)
            if record is not None and idempotency_key_:
                saved = ctl.claim(tenant, idempotency_key_, body, {"job_id": record.spec.job_id})
            if saved:
                ref = ctl.repo.find(tenant, saved["job_id"])
                existing = ctl.repo.load(ref) if ref else None
                if existing is not None:
                    response.status_code = 200
                    response.headers["Location"] = _location(request, "jobs", existing.spec.job_id)
                    return status_body(existing)
                if record is None or record.spec.job_id != saved["job_id"]:  # not stored yet (a crash, another replica)
                    record = ctl.build_record(tenant, body, saved["job_id"], None, idempotency_key_)
            assert record is not None  # built above unless answered from the saved key
            ctl.submit(record)
            response.headers["Location"] = _location(request, "jobs", record.spec.job_id)
            return status_body(record)

    @app.get("/v1/jobs", response_model=s.JobList, tags=["jobs"], responses=problem(*AUTHED, 422))
    def list_jobs(tenant: Tenant, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                  after: Annotated[str | None, Query(max_length=64)] = None,
                  state: Annotated[str | None, Query(pattern="^(queued|running|succeeded|failed|rejected|cancelled)$")] = None,
                  ) -> s.JobList:
        """The tenant's jobs, oldest first: one page of at most `limit`. Pass `next` as `after` for
        the next page; a filtered page may hold fewer than `limit` jobs and still have a `next`.
        Cost O(limit) whatever the tenant's history: one index listing and the page's records."""
        if after is not None and not ID_RE.match(after):
            raise ApiError(422, "invalid_cursor", "`after` must be a job id (a page's `next`)", source="after",
                           problem="not a job id")
        refs, cursor = ctl.repo.page_refs(tenant, state, after, limit)
        records = ctl.repo.load_many(refs)
        jobs = [status_body(r) for r in records if r is not None and (state is None or r.state == state)]
        return s.JobList(jobs=[s.JobStatus(**j) for j in jobs], next=cursor)

    @app.get("/v1/jobs/{job_id}", response_model=s.JobStatus, tags=["jobs"],
             responses={200: {"headers": ETAG},
                        304: {"headers": ETAG, "description": "not modified since the ETag sent in If-None-Match"},
                        **problem(*AUTHED, 404)})
    def get_job(job_id: str, tenant: Tenant, response: Response, if_none_match: IfNoneMatch = None) -> Any:
        """The job's status, with an ETag: poll with `If-None-Match` and an unchanged job answers
        304 without a body."""
        body = status_body(ctl.status(tenant, job_id)[1])
        etag = _etag(body)
        if if_none_match is not None and _etag_matches(if_none_match, etag):
            return Response(status_code=304, headers={"ETag": etag, "Cache-Control": "no-cache"})
        response.headers["ETag"] = etag
        response.headers["Cache-Control"] = "no-cache"  # may be cached, always revalidated
        return body

    @app.get("/v1/jobs/{job_id}/result", response_model=s.JobResult, tags=["jobs"],
             responses=problem(*AUTHED, 404))
    def get_result(job_id: str, request: Request, tenant: Tenant) -> s.JobResult:
        """The result JSON and a time-limited download URL for every output of the job."""
        ref, record = ctl.status(tenant, job_id)
        files = []
        if record.state == "succeeded":
            for key in ctl.store.list(ref.prefix):
                name = key[len(ref.prefix):]
                if name not in HIDDEN_OUTPUTS and not name.startswith(PINNED_INPUTS):
                    files.append(s.OutputFile(name=name, url=ctl.download_url(request, tenant, key)))
        return s.JobResult(job_id=job_id, state=record.state, reason=record.reason, result=record.result,
                           files=files, expires_in=config.url_expiry_s)

    @app.post("/v1/jobs/{job_id}/cancel", response_model=s.JobStatus, tags=["jobs"],
              responses=problem(*AUTHED, 404, 409, 413))
    def cancel_job(job_id: str, tenant: Tenant) -> Any:
        """Stop a job: not started -> never runs; running -> its result is discarded."""
        ref, record = ctl.status(tenant, job_id)
        if record.state in TERMINAL_STATES:
            raise ApiError(409, "conflict", f"the job is already {record.state}", source="job", problem=record.state)
        ctl.store.put(cancel_key(ref.tenant, ref.case, ref.job_id), b"")
        record.state, record.reason, record.result = "cancelled", "cancelled by the client", None
        if not ctl.repo.save(record):  # purged meanwhile: nothing of it is left
            raise _not_found("job")
        # after the marker: outputs written before it go here, later ones the worker removes
        ctl.store.delete_prefix(ref.prefix + "outputs/")
        body = status_body(record)
        log(logger, logging.INFO, "job cancelled", tenant=tenant, job_id=job_id)
        if record.callback_url:
            ctl.callbacks.submit(tenant, deliver, record.callback_url, body, config.callback_secret,
                                 attempts=config.callback_attempts, backoff_s=config.callback_backoff_s,
                                 allow_private=config.callback_allow_private)
        return body

    @app.post("/v1/batches", response_model=s.BatchCreated, status_code=201, tags=["batches"],
              responses={201: {"headers": LOCATION, "links": BATCH_LINKS},
                         200: {"model": s.BatchCreated, "headers": LOCATION, "links": BATCH_LINKS,
                               "description": "a retry with the same Idempotency-Key: the batch the first request created"},
                         **problem(*AUTHED, 413, 422)})
    def create_batch(body: s.BatchCreate, request: Request, response: Response, tenant: Tenant,
                     idempotency_key_: IdemKey = None) -> Any:
        """Create many jobs at once; all are validated before any is stored."""
        with idempotency_lock(tenant, idempotency_key_):
            callbacks_seen: dict[str, str | None] = {}
            generations: dict[str, int] = {}

            def build(ids: dict) -> list[JobRecord]:
                return [ctl.build_record(tenant, job, job_id, ids["batch_id"], idempotency_key_, callbacks_seen,
                                         generations)
                        for job, job_id in zip(body.jobs, ids["job_ids"])]

            saved = ctl.idempotent(tenant, idempotency_key_, body)  # 422 first if the key was used otherwise
            ids = saved or {"batch_id": new_id("b"), "job_ids": [new_id("j") for _ in body.jobs]}
            records = build(ids)  # all validated before anything is stored
            if idempotency_key_ and not saved:
                claimed = ctl.claim(tenant, idempotency_key_, body, ids)
                if claimed["batch_id"] != ids["batch_id"]:  # an earlier request's ids
                    ids, records = claimed, build(claimed)
            batch_id = ids["batch_id"]
            if ctl.store.exists(batch_key(tenant, batch_id)):
                response.status_code = 200
            response.headers["Location"] = _location(request, "batches", batch_id)
            for case in sorted({r.spec.case for r in records}):  # first: how a purge finds the batch
                ctl.store.put(f"{case_prefix(tenant, case)}batches/{batch_id}", b"")
            ctl.store.put_json(batch_key(tenant, batch_id),
                               {"batch_id": batch_id, "jobs": [[r.spec.job_id, r.spec.case] for r in records]})
            purged: set[str] = set()
            for record in records:
                try:
                    ctl.submit(record)
                except CasePurged:
                    purged.add(record.spec.case)
            purged |= {case for case, gen in generations.items() if not purges.still(ctl.store, tenant, case, gen)}
            for case in purged:  # a purge that ran meanwhile: the batch keeps no trace of the case
                ctl.scrub_batch(tenant, batch_id, case)
                ctl.store.delete(f"{case_prefix(tenant, case)}batches/{batch_id}")
            statuses = []
            for record in records:
                if record.spec.case in purged:
                    continue
                current = ctl.repo.load(JobRef(tenant, record.spec.case, record.spec.job_id))
                statuses.append(status_body(current or record))
            return {"batch_id": batch_id, "jobs": statuses}

    @app.get("/v1/batches/{batch_id}", response_model=s.BatchStatus, tags=["batches"],
             responses=problem(*AUTHED, 404, 422))
    def get_batch(batch_id: str, tenant: Tenant, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  after: Annotated[str | None, Query(max_length=64)] = None) -> Any:
        """Counts by state over the whole batch, and one page of its jobs."""
        try:
            check_id("batch id", batch_id)
            batch = ctl.store.get_json(batch_key(tenant, batch_id))
        except (KeyNotFound, InputRejected):
            raise _not_found("batch") from None
        members = sorted(batch["jobs"])  # pages follow job-id order
        states = ctl.repo.batch_states(tenant, batch_id, [(job_id, case) for job_id, case in members])
        counts: dict[str, int] = {}
        for state in states.values():
            counts[state or "purged"] = counts.get(state or "purged", 0) + 1
        # The page: the next `limit` members that are not purged, read in parallel.
        wanted = [JobRef(tenant, case, job_id) for job_id, case in members
                  if (after is None or job_id > after) and states[job_id] is not None][:limit]
        page = [status_body(r) for r in ctl.repo.load_many(wanted) if r is not None]
        last = wanted[-1].job_id if wanted else None
        done = all(state in TERMINAL_STATES or state == "purged" for state in counts)
        more = last is not None and any(job_id > last for job_id, _ in members)
        return {"batch_id": batch_id, "total": len(batch["jobs"]), "counts": counts, "done": done,
                "jobs": page, "next": last if more else None}

    # -- downloads and purge -----------------------------------------------------------------

    @app.get("/v1/download/{token}", name="download", tags=["results"], response_class=Response,
             responses={200: {"content": {"application/octet-stream": {}}}, **problem(403, 404, 503)})
    async def download(token: str) -> Response:
        """Local-store counterpart of an S3 presigned GET: the token authorises one object."""
        grant = verify_grant(config.url_secret, token, "GET")
        if grant is None or not grant.key.startswith(f"tenants/{grant.tenant}/"):
            raise ApiError(403, "forbidden", "invalid or expired download URL")
        data = await asyncio.to_thread(ctl.store.get, grant.key)
        ctl.metrics.bytes_out.inc(len(data))
        filename = grant.key.rsplit("/", 1)[-1]
        return Response(data, media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    @app.delete("/v1/cases/{case}", response_model=s.PurgeResult, tags=["cases"], responses=problem(*AUTHED, 422))
    def purge(case: str, tenant: Tenant) -> s.PurgeResult:
        """Delete every object of the case (inputs, staging, jobs, outputs), its job index and
        queue entries, its upload index entries and its label in batch records; on a versioned
        bucket the older versions of all of these too (`unremoved` lists what the bucket refused).
        Final: see purges.py for why no writer that started before can bring anything back.
        Cost: one listing and one delete per object of the case, two calls per job, upload and
        batch naming it, plus (versioned buckets) one version listing per touched key; nothing
        proportional to the tenant's other cases."""
        check_id("case label", case)
        number = purges.begin(ctl.store, tenant, case)
        prefix = case_prefix(tenant, case)
        removed = purge_case_objects(ctl.store, tenant, case)
        touched: list[str] = []
        job_ids = {k[len(prefix) + 5:].split("/", 1)[0] for k in removed if k.startswith(prefix + "jobs/")}
        for job_id in sorted(job_ids):
            for extra in ctl.repo.outside_keys(JobRef(tenant, case, job_id)):  # indexes, queue marker
                if ctl.store.exists(extra):
                    ctl.store.delete(extra)
                    removed.append(extra)
                touched.append(extra)
        uploads = {k[len(prefix) + 8:].split("/", 1)[0] for k in removed if k.startswith(prefix + "staging/")}
        for upload_id in sorted(uploads):
            entry = staging_entry(upload_id)
            if ctl.store.exists(entry):
                ctl.store.delete(entry)
                removed.append(entry)
            touched.append(entry)
        batch_ids = {k[len(prefix) + 8:] for k in removed if k.startswith(prefix + "batches/")}
        for batch_id in sorted(batch_ids):  # the batches that named the case (markers under the case)
            ctl.scrub_batch(tenant, batch_id, case)
            touched.append(batch_key(tenant, batch_id))
        versions, unremoved = ctl.store.purge_versions(prefix)
        for key in touched:
            more, refused = ctl.store.purge_versions(key, exact=True)
            versions, unremoved = versions + more, unremoved + refused
        purges.end(ctl.store, tenant, case, number)
        if unremoved:
            log(logger, logging.ERROR, "purge left object versions the bucket refused to delete", tenant=tenant,
                count=len(unremoved))
        log(logger, logging.INFO, "case purged", tenant=tenant, count=len(removed))
        return s.PurgeResult(case=case, removed=sorted(removed), count=len(removed), versions_removed=versions,
                             unremoved=unremoved)

    add_docs_routes(app)
    install_openapi(app)
    app.add_middleware(SizeLimit, upload_limit=config.max_upload_bytes + 64 * 1024, json_limit=config.max_json_bytes)
    app.add_middleware(Authenticate, tenant_for=ctl.tokens.tenant_for, failures=ctl.auth_failures)
    app.add_middleware(AccessLog, metrics=ctl.metrics)
    return app
