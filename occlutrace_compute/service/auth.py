"""Bearer tokens -> tenants, and per-tenant token-bucket rate limits.

The tokens file holds one `<tenant> <token>` per line (`#` comments); a token written as
`sha256:<hex>` is stored hashed so the file need hold no secret. The file is re-read when its
mtime or size changes, so tokens rotate without a restart. Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
import time
from dataclasses import dataclass

from occlutrace_compute.service.logs import log

logger = logging.getLogger("occlutrace.auth")
TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class TokensFileError(ValueError):
    """The tokens file is malformed; names the line."""


@dataclass(frozen=True)
class _Entry:
    tenant: str
    digest: bytes  # sha256 of the token


def parse_tokens(text: str, source: str = "tokens file") -> list[_Entry]:
    entries: list[_Entry] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise TokensFileError(f"{source}:{lineno}: expected '<tenant> <token>'")
        tenant, token = parts
        if not TENANT_RE.match(tenant):
            raise TokensFileError(f"{source}:{lineno}: tenant must match {TENANT_RE.pattern}")
        if token.startswith("sha256:"):
            hexdigest = token[len("sha256:"):]
            if not re.fullmatch(r"[0-9a-fA-F]{64}", hexdigest):
                raise TokensFileError(f"{source}:{lineno}: sha256: needs 64 hex digits")
            digest = bytes.fromhex(hexdigest)
        else:
            digest = hashlib.sha256(token.encode()).digest()
        entries.append(_Entry(tenant, digest))
    return entries


class TokenRegistry:
    """Looks tokens up in the tokens file, re-reading it when it changes."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._entries: list[_Entry] = []
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        if not self.path:
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._entries, self._stamp = [], None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            with open(self.path, encoding="utf-8") as fh:
                entries = parse_tokens(fh.read(), os.path.basename(self.path))
        except (OSError, UnicodeDecodeError, TokensFileError) as exc:
            # keep serving with the last good tokens; the message names a line, never a token
            log(logger, logging.ERROR, "tokens file not reloaded", error=str(exc)[:200])
            self._stamp = stamp
            return
        self._entries, self._stamp = entries, stamp

    def tenant_for(self, token: str) -> str | None:
        """The token's tenant, or None. Every entry is compared, so timing reveals nothing."""
        with self._lock:
            self._refresh()
            entries = self._entries
        digest = hashlib.sha256(token.encode()).digest()
        found: str | None = None
        for entry in entries:
            if hmac.compare_digest(entry.digest, digest) and found is None:
                found = entry.tenant
        return found


class RateLimiter:
    """A token bucket per tenant: `rate` requests/s sustained, bursts up to `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, tenant: str) -> float:
        """0.0 when allowed, else the seconds to wait before a token is available."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(tenant, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[tenant] = (tokens - 1.0, now)
                return 0.0
            self._buckets[tenant] = (tokens, now)
            return (1.0 - tokens) / self.rate if self.rate > 0 else 60.0
