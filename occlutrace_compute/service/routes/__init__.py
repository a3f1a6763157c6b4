"""The API's routers, one per resource; `ROUTERS` in the order their routes are registered (the
order of the OpenAPI document's paths)."""

from __future__ import annotations

from occlutrace_compute.service.routes import (
    batches,
    cases,
    downloads,
    jobs,
    ops,
    uploads,
)

ROUTERS = (ops.router, uploads.router, jobs.router, batches.router, downloads.router, cases.router)
