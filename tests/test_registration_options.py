"""RegistrationOptions grouped by stage: `updated` changes fields by name in their section only."""

from __future__ import annotations

import dataclasses

import pytest

from occlutrace_compute.registration import RegistrationOptions


def test_updated_changes_each_field_in_its_section_and_nothing_else():
    base = RegistrationOptions()
    opt = base.updated(fine_points=8000, knn_backend="torch", starts=0, min_confidence=1.01)
    assert (opt.sampling.fine_points, opt.runtime.knn_backend, opt.local_search.starts, opt.verdict.min_confidence) == (
        8000,
        "torch",
        0,
        1.01,
    )
    assert opt.hypotheses == base.hypotheses and opt.levels == base.levels  # untouched sections: equal
    assert dataclasses.replace(opt.sampling, fine_points=base.sampling.fine_points) == base.sampling
    assert base == RegistrationOptions() and base.sampling.fine_points == 20000  # the original is unchanged
    with pytest.raises(TypeError, match="no field 'local_search_starts'"):
        base.updated(local_search_starts=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opt.sampling.fine_points = 1  # type: ignore[misc]
