"""A case as a whole: its purge."""

from __future__ import annotations

from fastapi import APIRouter

from occlutrace_compute.service import schemas as s
from occlutrace_compute.service.openapi import AUTHED, problem
from occlutrace_compute.service.routes.deps import Ctl, Tenant

router = APIRouter(tags=["cases"])


@router.delete("/v1/cases/{case}", response_model=s.PurgeResult, responses=problem(*AUTHED, 422))
def purge(case: str, tenant: Tenant, ctl: Ctl) -> s.PurgeResult:
    """Delete every object of the case (inputs, staging, jobs, outputs), its job index and
    queue entries, its upload index entries and its label in batch records; on a versioned
    bucket the older versions of all of these too (`unremoved` lists what the bucket refused).
    Final: see purges.py for why no writer that started before can bring anything back.
    Cost: one listing and one delete per object of the case, two calls per job, upload and
    batch naming it, plus (versioned buckets) one version listing per touched key; nothing
    proportional to the tenant's other cases."""
    return ctl.purge_case(tenant, case)
