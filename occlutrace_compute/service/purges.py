"""Purge generations: what makes a purge final against writers that started before it.

Each case has a generation number, 0 until its first purge. A purge first raises it and marks
the case as being purged (writes the case's tombstone), then deletes, then clears the mark.
Every writer of the case's objects (a worker's outputs and job record, an upload grant's PUT, a
commit, job creation) carries the generation it started under and checks it before its final
write and again after it; a writer that finds it changed deletes
what it wrote. Why that is enough: the purge raises the generation before it lists the case, and
both stores list what was written before (read-after-write consistency). A write is either
listed (and deleted) by the purge, or followed by a check that sees the new generation (and the
writer deletes it). No lock, no lease: a writer that dies between its write and its check leaves
an object only where the purge, which started later, lists and deletes it. While the mark is
set no writer starts (409), so none can copy, from an object the purge is about to delete, into
a key the purge has already listed.

The tombstone key names the case by a hash, not by its label (a purged label may itself be
protected health information): `tenants/<t>/purges/<sha256(case)>.json` -> {"generation": n}.
Tombstones are tiny and kept: a case purged again gets n + 1; a purge that failed midway leaves
the mark set, and the case refuses writers until the purge is repeated.

Cost: one small GET per check (a missing tombstone is a 404).
"""

from __future__ import annotations

import hashlib

from occlutrace_compute.storage.base import KeyNotFound, ObjectStore
from occlutrace_compute.storage.keys import check_id, tenant_prefix


class CasePurged(Exception):
    """The case was purged while this request or job was writing to it; what it wrote is gone."""


def tombstone_key(tenant: str, case: str) -> str:
    digest = hashlib.sha256(check_id("case id", case).encode()).hexdigest()
    return f"{tenant_prefix(tenant)}purges/{digest}.json"


def _state(store: ObjectStore, tenant: str, case: str) -> tuple[int, bool]:
    try:
        stone = store.get_json(tombstone_key(tenant, case))
    except KeyNotFound:
        return 0, False
    return int(stone["generation"]), bool(stone.get("purging"))


def generation(store: ObjectStore, tenant: str, case: str) -> int:
    """The case's purge generation now (0: never purged), for a writer about to start; CasePurged
    while a purge of the case is under way (a writer starting then could copy what the purge is
    deleting, after the purge listed it)."""
    number, purging = _state(store, tenant, case)
    if purging:
        raise CasePurged(case)
    return number


def begin(store: ObjectStore, tenant: str, case: str) -> int:
    """A purge's first step, before it lists anything: the generation raised, the case marked as
    being purged; returns the new generation. Two purges racing may both write n + 1: either way
    every writer of generation n sees a change."""
    number, _ = _state(store, tenant, case)
    store.put_json(tombstone_key(tenant, case), {"generation": number + 1, "purging": True})
    return number + 1


def end(store: ObjectStore, tenant: str, case: str, number: int) -> None:
    """A purge's last step, once everything is deleted: new writers of the case may start. A purge
    that fails before this leaves the case refusing writers until it is purged again (fail safe)."""
    if _state(store, tenant, case) == (number, True):  # a later purge of the case still running keeps its mark
        store.put_json(tombstone_key(tenant, case), {"generation": number, "purging": False})


def still(store: ObjectStore, tenant: str, case: str, started: int) -> bool:
    """Whether the case is still at the generation a writer started under, and not being purged."""
    return _state(store, tenant, case) == (started, False)
