"""Health, readiness and metrics: no token, no tenant."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from occlutrace_compute.service import schemas as s
from occlutrace_compute.service.errors import RETRY_AFTER_S
from occlutrace_compute.service.routes.deps import Ctl

router = APIRouter(tags=["ops"])

READYZ_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": s.Readiness, "description": "ready"},
    503: {
        "model": s.Readiness,
        "description": "not ready: the same body, `ready` false",
        "headers": {"Retry-After": {"description": "seconds to wait", "required": True, "schema": {"type": "integer"}}},
    },
}


@router.get("/healthz", response_model=s.Health)
async def healthz() -> s.Health:
    return s.Health(status="ok")


@router.get("/readyz", responses=READYZ_RESPONSES)
async def readyz(ctl: Ctl) -> JSONResponse:
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
    return JSONResponse(
        status_code=200 if ok else 503,
        content={"ready": ok, "checks": checks},
        headers=None if ok else {"Retry-After": str(RETRY_AFTER_S)},
    )


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(ctl: Ctl) -> Response:
    cluster = b""
    if ctl.link is not None:
        try:
            cluster = await ctl.link.call("metrics_text")
        except Exception:
            pass
    ctl.metrics.dispatcher_up.set(1 if cluster else 0)
    text = ctl.metrics.exposition() + cluster
    return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")
