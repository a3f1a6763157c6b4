"""Object storage: keys and bytes under `tenants/<tenant>/cases/<case>/...` (see keys.py)."""

from occlutrace_compute.storage.base import (
    DEFAULT_URL_EXPIRY,
    KeyNotFound,
    ObjectStore,
    StoreError,
    StoreUnavailable,
)
from occlutrace_compute.storage.config import open_store
from occlutrace_compute.storage.keys import case_prefix, purge_case
from occlutrace_compute.storage.local import LocalStore
from occlutrace_compute.storage.retry import RetryPolicy
from occlutrace_compute.storage.s3 import S3Store

__all__ = [
    "DEFAULT_URL_EXPIRY",
    "KeyNotFound",
    "LocalStore",
    "ObjectStore",
    "RetryPolicy",
    "S3Store",
    "StoreError",
    "StoreUnavailable",
    "case_prefix",
    "open_store",
    "purge_case",
]
