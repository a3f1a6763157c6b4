"""The controller's connection to the dispatcher actor (notify, health, metrics), kept alive by a
watchdog that rejoins Ray after a head restart.

Notifications are fire-and-forget: the job record is already in the store, and the dispatcher's
periodic rescan picks the job up even when a notification is lost.

Why a watchdog: a Ray driver whose head (GCS) is killed does not rejoin the new head by itself
(the new head is a new cluster), and `ray.init` against an absent head blocks for minutes. So no
request path ever connects: `call` and `notify` use the handle they find or fail at once, and one
watchdog thread probes the dispatcher, and after `max_failures` failed probes in a row drops the
handle (and, when this link started the Ray connection, the whole driver), then reconnects with
capped exponential backoff. Readiness never looks at any of this (`/readyz` checks the store).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import threading
from typing import Any

import ray

from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.dispatcher import get_dispatcher
from occlutrace_compute.service.logs import log

logger = logging.getLogger("occlutrace.controller")


class DispatcherUnavailable(RuntimeError):
    """No dispatcher handle right now; the watchdog is reconnecting."""


class Backoff:
    """Capped exponential backoff with full jitter: the n-th delay is uniform in
    [base * 2**n / 2, min(cap, base * 2**n)]; never below base / 2, never above cap."""

    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        if not 0 < base_s <= cap_s:
            raise ValueError(f"backoff needs 0 < base_s <= cap_s, got base_s={base_s}, cap_s={cap_s}")
        self.base_s, self.cap_s = base_s, cap_s
        self._rng = rng or random.Random()
        self._n = 0

    def next(self) -> float:
        ceiling = min(self.cap_s, self.base_s * 2 ** min(self._n, 30))  # 2**30: no float overflow
        self._n += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._n = 0


def gcs_reachable(address: str, timeout_s: float) -> bool:
    """Whether a TCP connection to `host:port` opens within `timeout_s`. Addresses of another form
    ("auto", "ray://...") are not probed (True): `ray.init` is tried directly."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in host:
        return True
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


