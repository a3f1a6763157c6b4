"""A store wrapper that counts failed operations in `occlutrace_store_errors_total{op}`."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, TypeVar

from prometheus_client import Counter

from occlutrace_compute.storage.base import DEFAULT_URL_EXPIRY, KeyNotFound, ObjectStore, StoreError

T = TypeVar("T")


class InstrumentedStore(ObjectStore):
    def __init__(self, inner: ObjectStore, errors: Counter) -> None:
        self.inner = inner
        self.errors = errors

    def _call(self, op: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except KeyNotFound:
            raise
        except StoreError:
            self.errors.labels(op=op).inc()
            raise

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._call("put", lambda: self.inner.put(key, data, content_type))

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str = "application/octet-stream") -> None:
        self._call("put", lambda: self.inner.put_stream(key, chunks, content_type))

    def put_empty_many(self, keys: Iterable[str]) -> None:
        self._call("put", lambda: self.inner.put_empty_many(keys))

    def put_transient(self, key: str, data: bytes) -> None:
        self._call("put", lambda: self.inner.put_transient(key, data))

    def put_if_absent(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        return self._call("put", lambda: self.inner.put_if_absent(key, data, content_type))

    def get(self, key: str) -> bytes:
        return self._call("get", lambda: self.inner.get(key))

    def exists(self, key: str) -> bool:
        return self._call("exists", lambda: self.inner.exists(key))

    def size(self, key: str) -> int:
        return self._call("exists", lambda: self.inner.size(key))

    def copy(self, src: str, dst: str) -> None:
        self._call("put", lambda: self.inner.copy(src, dst))

    def purge_versions(self, prefix: str, exact: bool = False) -> tuple[int, list[str]]:
        return self._call("delete", lambda: self.inner.purge_versions(prefix, exact))

    def list(self, prefix: str, start_after: str | None = None, limit: int | None = None) -> list[str]:
        return self._call("list", lambda: self.inner.list(prefix, start_after, limit))

    def delete(self, key: str) -> None:
        self._call("delete", lambda: self.inner.delete(key))

    def delete_prefix(self, prefix: str) -> builtins.list[str]:  # (`list` is a method here)
        return self._call("delete", lambda: self.inner.delete_prefix(prefix))

    def presigned_get(self, key: str, expires: timedelta = DEFAULT_URL_EXPIRY) -> str | None:
        return self._call("presign", lambda: self.inner.presigned_get(key, expires))

    def presigned_put(self, key: str, expires: timedelta = DEFAULT_URL_EXPIRY) -> str | None:
        return self._call("presign", lambda: self.inner.presigned_put(key, expires))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
