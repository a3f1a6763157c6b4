"""What the routers share: the controller, the caller's tenant, the request headers they read
and the response headers they declare."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from occlutrace_compute.service.controller import Controller
from occlutrace_compute.service.errors import ApiError
from occlutrace_compute.service.middleware import TENANT_SCOPE_KEY

_bearer = HTTPBearer(auto_error=False)


def controller(request: Request) -> Controller:
    return request.app.state.controller


def tenant_of(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
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


def location(request: Request, collection: str, object_id: str) -> str:
    """The created resource's path (a relative reference, RFC 9110), under the ingress prefix."""
    return f"{request.scope.get('root_path', '').rstrip('/')}/v1/{collection}/{object_id}"


@dataclass(frozen=True)
class Page:
    """One page's request: at most `limit` items after the cursor `after` (a page's `next`)."""

    limit: int
    after: str | None


def paging(default: int, most: int) -> Callable[..., Page]:
    """The dependency reading a paged listing's query: `limit` (1 to `most`, `default` when
    absent) and `after` (at most 64 characters); one definition for every paged route, so their
    parameters, bounds and validation errors stay alike."""

    # Query() as defaults, not inside Annotated: this module's annotations are strings
    # (`from __future__ import annotations`), and FastAPI could not resolve `most` from them.
    def page(
        limit: int = Query(default, ge=1, le=most),
        after: str | None = Query(None, max_length=64),
    ) -> Page:
        return Page(limit, after)

    return page


Ctl = Annotated[Controller, Depends(controller)]
Tenant = Annotated[str, Depends(tenant_of)]
IfNoneMatch = Annotated[
    str | None, Header(alias="If-None-Match", description="an ETag of an earlier answer: 304 if the job is unchanged")
]
IdemKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key", max_length=200, description="a retried request with the same key creates nothing new"
    ),
]
LOCATION = {
    "Location": {"description": "the path of the created resource", "required": True, "schema": {"type": "string"}}
}
ETAG = {
    "ETag": {
        "description": "the status's entity tag, for If-None-Match",
        "required": True,
        "schema": {"type": "string"},
    }
}
