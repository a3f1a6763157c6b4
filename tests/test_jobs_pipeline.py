"""The job pipeline's input checks: labels, file names, a lab's allow patterns, bad meshes."""

from __future__ import annotations

import pytest

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.jobs.models import JobOptions
from occlutrace_compute.jobs.pipeline import InputFile, run_case

BROKEN = {"fixed": InputFile("fixed.stl", b"solid x\nfacet"), "moving": InputFile("moving.stl", b"\x00" * 10)}


def test_identifying_case_label_is_rejected_before_any_work() -> None:
    with pytest.raises(InputRejected, match="case label 'Mueller_Juergen_1980-02-01'"):
        run_case("pair", BROKEN, JobOptions(), "Mueller_Juergen_1980-02-01")


def test_lab_allow_pattern_exempts_its_label_scheme() -> None:
    label = "LAB12345678"  # a long digit run reads as a chart number unless the lab allows its scheme
    with pytest.raises(InputRejected, match="case label"):
        run_case("pair", BROKEN, JobOptions(), label)
    with pytest.raises(InputRejected) as e:  # passes the label check, fails on the broken mesh
        run_case("pair", BROKEN, JobOptions(), label, allow=(r"LAB\d{8}",))
    assert e.value.source == "fixed.stl"


def test_identifying_file_name_is_rejected() -> None:
    inputs = {"fixed": InputFile("Jane_Doe_upper.stl", b"x"), "moving": InputFile("moving.stl", b"x")}
    with pytest.raises(InputRejected) as e:
        run_case("pair", inputs, JobOptions(), "case-0001")
    assert e.value.source == "Jane_Doe_upper.stl"


def test_bad_landmarks_are_rejected() -> None:
    from occlutrace_compute.jobs.pipeline import _landmarks

    with pytest.raises(InputRejected, match="at least 3 pairs"):
        _landmarks(JobOptions(landmarks=[[[0, 0, 0], [1, 1, 1]]]))
