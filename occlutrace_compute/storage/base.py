"""The object store interface: keys and bytes, nothing about jobs or meshes.

Keys are '/'-separated relative paths (`tenants/<tenant>/cases/<case>/...`), checked by
`keys.check_key`. A prefix names a folder: `list("a/b")` and `list("a/b/")` are the same and
never include `a/bc/...`, so a purge of one case can never touch a case whose id merely starts
the same way. Implementations: a local folder (the embedded default) and S3 through `minio`.
"""

from __future__ import annotations

import abc
import builtins
import json
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any


class StoreError(RuntimeError):
    """The store failed (after retries); the operation may be retried later."""


class StoreUnavailable(StoreError):
    """The store could not be reached (network, 5xx): transient, callers answer 503."""


class KeyNotFound(StoreError, KeyError):
    """No object under that key."""


DEFAULT_URL_EXPIRY = timedelta(minutes=15)


class ObjectStore(abc.ABC):
    """put/get/exists/list (paginated)/delete-prefix/presigned URLs/atomic JSON."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write the whole object; readers never see a partial object."""

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str = "application/octet-stream") -> None:
        """Write an object from chunks; if the iterator raises, nothing is written.

        The default joins the chunks (S3 retries need the whole body); a local folder streams.
        """
        self.put(key, b"".join(chunks), content_type)

    def put_transient(self, key: str, data: bytes) -> None:
        """Write a small hint that must be visible to every reader at once and survive the
        writing process dying, but may be lost with the machine (no fsync where the store has a
        choice; S3's every PUT is durable anyway). Readers still never see a partial object
        while the machine is up; after a power loss the object may be missing, old, or empty:
        a reader must accept each. Default: `put`."""
        self.put(key, data)

    def put_empty_many(self, keys: Iterable[str]) -> None:
        """`put(key, b"")` for every key (index and batch entries: empty objects whose name is the
        information), each durable when this returns. Default: one put after another; a local
        folder makes them all and then syncs each distinct folder once."""
        for key in keys:
            self.put(key, b"")

    @abc.abstractmethod
    def put_if_absent(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        """Write the object only where none has this key, atomically for every client of the
        store (the compare-and-set that makes one of two simultaneous writers win); False when
        one exists, which is then left as it was."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; raises KeyNotFound."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int:
        """The object's size in bytes without reading it (a stat, an S3 HEAD); raises KeyNotFound.
        Callers with a size limit ask this before `get`, so an oversized object never reaches memory."""
        return len(self.get(key))  # a fallback for minimal stores; both real stores override it

    def copy(self, src: str, dst: str) -> None:
        """`dst` becomes an independent copy of `src` (later writes to `src` do not change it);
        raises KeyNotFound. Server-side where the store can (S3 CopyObject, a hard link)."""
        self.put(dst, self.get(src))

    def purge_versions(self, prefix: str, exact: bool = False) -> tuple[int, list[str]]:
        """Remove the noncurrent versions (and delete markers) of every key under `prefix` (`exact`:
        of that one key) where the store keeps versions: (versions removed, "key: why" for each one that could not be).
        A store without versions has nothing to do."""
        return 0, []

    @abc.abstractmethod
    def list(self, prefix: str, start_after: str | None = None, limit: int | None = None) -> list[str]:
        """Keys under `prefix` (recursive), sorted by their UTF-8 bytes (S3's order).

        `start_after`: only keys greater than it (need not exist; S3's `StartAfter`);
        `limit`: at most that many (S3's `MaxKeys`), the first in order. With a limit the cost
        is O(limit) plus the cost of finding `start_after` (one request on S3; on a local
        folder, reading the folders along its path), never O(keys under `prefix`): page
        through a big prefix with `iter_keys`.
        """

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete one object; deleting a missing key is not an error (idempotent)."""

    @abc.abstractmethod
    def delete_prefix(self, prefix: str) -> builtins.list[str]:  # (`list` is a method here)
        """Delete every object under `prefix`; returns the keys removed."""

    @abc.abstractmethod
    def presigned_get(self, key: str, expires: timedelta = DEFAULT_URL_EXPIRY) -> str | None:
        """A time-limited download URL, or None where the store has none (local folder)."""

    @abc.abstractmethod
    def presigned_put(self, key: str, expires: timedelta = DEFAULT_URL_EXPIRY) -> str | None:
        """A time-limited upload URL, or None where the store has none (local folder)."""

    def iter_keys(self, prefix: str, start_after: str | None = None, page: int = 1000) -> Iterator[str]:
        """Every key under `prefix` after `start_after`, in order, fetched `page` keys at a time:
        memory O(page) however many keys there are, and the caller can stop early."""
        if page < 1:
            raise ValueError(f"iter_keys page must be >= 1, got {page}")
        while True:  # each trip lists keys strictly after the last one: ends when a page is short
            keys = self.list(prefix, start_after=start_after, limit=page)
            yield from keys
            if len(keys) < page:
                return
            start_after = keys[-1]

    def put_json(self, key: str, obj: Any) -> None:
        """Atomic JSON write (put is atomic in every implementation)."""
        self.put(key, json.dumps(obj, indent=2, sort_keys=True).encode(), "application/json")

    def put_json_if_absent(self, key: str, obj: Any) -> bool:
        return self.put_if_absent(key, json.dumps(obj, indent=2, sort_keys=True).encode(), "application/json")

    def get_json(self, key: str) -> Any:
        return json.loads(self.get(key))
