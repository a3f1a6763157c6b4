"""Service configuration: `OCCLUTRACE_*` environment variables, each overridable by a flag.

A plain dataclass (no settings framework): every field has an env name and a default, and
`*_FILE` variants read secrets from files so that they never sit in the process environment.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields
from typing import Any

from occlutrace_compute.storage.base import ObjectStore
from occlutrace_compute.storage.config import default_store_url, open_store

ENV_PREFIX = "OCCLUTRACE_"
SECRET_FIELDS = frozenset({"s3_access_key", "s3_secret_key", "url_secret", "callback_secret"})


def _read_secret(name: str) -> str | None:
    """`NAME_FILE` (a path) wins over `NAME`; surrounding whitespace is dropped."""
    path = os.environ.get(f"{ENV_PREFIX}{name}_FILE")
    if path:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    return os.environ.get(f"{ENV_PREFIX}{name}")


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the controller, dispatcher and workers need to know."""

    store: str | None = None  # None: storage.open_store's default (OCCLUTRACE_STORE or ~/.local/share)
    s3_endpoint: str | None = None
    s3_access_key: str | None = field(default=None, repr=False)
    s3_secret_key: str | None = field(default=None, repr=False)
    s3_region: str | None = None
    s3_public_endpoint: str | None = None
    ray_address: str | None = None
    ray_namespace: str = "occlutrace"
    tokens_file: str | None = None
    # signing keys: share them between controller replicas (random per process by default)
    url_secret: str = field(default_factory=lambda: secrets.token_hex(32), repr=False)
    callback_secret: str | None = field(default=None, repr=False)
    privacy_allow: str = ""  # comma-separated regexes: a lab's own label scheme, accepted as-is
    url_expiry_s: int = 900
    max_upload_bytes: int = 200_000_000
    max_json_bytes: int = 1_000_000
    rate_per_s: float = 20.0
    rate_burst: int = 200
    # failed authentication per client address: `auth_fail_burst` failures, then one per
    # 1/`auth_fail_per_s` seconds; over that every request from the address answers 429
    auth_fail_per_s: float = 0.5
    auth_fail_burst: int = 30
    # uncommitted uploads (staging) are deleted this long after their grant was made
    staging_ttl_s: int = 3600
    staging_sweep_s: float = 60.0  # how often a controller looks for expired staging (0: never)
    # dispatcher / workers
    job_fn: str = "occlutrace_compute.jobs.runner:run_job"
    batch_size: int = 4
    max_attempts: int = 3
    cpu_workers: int = 1  # CPU mode (no GPU in the cluster): workers kept even when idle
    min_workers: int = 1  # GPU mode: workers kept even when idle (one warm GPU)
    max_workers: int = 8  # upper bound on workers, and on the resources asked of the autoscaler
    worker_cpus: float = 1.0
    worker_idle_s: float = 120.0  # a worker above the floor idle this long is let go (node can go)
    rescan_s: float = 10.0
    # device worker (issue 16, service/device_worker.py): CPU workers prepare and finish pair
    # jobs, one device actor registers and measures batches of pairs across jobs, sized by points
    # "off" (default: AlignWorkers, one per GPU in GPU mode), "auto" (on once the cluster shows a GPU),
    # "on" (also without a GPU: the device actor on CPU). Not on by default until it has run on a GPU
    # and drives one actor per GPU (bench/RESULTS.md, "Issue 16 item 3")
    device_worker: str = "off"
    device_points_budget: int = 0  # points per device batch; 0: from the device's free memory (CPU: 2M)
    device_memory_fraction: float = 0.5  # share of the device's free memory a batch may fill
    device_bytes_per_point: float = 4096.0  # starting estimate; re-measured from each CUDA batch's peak
    device_max_wait_s: float = 0.05  # a pair waits at most this long for batch-mates
    device_max_pending: int = 256  # pairs waiting at the device actor at once (one thread each)
    device_actor_cpus: float = 1.0  # the host core that drives the device
    device_timeout_s: float = 600.0  # a pair with no answer from the device by then fails its attempt
    callback_attempts: int = 5
    callback_concurrency: int = 2  # deliveries in flight per tenant (one tenant cannot hold up another's)
    callback_backoff_s: float = 0.5
    # callbacks to loopback/private/link-local addresses (a receiver inside the cluster's own
    # network); off: a tenant's callback_url must not reach internal services
    callback_allow_private: bool = False

    def __post_init__(self) -> None:
        if self.device_worker not in ("off", "auto", "on"):  # at start, not in the dispatcher's loop
            raise ValueError(f"OCCLUTRACE_DEVICE_WORKER must be 'off', 'auto' or 'on', not {self.device_worker!r}")

    @classmethod
    def from_env(cls, **overrides: Any) -> ServiceConfig:
        """Defaults < environment < explicit overrides (flags); None overrides are ignored."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            env_name = f.name.upper()
            raw = _read_secret(env_name) if f.name in SECRET_FIELDS else os.environ.get(ENV_PREFIX + env_name)
            if raw is not None and raw != "":
                values[f.name] = _coerce(f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        values.setdefault("store", default_store_url())
        return cls(**values)

    @property
    def allow_patterns(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.privacy_allow.split(",") if p.strip())

    def open_store(self) -> ObjectStore:
        return open_store(self.store, **self.store_kwargs())

    def store_kwargs(self) -> dict[str, Any]:
        """Arguments for `storage.open_store` (picklable: workers rebuild their own store)."""
        kwargs: dict[str, Any] = {}
        if not (self.store or "").startswith("s3://"):
            return kwargs
        if self.s3_endpoint:
            kwargs["endpoint"] = self.s3_endpoint
        if self.s3_access_key:
            kwargs["access_key"] = self.s3_access_key
        if self.s3_secret_key:
            kwargs["secret_key"] = self.s3_secret_key
        if self.s3_region:
            kwargs["region"] = self.s3_region
        if self.s3_public_endpoint:
            kwargs["public_endpoint"] = self.s3_public_endpoint
        return kwargs


def _coerce(type_name: Any, raw: str) -> Any:
    t = str(type_name)
    if t.startswith("bool"):
        value = raw.strip().lower()
        if value not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ValueError(f"expected a boolean (true/false, 1/0), got {raw!r}")
        return value in ("1", "true", "yes", "on")
    if t.startswith("int"):
        return int(raw)
    if t.startswith("float"):
        return float(raw)
    return raw
