"""The controller's connection to the dispatcher actor (notify, health, metrics).

Notifications are fire-and-forget: the job record is already in the store, and the dispatcher's
periodic rescan picks the job up even when a notification is lost.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.dispatcher import get_dispatcher
from occlutrace_compute.service.logs import log

logger = logging.getLogger("occlutrace.controller")


class DispatcherLink:
    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self._handle: Any = None

    def connect(self) -> None:
        """Join the Ray cluster (or start a local one) and find or create the dispatcher."""
        if not ray.is_initialized():
            ray.init(
                address=self.config.ray_address or None,
                namespace=self.config.ray_namespace,
                include_dashboard=False,
                log_to_driver=False,
            )
        self._handle = get_dispatcher(self.config)

    def notify(self, key: str) -> None:
        try:
            if self._handle is None:
                self.connect()
            self._handle.notify.remote(key)
        except Exception as exc:  # the rescan covers it
            self._handle = None
            log(logger, logging.WARNING, "dispatcher notify failed", error=type(exc).__name__)

    async def call(self, method: str, timeout_s: float = 2.0) -> Any:
        """Call a dispatcher method; re-create the dispatcher if it is gone for good."""
        try:
            if self._handle is None:
                await asyncio.to_thread(self.connect)
            ref = getattr(self._handle, method).remote()
            return await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout_s)
        except asyncio.TimeoutError:
            raise
        except Exception:
            self._handle = None
            raise
