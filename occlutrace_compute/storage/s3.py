"""S3 (MinIO, AWS, any S3 API) as object store, through the `minio` SDK.

An S3 PUT is atomic (objects up to 5 GiB go up as one PUT, never multipart), so readers never see
a partial object. Transient failures are retried by `RetryPolicy`, then raised as
`StoreUnavailable`; other S3 errors become `StoreError`. The bucket is created on first use.
Credentials live only inside the minio client: never in repr(), messages or pickles.
"""

from __future__ import annotations

import builtins
import io
import itertools
import os
import random
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TypeVar
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError

from occlutrace_compute.storage.base import DEFAULT_URL_EXPIRY, KeyNotFound, ObjectStore, StoreError, StoreUnavailable
from occlutrace_compute.storage.keys import check_key, folder_prefix
from occlutrace_compute.storage.retry import RetryPolicy, describe

T = TypeVar("T")

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_MISSING_OBJECT = {"NoSuchKey", "NotFound", "NoSuchObject"}
_CONFLICT_ASKS = 5  # 409s in a row before a conditional put gives up
_MIN_PART = 5 * 1024**2
_MAX_SINGLE_PUT = 5 * 1024**3
_MAX_EXPIRY = timedelta(days=7)


def parse_endpoint(endpoint: str, secure: bool | None = None) -> tuple[str, bool]:
    """`http(s)://host[:port]` (or bare `host[:port]`, https) -> (host[:port], secure)."""
    parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    if parts.scheme not in ("", "http", "https") or not parts.netloc:
        raise ValueError(f"S3 endpoint {endpoint!r}: expected http(s)://host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.username or parts.password:
        raise ValueError(f"S3 endpoint {endpoint!r}: no path, query or credentials allowed")
    if secure is None:
        secure = parts.scheme != "http"
    return parts.netloc, secure


def _http_pool(retry: RetryPolicy) -> urllib3.PoolManager:
    """Short timeouts; one immediate retry of a refused connect only: RetryPolicy does the rest."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=retry.connect_timeout_s, read=retry.read_timeout_s),
        maxsize=10,
        retries=urllib3.Retry(total=1, connect=1, read=0, status=0, other=0, redirect=False),
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )


class S3Store(ObjectStore):
    """Objects under `prefix` in `bucket`; `public_endpoint` is the host presigned URLs name.

    In a cluster the store is reached as e.g. http://minio:9000 while a browser needs a public
    host; a presigned URL is signed for its host, so it is signed with `public_endpoint` (region
    `region` or us-east-1, MinIO's default) when one is given.
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        prefix: str = "",
        secure: bool | None = None,
        region: str | None = None,
        public_endpoint: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ValueError(f"S3 bucket {bucket!r}: 3-63 of a-z 0-9 . - (S3 bucket naming rules)")
        if not access_key or not secret_key:
            raise ValueError("S3 store: access key and secret key are both required")
        host, secure = parse_endpoint(endpoint, secure)
        self.endpoint = f"{'https' if secure else 'http'}://{host}"
        self.bucket = bucket
        self.prefix = folder_prefix(prefix)
        self.region = region or None
        self.retry = retry or RetryPolicy()
        pool = _http_pool(self.retry)
        self._client = Minio(host, access_key, secret_key, secure=secure, region=self.region, http_client=pool)
        self._presigner = self._client
        if public_endpoint:
            pub_host, pub_secure = parse_endpoint(public_endpoint)
            self._presigner = Minio(
                pub_host,
                access_key,
                secret_key,
                secure=pub_secure,
                region=self.region or "us-east-1",
                http_client=pool,
            )
        self._bucket_ready = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Store(endpoint={self.endpoint!r}, bucket={self.bucket!r}, prefix={self.prefix!r})"

    def __getstate__(self) -> None:
        raise TypeError("an S3Store holds credentials and is not pickled: call open_store() in each process")

    # -- plumbing ---------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with self._lock:
            if self._bucket_ready:
                return
            if not self._client.bucket_exists(self.bucket):
                try:
                    self._client.make_bucket(self.bucket, location=self.region)
                except S3Error as exc:
                    if exc.code != "BucketAlreadyOwnedByYou":
                        raise
            self._bucket_ready = True

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one S3 operation under the retry policy; map SDK errors to store errors."""

        def attempt() -> T:
            self._ensure_bucket()
            try:
                return fn()
            except S3Error as exc:
                if exc.code != "NoSuchBucket":
                    raise
                self._bucket_ready = False  # deleted under us (or a restarted in-memory server)
                self._ensure_bucket()
                return fn()

        try:
            return self.retry.call(attempt, what, f"{self.endpoint}/{self.bucket}")
        except (S3Error, ServerError, InvalidResponseError) as exc:
            raise StoreError(f"{what}: object store {self.endpoint}/{self.bucket}: {describe(exc)}") from exc

    # -- the interface ----------------------------------------------------------------------

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        name = self._name(key)
        data = bytes(data)
        part_size = max(len(data), _MIN_PART) if len(data) <= _MAX_SINGLE_PUT else 0
        self._call(
            f"put {key!r}",
            lambda: self._client.put_object(
                self.bucket, name, io.BytesIO(data), len(data), content_type, part_size=part_size
            ),
        )

    def put_if_absent(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        """PutObject with `If-None-Match: *` (S3 conditional writes: AWS S3 and MinIO since 2024).
        minio-py's put_object takes no request headers, so this calls its PutObject request
        itself. A 409 (another conditional write of the key in flight) is asked again, as S3
        advises; a retry after a lost reply may find our own object and answer False (callers
        that read the object back then see their own content)."""
        name = self._name(key)
        data = bytes(data)
        if len(data) > _MAX_SINGLE_PUT:
            raise ValueError(f"conditional puts are single requests of at most {_MAX_SINGLE_PUT} bytes")
        headers: dict[str, str | list[str] | tuple[str]] = {"Content-Type": content_type, "If-None-Match": "*"}

        def create() -> bool:
            for ask in range(_CONFLICT_ASKS):
                try:
                    self._client._put_object(self.bucket, name, data, headers=headers)
                    return True
                except S3Error as exc:
                    if exc.code == "PreconditionFailed":
                        return False
                    if exc.code != "ConditionalRequestConflict":
                        raise
                time.sleep(0.05 * 2**ask * (0.5 + random.random()))
            raise StoreUnavailable(f"put {key!r}: {_CONFLICT_ASKS} conditional writes in a row met a concurrent one")

        return self._call(f"put {key!r}", create)

    def get(self, key: str) -> bytes:
        name = self._name(key)

        def fetch() -> bytes:
            try:
                response = self._client.get_object(self.bucket, name)
            except S3Error as exc:
                if exc.code in _MISSING_OBJECT:
                    raise KeyNotFound(key) from None
                raise
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._call(f"get {key!r}", fetch)

    def exists(self, key: str) -> bool:
        name = self._name(key)

        def stat() -> bool:
            try:
                self._client.stat_object(self.bucket, name)
            except S3Error as exc:
                if exc.code in _MISSING_OBJECT:
                    return False
                raise
            return True

        return self._call(f"exists {key!r}", stat)

    def size(self, key: str) -> int:
        """One HEAD: the size before any byte is read."""
        name = self._name(key)

        def stat() -> int:
            try:
                size = self._client.stat_object(self.bucket, name).size
                if size is None:
                    raise StoreError(f"no size in the HEAD answer for {key!r}")
                return int(size)
            except S3Error as exc:
                if exc.code in _MISSING_OBJECT:
                    raise KeyNotFound(key) from None
                raise

        return self._call(f"size {key!r}", stat)

    def copy(self, src: str, dst: str) -> None:
        """Server-side CopyObject: no byte passes through this process."""
        source, name = self._name(src), self._name(dst)

        def copy() -> None:
            try:
                self._client.copy_object(self.bucket, name, CopySource(self.bucket, source))
            except S3Error as exc:
                if exc.code in _MISSING_OBJECT:
                    raise KeyNotFound(src) from None
                raise

        self._call(f"copy {src!r}", copy)

    def purge_versions(self, prefix: str, exact: bool = False) -> tuple[int, list[str]]:
        """Where the bucket is (or was) versioned: delete every remaining version and delete
        marker under `prefix` (`exact`: of that one key). Versions the bucket refuses to delete
        (object lock, missing s3:DeleteObjectVersion permission) are reported, never hidden."""
        full = self.prefix + (check_key(prefix) if exact else folder_prefix(prefix))
        status = self._call("versioning", lambda: self._client.get_bucket_versioning(self.bucket).status)
        if status not in ("Enabled", "Suspended"):
            return 0, []
        versions = self._call(
            f"list versions {prefix!r}",
            lambda: [
                (o.object_name, o.version_id)
                for o in self._client.list_objects(
                    self.bucket, prefix=full or None, recursive=True, include_version=True
                )
            ],
        )
        versions = [(n, v) for n, v in versions if n and not n.endswith("/") and (not exact or n == full)]
        if not versions:
            return 0, []
        errors = self._call(
            f"delete versions {prefix!r}",
            lambda: list(self._client.remove_objects(self.bucket, [DeleteObject(n, v) for n, v in versions])),
        )
        failed = [f"{(e.name or '')[len(self.prefix) :]}: {e.code}" for e in errors]
        return len(versions) - len(failed), failed

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str = "application/octet-stream") -> None:
        """Chunks spooled to a temp file (memory stays flat for a 200 MB upload), then one PUT
        from it: a retry reads the file again from the start."""
        name = self._name(key)
        with tempfile.TemporaryFile() as spool:
            for chunk in chunks:
                spool.write(chunk)
            size = spool.tell()
            if size > _MAX_SINGLE_PUT:
                raise ValueError(f"put {key!r}: {size} bytes is over the single-PUT limit of {_MAX_SINGLE_PUT}")

            def put() -> None:
                spool.seek(0)
                self._client.put_object(self.bucket, name, spool, size, content_type, part_size=max(size, _MIN_PART))

            self._call(f"put {key!r}", put)

    def list(self, prefix: str, start_after: str | None = None, limit: int | None = None) -> list[str]:
        """ListObjectsV2 with `StartAfter` and `MaxKeys`: a page of up to 1000 keys is one request.
        A whole-prefix listing (no limit) follows continuation tokens, 1000 keys a request."""
        if limit is not None and limit < 1:
            raise ValueError(f"list limit must be >= 1, got {limit}")
        full = self.prefix + folder_prefix(prefix)
        after = self.prefix + start_after if start_after else None

        def fetch() -> list[str]:
            names = self._client._list_objects(  # the public list_objects takes no MaxKeys
                self.bucket,
                prefix=full or None,
                start_after=after,
                encoding_type="url",
                max_keys=min(limit, 1000) if limit else None,
            )
            # Names ending in '/' are folder markers made by consoles, not objects.
            objects = (n[len(self.prefix) :] for n in (o.object_name for o in names) if n and not n.endswith("/"))
            return list(objects if limit is None else itertools.islice(objects, limit))

        keys = self._call(f"list {prefix!r}", fetch)
        return keys if limit is not None else sorted(keys)

    def delete(self, key: str) -> None:
        name = self._name(key)
        self._call(f"delete {key!r}", lambda: self._client.remove_object(self.bucket, name))

    def delete_prefix(self, prefix: str) -> builtins.list[str]:  # (`list` is a method here)
        """One listing, then multi-object deletes; objects written after the listing survive."""
        keys = self.list(prefix)
        if not keys:
            return []
        errors = self._call(
            f"delete prefix {prefix!r}",
            lambda: list(self._client.remove_objects(self.bucket, [DeleteObject(self.prefix + key) for key in keys])),
        )
        if errors:
            first = errors[0]
            raise StoreError(
                f"delete prefix {prefix!r}: {len(errors)} of {len(keys)} objects not deleted,"
                f" e.g. {first.name!r}: {first.code} {first.message or ''}".rstrip()
            )
        return keys

    def presigned_get(self, key: str, expires: timedelta = DEFAULT_URL_EXPIRY) -> str:
        name = self._name(key)
        _check_expiry(expires)
        return self._call(
            f"presign GET {key!r}",
            lambda: self._presigner.presigned_get_object(self.bucket, name, expires=expires),
        )

    def presigned_put(self, key: str, expires: timedelta = DEFAULT_URL_EXPIRY) -> str:
        name = self._name(key)
        _check_expiry(expires)
        return self._call(
            f"presign PUT {key!r}",
            lambda: self._presigner.presigned_put_object(self.bucket, name, expires=expires),
        )


def _check_expiry(expires: timedelta) -> None:
    if not timedelta(seconds=1) <= expires <= _MAX_EXPIRY:
        raise ValueError(f"presigned URL expiry {expires} must be between 1 second and 7 days")
