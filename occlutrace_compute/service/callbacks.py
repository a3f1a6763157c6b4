"""Job-completion callbacks: POST the final status, HMAC-signed, retried with bounded backoff.

The receiver checks `X-OccluTrace-Signature: sha256=<hex>` = HMAC-SHA256(secret, raw body).
Delivery is best effort (at most `attempts` tries); the job record stays the source of truth,
so a receiver that missed a callback can always poll the job.

A callback URL is a tenant's input that the service itself requests: unless the deployment
allows it, it must not name loopback, private, link-local (cloud metadata) or other non-public
addresses, so that no tenant can reach the cluster's internal services through it (SSRF). It is
checked when the job is created and again before every delivery (the name may resolve elsewhere
by then), and the delivery connects to the very address that passed (the URL's name still goes in
the Host header and as the TLS server name), so a name re-pointed between check and connection
(DNS rebinding) cannot redirect it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import socket
import threading
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpx

from occlutrace_compute.service.logs import log
from occlutrace_compute.service.signing import SIGNATURE_HEADER, sign_body

logger = logging.getLogger("occlutrace.callbacks")

RESOLVE_TIMEOUT_S = 3.0  # getaddrinfo has no timeout of its own


class CallbackRefused(ValueError):
    """A callback URL the service will not request; the message says why."""


class CallbackUnresolved(CallbackRefused):
    """The URL's name did not resolve (in time): refused at job creation, retried at delivery."""


@dataclass(frozen=True)
class CallbackTarget:
    """Where a delivery connects. Direct: `urls` name the checked addresses (tried in order when
    one does not connect), with the URL's own name as Host header and TLS server name. Through
    an egress proxy from the environment: the URL itself, which the proxy resolves."""

    urls: tuple[str, ...]
    host: str | None  # Host header (direct)
    server_name: str | None  # TLS server name (direct https)

    @property
    def proxied(self) -> bool:
        return self.host is None


def callback_url_problem(url: str, allow_private: bool = False) -> str | None:
    """Why `url` may not receive callbacks (None: it may): not http(s), no host, a host that does
    not resolve, or (unless `allow_private`) one resolving to any non-public address. With
    `allow_private` the name is not resolved here (an in-cluster name may resolve only later)."""
    try:
        parts = _parts(url)
        if not allow_private:
            _addresses(parts, allow_private)
    except CallbackRefused as exc:
        return str(exc)
    return None


def callback_target(url: str, allow_private: bool = False) -> CallbackTarget:
    """`url` resolved once and checked (CallbackRefused if it may not be requested), bound to the
    addresses that passed; through an egress proxy the check stands and the proxy connects."""
    parts = _parts(url)
    addresses = _addresses(parts, allow_private)
    if _proxied(parts):
        return CallbackTarget((url,), None, None)
    name = _ascii_host(parts)
    userinfo = parts.netloc.rpartition("@")[0]
    port = f":{parts.port}" if parts.port else ""
    urls = tuple(
        parts._replace(netloc=(f"{userinfo}@" if userinfo else "") + _literal(a) + port).geturl() for a in addresses
    )
    return CallbackTarget(urls, name + port, name.strip("[]") if parts.scheme == "https" else None)


