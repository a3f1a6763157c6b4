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
TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")


MIN_TOKEN_CHARS = 16  # a plain token shorter than this could be guessed; hashed entries are exempt


class TokensFileError(ValueError):
    """The tokens file is malformed; names the line."""


@dataclass(frozen=True)
class _Entry:
    tenant: str
    digest: bytes  # sha256 of the token


@dataclass
class ParsedTokens:
    """What a tokens file proves. `entries` are the tokens in force; a tenant named on a bad line
    (malformed, too-short token, bad hash) loses every token (the file no longer proves which of
    its tokens are meant); a line whose tenant cannot even be read refuses every tenant
    (`refuse_all`); a token listed for two tenants is loaded for neither. `problems` name lines,
    never tokens."""

    entries: list[_Entry]
    refused: set[str]
    refuse_all: bool
    problems: list[str]


def parse_tokens(text: str, source: str = "tokens file") -> ParsedTokens:
    """Parse a tokens file, failing closed (see ParsedTokens); never raises for a bad line."""
    entries: list[tuple[int, _Entry]] = []
    refused: set[str] = set()
    refuse_all = False
    problems: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        tenant = parts[0]
        if not TENANT_RE.match(tenant):
            refuse_all = True
            problems.append(f"{source}:{lineno}: tenant must match {TENANT_RE.pattern}: every tenant refused")
            continue
        if len(parts) != 2:
            refused.add(tenant)
            problems.append(f"{source}:{lineno}: expected '<tenant> <token>': tenant {tenant} refused")
            continue
        token = parts[1]
        if token.startswith("sha256:"):
            hexdigest = token[len("sha256:") :]
            if not re.fullmatch(r"[0-9a-fA-F]{64}", hexdigest):
                refused.add(tenant)
                problems.append(f"{source}:{lineno}: sha256: needs 64 hex digits: tenant {tenant} refused")
                continue
            digest = bytes.fromhex(hexdigest)
        elif len(token) < MIN_TOKEN_CHARS:
            refused.add(tenant)
            problems.append(
                f"{source}:{lineno}: token shorter than {MIN_TOKEN_CHARS} characters: tenant {tenant} refused"
            )
            continue
        else:
            digest = hashlib.sha256(token.encode()).digest()
        entries.append((lineno, _Entry(tenant, digest)))
    owners: dict[bytes, set[str]] = {}
    for _, entry in entries:
        owners.setdefault(entry.digest, set()).add(entry.tenant)
    shared = {digest for digest, tenants in owners.items() if len(tenants) > 1}
    for lineno, entry in entries:
        if entry.digest in shared:
            problems.append(f"{source}:{lineno}: the same token is listed for several tenants: not loaded")
    kept = [e for _, e in entries if e.digest not in shared and e.tenant not in refused and not refuse_all]
    return ParsedTokens(kept, refused, refuse_all, problems)


class TokenRegistry:
    """Looks tokens up in the tokens file, re-reading it when it changes.

    Fails closed: the file as it is now is the only authority. An unreadable file refuses every
    token; a malformed one keeps only what it still proves (see ParsedTokens). Never the last good
    tokens: a token revoked in the same edit as a typo must stop working."""

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
        self._stamp = stamp
        try:
            with open(self.path, encoding="utf-8") as fh:
                parsed = parse_tokens(fh.read(), os.path.basename(self.path))
        except (OSError, UnicodeDecodeError) as exc:
            self._entries = []
            log(logger, logging.ERROR, "tokens file unreadable: every token refused", error=type(exc).__name__)
            return
        for problem in parsed.problems:  # names a line, never a token
            log(logger, logging.ERROR, "tokens file problem", error=problem[:200])
        self._entries = parsed.entries

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


class FailedAuthLimiter:
    """Failed authentication per client address: a bucket of `burst` failures refilled at `rate`
    per second. While an address has none left, every request from it answers 429 (a right guess
    included: otherwise the 429s would only slow the guessing down, not stop it). Addresses are
    forgotten once their bucket is full again, so the table holds only recent offenders (bounded
    further by `max_addresses`, oldest first)."""

    def __init__(self, rate: float, burst: int, max_addresses: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_addresses = max_addresses
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def _level(self, address: str, now: float) -> float:
        tokens, last = self._buckets.get(address, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - last) * self.rate)

    def blocked(self, address: str) -> float:
        """0.0 when the address may try, else the seconds until it may."""
        now = time.monotonic()
        with self._lock:
            if address not in self._buckets:
                return 0.0
            level = self._level(address, now)
            if level >= float(self.burst):
                del self._buckets[address]
            if level >= 1.0:
                return 0.0
            return (1.0 - level) / self.rate if self.rate > 0 else 60.0

    def failed(self, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            level = self._level(address, now)
            self._buckets.pop(address, None)
            self._buckets[address] = (max(level - 1.0, 0.0), now)
            while len(self._buckets) > self.max_addresses:
                del self._buckets[next(iter(self._buckets))]
