"""ASGI middleware: authentication, request-size limits, HTTP metrics and the JSON access log.

The access log and the metrics name the matched route TEMPLATE (`/v1/download/{token}`), never
the raw path, so signed tokens in URLs stay out of logs and label values.

Every request gets a request id (the client's `X-Request-ID` when it is a plain token, else a
new one), echoed in the response's `X-Request-ID` header, put on every log line written while
the request is served (logs.REQUEST_ID) and stored in the records of the jobs it creates.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from occlutrace_compute.service.logs import REQUEST_ID, log, request_id_from
from occlutrace_compute.service.metrics import ControllerMetrics
from occlutrace_compute.service.problems import PROBLEM_MEDIA_TYPE, problem_body

logger = logging.getLogger("occlutrace.http")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
TENANT_SCOPE_KEY = "occlutrace.tenant"  # set by the auth dependency, read by the access log
UPLOAD_PATHS = re.compile(r"^/v1/(cases/[^/]+/files|uploads/[^/]+)\Z")
# Authorised by the signed token in the path (like an S3 presigned URL), not by a bearer token.
GRANT_PATHS = re.compile(r"^/v1/(uploads|download)/[^/]+\Z")


class _TooLarge(Exception):
    pass


async def _send_problem(send: Send, body: dict, headers: dict[str, str] | None = None) -> None:
    """An RFC 9457 answer (service/problems.py), the same body the app's error handlers give."""
    status = body["status"]
    raw = json.dumps(body).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(raw)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})


class Authenticate:
    """The bearer token of every `/v1` request is checked here, before the app runs and so before
    a byte of the body is read: an unauthenticated upload costs its headers, never disk or memory.
    The tenant goes into the scope (`TENANT_SCOPE_KEY`) for the routes. Failed attempts are
    counted per client address (`FailedAuthLimiter`): past the limit, 429 + Retry-After.

    `tenant_for(token) -> tenant | None` and the limiter are the controller's."""

    def __init__(self, app: Any, tenant_for: Callable[[str], str | None], failures: Any) -> None:
        self.app = app
        self.tenant_for = tenant_for
        self.failures = failures

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/v1/") or GRANT_PATHS.match(path):
            await self.app(scope, receive, send)
            return
        address = (scope.get("client") or ("unknown", 0))[0]
        wait = self.failures.blocked(address)
        if wait > 0:
            await _send_problem(
                send,
                problem_body(429, "rate_limited", "too many failed authentications", "Authorization"),
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
            return
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        tenant = self.tenant_for(token) if scheme.lower() == "bearer" and token else None
        if tenant is None:
            self.failures.failed(address)
            message = "invalid bearer token" if token else "missing bearer token"
            await _send_problem(send, problem_body(401, "unauthorized", message), {"WWW-Authenticate": "Bearer"})
            return
        scope[TENANT_SCOPE_KEY] = tenant
        await self.app(scope, receive, send)


class SizeLimit:
    """413 for a body over the limit: uploads get `upload_limit`, everything else `json_limit`."""

    def __init__(self, app: Any, upload_limit: int, json_limit: int) -> None:
        self.app = app
        self.upload_limit = upload_limit
        self.json_limit = json_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = self.upload_limit if UPLOAD_PATHS.match(scope["path"]) else self.json_limit
        problem = problem_body(
            413,
            "too_large",
            f"request body over the limit of {limit} bytes",
            "request body",
            f"larger than {limit} bytes",
        )
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_problem(send, problem)
            return
        seen = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_problem(send, problem)


class AccessLog:
    """Counts and times every request by route template; logs one JSON line per request; gives
    the request its id (outermost middleware, so even a 401/413/429 answer carries it)."""

    def __init__(self, app: Any, metrics: ControllerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        header = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = request_id_from(header)
        token = REQUEST_ID.set(request_id)

        async def tracking_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            elapsed = time.perf_counter() - start
            self.metrics.http_requests.labels(method=scope["method"], route=route, status=str(status)).inc()
            self.metrics.http_duration.labels(route=route).observe(elapsed)
            log(
                logger,
                logging.INFO,
                "request",
                method=scope["method"],
                route=route,
                status=status,
                duration_s=round(elapsed, 4),
                tenant=scope.get(TENANT_SCOPE_KEY),
            )
            REQUEST_ID.reset(token)