def _parts(url: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port
    except ValueError as exc:
        raise CallbackRefused(f"not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise CallbackRefused("must be an http(s) URL with a host")
    return parts


def _ascii_host(parts: SplitResult) -> str:
    """The host as it goes on the wire: an address literal, or the name in IDNA (punycode)."""
    host = _hostname(parts)
    try:
        return _literal(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise CallbackRefused(f"host {host!r} is not a valid host name") from exc


def _hostname(parts: SplitResult) -> str:
    if not parts.hostname:
        raise CallbackRefused("the callback URL has no host")
    return parts.hostname


def _literal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"[{address}]" if address.version == 6 else str(address)


def _proxied(parts: SplitResult) -> bool:
    """Whether httpx would send this URL through a proxy from the environment (HTTP(S)_PROXY,
    ALL_PROXY, NO_PROXY): then the proxy resolves the name, and pinning would break its CONNECT."""
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass_environment(  # type: ignore[attr-defined]  # (public, not in typeshed)
        _hostname(parts), proxies
    )


def _addresses(parts: SplitResult, allow_private: bool) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses the name resolves to, all of them public (unless `allow_private`): no
    round-robin answer may lead inside."""
    host = _hostname(parts)
    infos = _resolve(host, parts.port or (443 if parts.scheme == "https" else 80))
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
    for address in addresses:
        if not allow_private and not is_public(address):
            raise CallbackRefused(
                f"host {host!r} resolves to a non-public address ({address}); callbacks go to public receivers only"
            )
    return addresses


_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries, whatever the translation that would reach them:
    IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96 and the local-use
    64:ff9b:1::/48, RFC 6052/8215, last 32 bits), 6to4 (2002:AABB:CCDD::/48) and Teredo (server,
    and the client address obfuscated in the last 32 bits)."""
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # :: and ::1 are not IPv4
        found.append(low32)
    if any(address in net for net in _NAT64):
        found.append(low32)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Public itself and, for IPv6, in every IPv4 address it embeds (a NAT64 or 6to4 gateway
    would otherwise carry a callback to 10.0.0.1 or 169.254.169.254)."""
    if not address.is_global:
        return False
    return address.version == 4 or all(v4.is_global for v4 in embedded_ipv4(address))


def _resolve(host: str, port: int) -> list:
    """getaddrinfo bounded by RESOLVE_TIMEOUT_S: each lookup on its own daemon thread, so a
    resolver that never answers one tenant's name holds up no other lookup and no shutdown."""
    found: dict = {}

    def lookup() -> None:
        try:
            found["infos"] = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError) as exc:
            found["error"] = exc

    thread = threading.Thread(target=lookup, name="callback-dns", daemon=True)
    thread.start()
    thread.join(RESOLVE_TIMEOUT_S)
    if thread.is_alive():
        raise CallbackUnresolved(f"host {host!r} did not resolve within {RESOLVE_TIMEOUT_S:g} s")
    if "infos" not in found or not found["infos"]:
        raise CallbackUnresolved(f"host {host!r} does not resolve")
    return found["infos"]


class CallbackPool:
    """Callback deliveries, at most `per_tenant` at a time for each tenant, each tenant's queue in
    order. A tenant whose receiver never answers ties up its own `per_tenant` threads only, never
    another tenant's deliveries. Threads are made on demand and end when their tenant's queue is
    empty: at most (tenants with pending callbacks) x `per_tenant` threads."""

    def __init__(self, per_tenant: int = 2) -> None:
        if per_tenant < 1:
            raise ValueError(f"callback concurrency per tenant must be >= 1, got {per_tenant}")
        self.per_tenant = per_tenant
        self._queues: dict[str, deque[tuple[Callable[..., Any], tuple, dict]]] = {}
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()

    def submit(self, tenant: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self._queues.setdefault(tenant, deque()).append((fn, args, kwargs))
            if self._running.get(tenant, 0) >= self.per_tenant:
                return
            self._running[tenant] = self._running.get(tenant, 0) + 1
        threading.Thread(target=self._drain, args=(tenant,), name=f"callback-{tenant}", daemon=True).start()

    def _drain(self, tenant: str) -> None:
        while True:  # ends when the tenant's queue is empty; each item is one bounded delivery
            with self._lock:
                jobs = self._queues.get(tenant)
                if not jobs:
                    self._queues.pop(tenant, None)
                    self._running[tenant] -= 1
                    if not self._running[tenant]:
                        del self._running[tenant]
                    return
                fn, args, kwargs = jobs.popleft()
            try:
                fn(*args, **kwargs)
            except Exception as exc:  # deliver never raises; anything else must not kill the drain
                log(logger, logging.ERROR, "callback task failed", error=type(exc).__name__)

    def pending(self, tenant: str) -> int:
        with self._lock:
            return len(self._queues.get(tenant, ()))


def deliver(
    url: str,
    status: dict,
    secret: str | None,
    attempts: int = 5,
    backoff_s: float = 0.5,
    stop: threading.Event | None = None,
    allow_private: bool = False,
) -> bool:
    """POST `status` to `url`; True once a 2xx came back. Never raises. The URL is checked (and
    resolved) again before every attempt; a refused one is not tried again."""
    body = json.dumps(status, sort_keys=True).encode()
    headers = {"Content-Type": "application/json"}
    if secret:
        headers[SIGNATURE_HEADER] = sign_body(secret, body)
    waiter = stop or threading.Event()
    for attempt in range(1, attempts + 1):
        try:
            problem = _post(callback_target(url, allow_private), body, headers)
        except CallbackUnresolved as exc:
            problem = str(exc)  # perhaps only for now
        except CallbackRefused as exc:
            log(logger, logging.WARNING, "callback refused", job_id=status.get("job_id"), error=str(exc))
            return False
        if problem is None:
            return True
        if attempt < attempts:
            delay = backoff_s * 2 ** (attempt - 1) * (0.5 + random.random() / 2)
            if waiter.wait(min(delay, 30.0)):
                break
        log(
            logger,
            logging.WARNING,
            "callback attempt failed",
            job_id=status.get("job_id"),
            attempts=attempt,
            error=problem,
        )
    return False


def _post(target: CallbackTarget, body: bytes, headers: dict[str, str]) -> str | None:
    """One attempt: None once a 2xx came back, else what went wrong. An address that does not
    connect passes the attempt on to the next one."""
    extensions = {"sni_hostname": target.server_name} if target.server_name else None
    if target.host:
        headers = {**headers, "Host": target.host}
    problem = "no address"
    # Direct: an explicit transport keeps the environment's proxies out (its CA settings stay).
    transport = None if target.proxied else httpx.HTTPTransport()
    with httpx.Client(timeout=5.0, transport=transport) as client:
        for url in target.urls:
            try:
                response = client.post(url, content=body, headers=headers, extensions=extensions)
            except httpx.ConnectError as exc:
                problem = type(exc).__name__
                continue
            except (httpx.HTTPError, ValueError) as exc:
                return type(exc).__name__
            return None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
    return problem