class DispatcherLink:
    """The handle to the dispatcher plus its watchdog.

    Watchdog cost, bounded by construction: one probe (at most `probe_timeout_s`) every
    `probe_s` seconds while connected; while disconnected one reconnect attempt, then a wait of
    `Backoff(backoff_base_s, backoff_cap_s)` (never less than backoff_base_s / 2), so at most
    2 * 3600 / backoff_base_s attempts an hour and never a busy loop. A head whose port closed
    (this link joined it by address) is noticed within probe_s + probe_timeout_s seconds; a
    dispatcher that stops answering within max_failures * (probe_s + probe_timeout_s).
    """

    def __init__(
        self,
        config: ServiceConfig,
        *,
        probe_s: float = 2.0,
        probe_timeout_s: float = 5.0,
        max_failures: int = 3,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 15.0,
    ) -> None:
        if probe_s <= 0 or probe_timeout_s <= 0 or max_failures < 1:
            raise ValueError("probe_s and probe_timeout_s must be positive and max_failures at least 1")
        self.config = config
        self.probe_s, self.probe_timeout_s, self.max_failures = probe_s, probe_timeout_s, max_failures
        self.backoff = Backoff(backoff_base_s, backoff_cap_s)
        self.reconnects = 0  # completed reconnections (not the first connect)
        self._handle: Any = None
        self._owns_ray = False  # this link called ray.init: it may shut the driver down again
        self._lock = threading.Lock()  # guards _handle and the driver's (re)connection
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- connection ----------------------------------------------------------------------------

    def connect(self) -> None:
        """Join the Ray cluster (or start a local one) and find or create the dispatcher."""
        with self._lock:
            if not ray.is_initialized():
                ray.init(
                    address=self.config.ray_address or None,
                    namespace=self.config.ray_namespace,
                    include_dashboard=False,
                    log_to_driver=False,
                )
                self._owns_ray = True
            self._handle = get_dispatcher(self.config)

    def _disconnect(self) -> None:
        """Drop the handle; end the driver too if this link started it (a driver of a lost head
        cannot join the new one). A Ray someone else started is left alone."""
        with self._lock:
            self._handle = None
            if self._owns_ray and ray.is_initialized():
                try:
                    ray.shutdown()
                except Exception as exc:
                    log(logger, logging.WARNING, "ray shutdown failed", error=type(exc).__name__)

    def _reconnect(self) -> bool:
        """One attempt: the head's port first (a TCP connect, bounded), then join and probe."""
        address = self.config.ray_address
        if self._owns_ray and address and not gcs_reachable(address, self.probe_timeout_s):
            return False
        try:
            self.connect()
            return self._probe()
        except Exception as exc:
            log(logger, logging.WARNING, "dispatcher reconnect failed", error=type(exc).__name__)
            self._disconnect()
            return False

    def _head_gone(self) -> bool:
        """Whether the head this link joined refuses connections (a TCP connect, bounded). Seen
        at once, the driver is dropped before a new head can start on the same address: a
        driver of the old cluster must never meet the new one (and a dead head also makes
        actor calls block)."""
        address = self.config.ray_address
        if not (self._owns_ray and address):
            return False
        return not gcs_reachable(address, self.probe_timeout_s)

    def _probe(self) -> bool:
        handle = self._handle
        if handle is None:
            return False
        try:
            return ray.get(handle.ping.remote(), timeout=self.probe_timeout_s) == "ok"
        except Exception:
            return False

    # -- watchdog ------------------------------------------------------------------------------

    def start_watchdog(self) -> None:
        """Start the watchdog thread (idempotent); `stop_watchdog` ends it."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="dispatcher-watchdog", daemon=True)
        self._thread.start()

    def stop_watchdog(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)  # a reconnect blocked in ray.init: the thread is a daemon

    def _watch(self) -> None:
        failures = 0
        delay = self.probe_s
        while not self._stop.wait(delay):  # every pass waits first: no busy loop
            if self._handle is not None:
                head_gone = self._head_gone()
                if not head_gone and self._probe():
                    failures, delay = 0, self.probe_s
                    continue
                failures += 1
                if not head_gone and failures < self.max_failures:
                    delay = self.probe_s
                    continue
                log(
                    logger,
                    logging.WARNING,
                    "dispatcher lost; reconnecting",
                    error="the Ray head's port is closed" if head_gone else f"{failures} failed probes",
                )
                self._disconnect()
            if self._reconnect():
                self.reconnects += 1
                failures, delay = 0, self.probe_s
                self.backoff.reset()
                log(logger, logging.INFO, "dispatcher reconnected")
            else:
                delay = self.backoff.next()

    # -- use -----------------------------------------------------------------------------------

    def notify(self, key: str) -> None:
        handle = self._handle
        if handle is None:
            return  # the watchdog is reconnecting; the dispatcher's rescan finds the job
        try:
            handle.notify.remote(key)
        except Exception as exc:
            log(logger, logging.WARNING, "dispatcher notify failed", error=type(exc).__name__)

    def notify_many(self, keys: list[str]) -> None:
        """`notify` for the jobs of a batch: one Ray call."""
        handle = self._handle
        if handle is None:
            return  # the watchdog is reconnecting; the dispatcher's rescan finds the jobs
        try:
            handle.notify_many.remote(keys)
        except Exception as exc:
            log(logger, logging.WARNING, "dispatcher notify failed", error=type(exc).__name__)

    async def call(self, method: str, timeout_s: float = 2.0) -> Any:
        """Call a dispatcher method; DispatcherUnavailable while the watchdog reconnects."""
        handle = self._handle
        if handle is None:
            raise DispatcherUnavailable("the dispatcher is being reconnected")
        ref = getattr(handle, method).remote()
        return await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout_s)
