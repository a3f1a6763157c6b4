"""Object key rules and the case layout (**contract**: `tenants/<tenant>/cases/<case>/...`).

Every object of a case lives under its case prefix so that a purge (accidental protected health
information) is one prefix delete. Ids are restricted to a safe charset so that a key can never
escape its prefix, collide with another tenant's, or mean something else on a local filesystem.
Bad keys and ids raise `InputRejected` (a `ValueError`): they usually come from API callers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.storage.base import ObjectStore

MAX_KEY_BYTES = 1024  # the S3 limit
MAX_ID_LENGTH = 128
MAX_NAME_LENGTH = 255
# Local writes go through temp files named like this, beside their target; a key may not use it.
TEMP_PREFIX = ".occlutrace-tmp-"

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_key(key: str) -> str:
    """Return `key` if it is a safe relative '/'-path; raise InputRejected naming the problem."""
    source = f"object key {key!r}"
    if not isinstance(key, str) or not key:
        raise InputRejected(source, "a key must be a non-empty string")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InputRejected(source, f"longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise InputRejected(source, "absolute keys are not allowed")
    if "\\" in key:
        raise InputRejected(source, "backslashes are not allowed")
    if _CONTROL.search(key):
        raise InputRejected(source, "control characters are not allowed")
    for segment in key.split("/"):
        if not segment:
            raise InputRejected(source, "empty path segments ('//' or a trailing '/')")
        if segment in (".", ".."):
            raise InputRejected(source, f"'{segment}' segments are not allowed")
        if segment.startswith(TEMP_PREFIX):
            raise InputRejected(source, f"segments starting {TEMP_PREFIX!r} are reserved")
    return key


def folder_prefix(prefix: str) -> str:
    """'' (everything) or a checked folder prefix ending in '/': 'a/b' and 'a/b/' are the same."""
    if prefix == "":
        return ""
    return check_key(prefix[:-1] if prefix.endswith("/") else prefix) + "/"


def check_id(kind: str, value: str, max_length: int = MAX_ID_LENGTH) -> str:
    """Return `value` if it is a safe id: [A-Za-z0-9._-], starting alphanumeric, bounded length."""
    source = f"{kind} {value!r}"
    if not isinstance(value, str) or not value:
        raise InputRejected(source, "must be a non-empty string")
    if len(value) > max_length:
        raise InputRejected(source, f"longer than {max_length} characters")
    if not _ID.fullmatch(value):
        raise InputRejected(
            source, "only letters, digits, '.', '_' and '-' are allowed, starting with a letter or digit"
        )
    return value


def tenant_prefix(tenant: str) -> str:
    return f"tenants/{check_id('tenant id', tenant)}/"


def case_prefix(tenant: str, case: str) -> str:
    """`tenants/<tenant>/cases/<case>/`: everything of a case, and nothing else, is under it."""
    return f"{tenant_prefix(tenant)}cases/{check_id('case id', case)}/"


def input_key(tenant: str, case: str, name: str) -> str:
    """Where an uploaded (already de-identified) input file of a case lives."""
    return f"{case_prefix(tenant, case)}inputs/{check_id('file name', name, MAX_NAME_LENGTH)}"


def job_prefix(tenant: str, case: str, job: str) -> str:
    return f"{case_prefix(tenant, case)}jobs/{check_id('job id', job)}/"


def job_record_key(tenant: str, case: str, job: str) -> str:
    """The job record (spec + status): the durable source of truth the dispatcher rebuilds from."""
    return f"{job_prefix(tenant, case, job)}job.json"


def output_key(tenant: str, case: str, job: str, name: str) -> str:
    """An output of a job (result.json, aligned mesh, deviation mesh, ...)."""
    return f"{job_prefix(tenant, case, job)}outputs/{check_id('file name', name, MAX_NAME_LENGTH)}"


@dataclass(frozen=True)
class CaseKey:
    """A key split into its tenant, case and the rest (the path inside the case)."""

    tenant: str
    case: str
    rest: str


def split_case_key(key: str) -> CaseKey:
    """Parse `tenants/<t>/cases/<c>/<rest>`; lets the controller check a caller-given key's tenant."""
    parts = check_key(key).split("/", 4)
    if len(parts) != 5 or parts[0] != "tenants" or parts[2] != "cases":
        raise InputRejected(f"object key {key!r}", "not under tenants/<tenant>/cases/<case>/")
    return CaseKey(check_id("tenant id", parts[1]), check_id("case id", parts[3]), parts[4])


def purge_case(store: ObjectStore, tenant: str, case: str) -> list[str]:
    """Delete every object of one case; returns the keys removed (for the audit log)."""
    return store.delete_prefix(case_prefix(tenant, case))
