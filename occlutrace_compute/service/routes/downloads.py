"""Downloads of job outputs: the local store's counterpart of an S3 presigned GET."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response

from occlutrace_compute.service.errors import ApiError
from occlutrace_compute.service.openapi import problem
from occlutrace_compute.service.routes.deps import Ctl
from occlutrace_compute.service.signing import verify_grant

router = APIRouter(tags=["results"])


@router.get(
    "/v1/download/{token}",
    name="download",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        **problem(403, 404, 503),
    },
)
async def download(token: str, ctl: Ctl) -> Response:
    """Local-store counterpart of an S3 presigned GET: the token authorises one object."""
    grant = verify_grant(ctl.config.url_secret, token, "GET")
    if grant is None or not grant.key.startswith(f"tenants/{grant.tenant}/"):
        raise ApiError(403, "forbidden", "invalid or expired download URL")
    data = await asyncio.to_thread(ctl.store.get, grant.key)
    ctl.metrics.bytes_out.inc(len(data))
    filename = grant.key.rsplit("/", 1)[-1]
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
