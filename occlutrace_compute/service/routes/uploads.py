"""A case's files: a direct multipart upload, or a signed PUT URL and its commit."""

from __future__ import annotations

import asyncio
import tempfile
import time
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, Response, UploadFile

from occlutrace_compute.service import purges, schemas as s
from occlutrace_compute.service.controller import staging_entry
from occlutrace_compute.service.errors import ApiError, purged_meanwhile
from occlutrace_compute.service.intake import checked_case, checked_file_name
from occlutrace_compute.service.openapi import AUTHED, problem
from occlutrace_compute.service.records import new_id
from occlutrace_compute.service.routes.deps import Ctl, Tenant
from occlutrace_compute.service.signing import UrlGrant, sign_grant, verify_grant
from occlutrace_compute.storage.base import KeyNotFound
from occlutrace_compute.storage.keys import case_prefix, check_id, split_case_key

router = APIRouter(tags=["uploads"])


@router.post(
    "/v1/cases/{case}/files",
    response_model=s.UploadInfo,
    status_code=201,
    responses=problem(*AUTHED, 400, 409, 413, 422),
)
def upload_file(
    case: str,
    tenant: Tenant,
    ctl: Ctl,
    file: Annotated[UploadFile, File()],
    name: Annotated[str | None, Form(max_length=255)] = None,
) -> s.UploadInfo:
    """Upload one mesh (STL/OBJ/PLY): validated and stripped of metadata before it is stored."""
    case = checked_case(case, ctl.config.allow_patterns)
    fname = checked_file_name(name or file.filename or "", ctl.config.allow_patterns)
    data = file.file.read(ctl.config.max_upload_bytes + 1)
    return ctl.store_input(tenant, case, fname, data)


@router.post(
    "/v1/cases/{case}/uploads",
    response_model=s.UploadUrlResponse,
    status_code=201,
    responses=problem(*AUTHED, 409, 413, 422),
)
def create_upload(
    case: str, body: s.UploadUrlRequest, request: Request, tenant: Tenant, ctl: Ctl
) -> s.UploadUrlResponse:
    """A time-limited, single-use PUT URL for a big file; commit it afterwards to validate and
    sanitise it. Uncommitted uploads are deleted `staging_ttl_s` after this call."""
    config = ctl.config
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
        raise purged_meanwhile(case)
    token = sign_grant(
        config.url_secret,
        UrlGrant(tenant, staging + "data", "PUT", time.time() + min(config.url_expiry_s, config.staging_ttl_s)),
    )
    return s.UploadUrlResponse(
        upload_id=upload_id,
        url=str(request.url_for("upload_put", token=token)),
        expires_in=min(config.url_expiry_s, config.staging_ttl_s),
        commit=f"/v1/cases/{case}/uploads/{upload_id}/commit",
    )


@router.put("/v1/uploads/{token}", status_code=204, name="upload_put", responses=problem(403, 409, 413, 503))
async def upload_put(token: str, request: Request, ctl: Ctl) -> Response:
    """The signed PUT target: the token authorises one upload, once. Refused (before the body
    is read) once it was used, committed, expired or its case purged."""
    grant = verify_grant(ctl.config.url_secret, token, "PUT")
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


@router.post(
    "/v1/cases/{case}/uploads/{upload_id}/commit",
    response_model=s.UploadInfo,
    status_code=201,
    responses=problem(*AUTHED, 404, 409, 413, 422),
)
def commit_upload(case: str, upload_id: str, tenant: Tenant, ctl: Ctl) -> s.UploadInfo:
    case = checked_case(case, ctl.config.allow_patterns)
    check_id("upload id", upload_id)
    return ctl.commit_staged(tenant, case, upload_id)
