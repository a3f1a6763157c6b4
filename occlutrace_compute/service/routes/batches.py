"""Batches: many jobs created at once (idempotent), and their counts and pages."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from occlutrace_compute.service import schemas as s
from occlutrace_compute.service.openapi import AUTHED, BATCH_LINKS, problem
from occlutrace_compute.service.routes.deps import (
    LOCATION,
    Ctl,
    IdemKey,
    Page,
    Tenant,
    location,
    paging,
)

router = APIRouter(tags=["batches"])


@router.post(
    "/v1/batches",
    response_model=s.BatchCreated,
    status_code=201,
    responses={
        201: {"headers": LOCATION, "links": BATCH_LINKS},
        200: {
            "model": s.BatchCreated,
            "headers": LOCATION,
            "links": BATCH_LINKS,
            "description": "a retry with the same Idempotency-Key: the batch the first request created",
        },
        **problem(*AUTHED, 413, 422),
    },
)
def create_batch(
    body: s.BatchCreate,
    request: Request,
    response: Response,
    tenant: Tenant,
    ctl: Ctl,
    idempotency_key_: IdemKey = None,
) -> Any:
    """Create many jobs at once; all are validated before any is stored."""
    created = ctl.create_batch(tenant, body, idempotency_key_)
    if created.existed:
        response.status_code = 200
    response.headers["Location"] = location(request, "batches", created.batch_id)
    return {"batch_id": created.batch_id, "jobs": created.jobs}


@router.get("/v1/batches/{batch_id}", response_model=s.BatchStatus, responses=problem(*AUTHED, 404, 422))
def get_batch(
    batch_id: str,
    tenant: Tenant,
    ctl: Ctl,
    page: Annotated[Page, Depends(paging(default=100, most=1000))],
) -> Any:
    """Counts by state over the whole batch, and one page of its jobs."""
    return ctl.batch_page(tenant, batch_id, page.after, page.limit)
