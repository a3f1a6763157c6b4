"""Jobs: create (idempotent), list (paged), status (with an ETag), result, cancel."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from occlutrace_compute.jobs.models import TERMINAL_STATES
from occlutrace_compute.service import schemas as s
from occlutrace_compute.service.callbacks import deliver
from occlutrace_compute.service.controller import HIDDEN_OUTPUTS, PINNED_INPUTS
from occlutrace_compute.service.errors import ApiError, not_found
from occlutrace_compute.service.logs import log
from occlutrace_compute.service.openapi import AUTHED, JOB_LINKS, problem
from occlutrace_compute.service.records import cancel_key
from occlutrace_compute.service.routes.deps import (
    ETAG,
    LOCATION,
    Ctl,
    IdemKey,
    IfNoneMatch,
    Page,
    Tenant,
    location,
    paging,
)
from occlutrace_compute.service.worker import status_body

logger = logging.getLogger("occlutrace.controller")
router = APIRouter(tags=["jobs"])


def etag_of(body: dict) -> str:
    """A strong ETag of a status body: its canonical JSON's digest (the same body, the same tag,
    on every replica)."""
    return '"' + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 If-None-Match: `*`, or a list of tags compared weakly (a `W/` prefix ignored)."""
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


@router.post(
    "/v1/jobs",
    response_model=s.JobStatus,
    status_code=201,
    responses={
        201: {"headers": LOCATION, "links": JOB_LINKS},
        200: {
            "model": s.JobStatus,
            "headers": LOCATION,
            "links": JOB_LINKS,
            "description": "a retry with the same Idempotency-Key: the job the first request created",
        },
        **problem(*AUTHED, 409, 413, 422),
    },
)
def create_job(
    body: s.JobCreate, request: Request, response: Response, tenant: Tenant, ctl: Ctl, idempotency_key_: IdemKey = None
) -> Any:
    """Create a pair or bite job on uploaded files of one case."""
    created = ctl.create_job(tenant, body, idempotency_key_)
    if created.existed:
        response.status_code = 200
    response.headers["Location"] = location(request, "jobs", created.record.spec.job_id)
    return status_body(created.record)


@router.get("/v1/jobs", response_model=s.JobList, responses=problem(*AUTHED, 422))
def list_jobs(
    tenant: Tenant,
    ctl: Ctl,
    page: Annotated[Page, Depends(paging(default=50, most=500))],
    state: Annotated[str | None, Query(pattern="^(queued|running|succeeded|failed|rejected|cancelled)$")] = None,
) -> s.JobList:
    """The tenant's jobs, oldest first: one page of at most `limit`. Pass `next` as `after` for
    the next page; a filtered page may hold fewer than `limit` jobs and still have a `next`.
    Cost O(limit) whatever the tenant's history: one index listing and the page's records."""
    return ctl.list_jobs(tenant, state, page.after, page.limit)


@router.get(
    "/v1/jobs/{job_id}",
    response_model=s.JobStatus,
    responses={
        200: {"headers": ETAG},
        304: {"headers": ETAG, "description": "not modified since the ETag sent in If-None-Match"},
        **problem(*AUTHED, 404),
    },
)
def get_job(job_id: str, tenant: Tenant, ctl: Ctl, response: Response, if_none_match: IfNoneMatch = None) -> Any:
    """The job's status, with an ETag: poll with `If-None-Match` and an unchanged job answers
    304 without a body."""
    body = status_body(ctl.status(tenant, job_id)[1])
    etag = etag_of(body)
    if if_none_match is not None and etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": "no-cache"})
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = "no-cache"  # may be cached, always revalidated
    return body


@router.get("/v1/jobs/{job_id}/result", response_model=s.JobResult, responses=problem(*AUTHED, 404))
def get_result(job_id: str, request: Request, tenant: Tenant, ctl: Ctl) -> s.JobResult:
    """The result JSON and a time-limited download URL for every output of the job."""
    ref, record = ctl.status(tenant, job_id)
    files = []
    if record.state == "succeeded":
        for key in ctl.store.list(ref.prefix):
            name = key[len(ref.prefix) :]
            if name not in HIDDEN_OUTPUTS and not name.startswith(PINNED_INPUTS):
                files.append(s.OutputFile(name=name, url=ctl.download_url(request, tenant, key)))
    return s.JobResult(
        job_id=job_id,
        state=record.state,
        reason=record.reason,
        result=record.result,
        files=files,
        expires_in=ctl.config.url_expiry_s,
    )


@router.post("/v1/jobs/{job_id}/cancel", response_model=s.JobStatus, responses=problem(*AUTHED, 404, 409, 413))
def cancel_job(job_id: str, tenant: Tenant, ctl: Ctl) -> Any:
    """Stop a job: not started -> never runs; running -> its result is discarded."""
    config = ctl.config
    ref, record = ctl.status(tenant, job_id)
    if record.state in TERMINAL_STATES:
        raise ApiError(409, "conflict", f"the job is already {record.state}", source="job", problem=record.state)
    ctl.store.put(cancel_key(ref.tenant, ref.case, ref.job_id), b"")
    record.state, record.reason, record.result = "cancelled", "cancelled by the client", None
    if not ctl.repo.save(record):  # purged meanwhile: nothing of it is left
        raise not_found("job")
    # after the marker: outputs written before it go here, later ones the worker removes
    ctl.store.delete_prefix(ref.prefix + "outputs/")
    body = status_body(record)
    log(logger, logging.INFO, "job cancelled", tenant=tenant, job_id=job_id)
    if record.callback_url:
        ctl.callbacks.submit(
            tenant,
            deliver,
            record.callback_url,
            body,
            config.callback_secret,
            attempts=config.callback_attempts,
            backoff_s=config.callback_backoff_s,
            allow_private=config.callback_allow_private,
        )
    return body
