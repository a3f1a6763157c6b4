"""The controller's ASGI app: a stateless FastAPI app; every piece of state lives in the object store.

`create_app` only assembles: the `Controller` (service/controller.py: the logic, testable without
HTTP), the routers (service/routes/: one per resource), the error handlers (service/errors.py),
the docs pages, the finished OpenAPI document and the middleware, and runs the dispatcher link's
watchdog and the staging sweeper while the app serves (started and stopped by its lifespan: an
app that is built but never served runs no thread).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.controller import Controller
from occlutrace_compute.service.docs import add_docs_routes, operation_id
from occlutrace_compute.service.errors import ApiError, install_error_handlers
from occlutrace_compute.service.link import DispatcherLink
from occlutrace_compute.service.logs import setup_logging
from occlutrace_compute.service.middleware import AccessLog, Authenticate, SizeLimit
from occlutrace_compute.service.openapi import install as install_openapi
from occlutrace_compute.service.routes import ROUTERS
from occlutrace_compute.storage.base import ObjectStore

__all__ = ["ApiError", "Controller", "create_app"]


@dataclass
class Sweeper:
    """The staging sweeper thread of one serving app and the event that stops it."""

    thread: threading.Thread
    stopping: threading.Event

    def stop(self, timeout_s: float = 60.0) -> None:
        """Ask the loop to end and wait for it: a sweep in progress finishes first (each store
        call is bounded by the store's retry policy, so `timeout_s` is only a backstop)."""
        self.stopping.set()
        self.thread.join(timeout_s)


def start_sweeper(ctl: Controller, every_s: float) -> Sweeper | None:
    """Run `ctl.sweep_forever` in a thread every `every_s` seconds; None when `every_s` is 0."""
    if every_s <= 0:
        return None
    stopping = threading.Event()
    thread = threading.Thread(target=ctl.sweep_forever, args=(every_s, stopping), name="staging-sweeper", daemon=True)
    thread.start()
    return Sweeper(thread, stopping)


def create_app(config: ServiceConfig, store: ObjectStore | None = None, link: DispatcherLink | None = None) -> FastAPI:
    """The ASGI app. `link` None: no dispatcher (jobs are stored and wait for one)."""
    setup_logging()
    ctl = Controller(config, store or config.open_store(), link)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        """The dispatcher link's watchdog (it rejoins Ray after a head restart; see
        service/link.py) and the staging sweeper run while the app serves. Both are stopped and
        joined at shutdown, before the server returns: a sweep never outlives the app (nor
        the store it reads, which a test or the process may close next)."""
        if link is not None:
            link.start_watchdog()
        sweeper = start_sweeper(ctl, config.staging_sweep_s)
        try:
            yield
        finally:
            if sweeper is not None:
                await asyncio.to_thread(sweeper.stop)
            if link is not None:
                await asyncio.to_thread(link.stop_watchdog)

    app = FastAPI(
        lifespan=lifespan,
        title="OccluTrace Compute",
        version="1.0",
        description="Rigid alignment and analysis of de-identified dental surface meshes.",
        docs_url=None,
        redoc_url=None,  # served from the package's own assets (add_docs_routes): no CDN
        generate_unique_id_function=operation_id,
    )
    app.state.controller = ctl
    app.state.sweep_staging = ctl.sweep_staging
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    add_docs_routes(app)
    install_openapi(app)
    app.add_middleware(SizeLimit, upload_limit=config.max_upload_bytes + 64 * 1024, json_limit=config.max_json_bytes)
    app.add_middleware(Authenticate, tenant_for=ctl.tokens.tenant_for, failures=ctl.auth_failures)
    app.add_middleware(AccessLog, metrics=ctl.metrics)
    return app
