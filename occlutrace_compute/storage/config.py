"""Open the configured object store from a URL and `OCCLUTRACE_*` environment variables.

`OCCLUTRACE_STORE`:
  - `file:///abs/path`, `file://rel/path` or a plain path: a local folder (the embedded default,
    `$XDG_DATA_HOME/occlutrace`, else `~/.local/share/occlutrace`: one per user and machine, so
    the CLI and a local Ray see the same store whatever the working directory);
  - `s3://bucket[/prefix]`: S3, with `OCCLUTRACE_S3_ENDPOINT` (`http(s)://host[:port]`, the
    scheme decides TLS), `OCCLUTRACE_S3_ACCESS_KEY` or `OCCLUTRACE_S3_ACCESS_KEY_FILE`,
    `OCCLUTRACE_S3_SECRET_KEY` or `OCCLUTRACE_S3_SECRET_KEY_FILE`, optional
    `OCCLUTRACE_S3_REGION` and `OCCLUTRACE_S3_PUBLIC_ENDPOINT` (the host in presigned URLs).
Secrets are read, handed to the client, and never logged or echoed in errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from occlutrace_compute.storage.base import ObjectStore
from occlutrace_compute.storage.local import LocalStore
from occlutrace_compute.storage.s3 import S3Store

ENV_STORE = "OCCLUTRACE_STORE"
_S3_OPTIONS = {"endpoint", "access_key", "secret_key", "region", "secure", "public_endpoint", "retry"}


def default_store_url(env: Mapping[str, str] = os.environ) -> str:
    data_home = env.get("XDG_DATA_HOME") or str(Path("~/.local/share").expanduser())
    return f"file://{Path(data_home) / 'occlutrace'}"


def open_store(url: str | None = None, **overrides: Any) -> ObjectStore:
    """The store named by `url`, else `$OCCLUTRACE_STORE`, else the local default.

    `overrides` (S3 only) replace the environment: endpoint, access_key, secret_key, region,
    secure, public_endpoint, retry (a RetryPolicy).
    """
    env = os.environ
    url = url or env.get(ENV_STORE) or default_store_url(env)
    unknown = set(overrides) - _S3_OPTIONS
    if unknown:
        raise TypeError(f"open_store: unknown option(s) {sorted(unknown)}")
    if url.startswith("s3://"):
        return _open_s3(url, env, overrides)
    if overrides:
        raise TypeError(f"open_store: options {sorted(overrides)} apply to s3:// stores only")
    if url.startswith("file://"):
        url = url[len("file://") :]
    elif "://" in url:
        raise ValueError(f"{ENV_STORE} {url!r}: expected file:///path or s3://bucket/prefix")
    if not url:
        raise ValueError(f"{ENV_STORE}: a file:// store needs a path")
    return LocalStore(Path(url))


def _open_s3(url: str, env: Mapping[str, str], overrides: dict[str, Any]) -> S3Store:
    bucket, _, prefix = url[len("s3://") :].partition("/")
    options = {
        "endpoint": env.get("OCCLUTRACE_S3_ENDPOINT"),
        "region": env.get("OCCLUTRACE_S3_REGION"),
        "public_endpoint": env.get("OCCLUTRACE_S3_PUBLIC_ENDPOINT"),
    } | overrides
    if not options["endpoint"]:
        raise ValueError(f"{ENV_STORE} {url!r}: OCCLUTRACE_S3_ENDPOINT is not set")
    for name in ("access_key", "secret_key"):
        if not options.get(name):
            options[name] = _secret(env, f"OCCLUTRACE_S3_{name.upper()}")
    return S3Store(bucket=bucket, prefix=prefix, **options)


def _secret(env: Mapping[str, str], var: str) -> str:
    """`$VAR`, else the stripped content of the file `$VAR_FILE` (a mounted Kubernetes secret)."""
    if env.get(var):
        return env[var]
    path = env.get(f"{var}_FILE")
    if not path:
        raise ValueError(f"S3 store: set {var} or {var}_FILE")
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"{var}_FILE {path!r}: cannot read ({exc.strerror})") from None
    if not value:
        raise ValueError(f"{var}_FILE {path!r}: the file is empty")
    return value
