"""Write the listing indexes for job records stored before they existed (a one-off upgrade step).

    python -m occlutrace_compute.service.reindex            # the store of OCCLUTRACE_STORE

The only O(history) operation of the service, and it runs by hand: every job record is read
once (keys listed a page at a time, memory O(page)) and its `index/all` entry, final-state
entry and batch done entry are written where missing. Safe to run while the service runs
(entries are hints checked against the records) and to run again (it writes the same keys).
"""

from __future__ import annotations

import argparse
import sys

from occlutrace_compute.jobs.models import TERMINAL_STATES
from occlutrace_compute.service.records import (
    ID_RE,
    JobRef,
    JobRepo,
    all_index_prefix,
    batch_done_key,
    listing_key,
    parallel_map,
    state_index_prefix,
)
from occlutrace_compute.storage.base import ObjectStore

PAGE = 1000


def reindex(store: ObjectStore) -> int:
    """Index every job record in `store`; returns how many records were indexed."""
    repo = JobRepo(store)
    count = 0
    page: list[JobRef] = []

    def flush() -> None:
        nonlocal count
        for ref, record in zip(page, repo.load_many(page)):
            if record is None:
                continue
            keys = [listing_key(all_index_prefix(ref.tenant), ref.job_id, ref.case)]
            if record.state in TERMINAL_STATES:
                keys.append(listing_key(state_index_prefix(ref.tenant, record.state), ref.job_id, ref.case))
                if record.batch_id:
                    keys.append(batch_done_key(ref.tenant, record.batch_id, ref.job_id, record.state))
            parallel_map(lambda key: store.exists(key) or store.put(key, b""), keys)
            count += 1
        page.clear()

    for key in store.iter_keys("tenants/", page=PAGE):
        ref = JobRef.parse(key)
        if ref is not None and ID_RE.match(ref.job_id):
            page.append(ref)
            if len(page) == PAGE:
                flush()
    flush()
    return count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", help="store URL (default: OCCLUTRACE_STORE)")
    args = ap.parse_args(argv)
    from occlutrace_compute.storage.config import open_store

    print(f"indexed {reindex(open_store(args.store))} job records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
