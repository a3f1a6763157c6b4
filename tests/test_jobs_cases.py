"""Case discovery for batch/submit: pair and bite folders, and bad folders reported, not fatal."""

from __future__ import annotations

from pathlib import Path

import pytest

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.jobs.cases import discover_cases


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"x")


def test_discovers_pair_and_bite_cases_recursively(tmp_path: Path) -> None:
    _touch(tmp_path / "lab-a" / "case-0001", "fixed.stl", "moving.PLY")
    _touch(tmp_path / "lab-a" / "case-0002", "upper.ply", "lower.ply", "bite_left.stl", "bite_right.stl")
    _touch(tmp_path / "case-0003", "readme.txt")
    cases, bad = discover_cases(tmp_path)
    assert bad == []
    assert [(c.label, c.kind) for c in cases] == [("lab-a/case-0001", "pair"), ("lab-a/case-0002", "bite")]
    assert set(cases[1].files) == {"upper", "lower", "bite1", "bite2"}
    assert cases[0].files["moving"].name == "moving.PLY"


@pytest.mark.parametrize(
    "names, problem",
    [
        (("fixed.stl",), "pair case without moving"),
        (("upper.stl", "lower.stl"), "bite case without bite"),
        (("fixed.stl", "fixed.ply", "moving.ply"), "several files for 'fixed'"),
        (("upper.stl", "lower.stl", "bite1.stl", "bite2.stl", "bite3.stl"), "at most two bite scans"),
    ],
)
def test_incomplete_or_ambiguous_case_is_reported(tmp_path: Path, names: tuple[str, ...], problem: str) -> None:
    _touch(tmp_path / "case-0009", *names)
    _touch(tmp_path / "case-0010", "fixed.stl", "moving.stl")
    cases, bad = discover_cases(tmp_path)
    assert [c.label for c in cases] == ["case-0010"]
    assert len(bad) == 1 and bad[0].label == "case-0009" and problem in bad[0].reason


def test_missing_root_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputRejected, match="not a folder"):
        discover_cases(tmp_path / "nope")


@pytest.mark.parametrize(
    "names, kind, roles",
    [
        (
            ("UpperJaw.ply", "LowerJaw.ply", "BuccalBite.ply"),
            "bite",
            {"upper": "UpperJaw.ply", "lower": "LowerJaw.ply", "bite1": "BuccalBite.ply"},
        ),
        (
            ("Maxilla.STL", "Mandible.stl", "BuccalBiteLeft.obj", "BuccalBiteRight.obj"),
            "bite",
            {
                "upper": "Maxilla.STL",
                "lower": "Mandible.stl",
                "bite1": "BuccalBiteLeft.obj",
                "bite2": "BuccalBiteRight.obj",
            },
        ),
        (
            ("case7_maxillary.ply", "case7_mandibular.ply", "case7_occlusion.ply"),
            "bite",
            {"upper": "case7_maxillary.ply", "lower": "case7_mandibular.ply", "bite1": "case7_occlusion.ply"},
        ),
        (("reference.stl", "rescan.stl"), "pair", {"fixed": "reference.stl", "moving": "rescan.stl"}),
        (("Baseline.PLY", "Follow-Up.ply"), "pair", {"fixed": "Baseline.PLY", "moving": "Follow-Up.ply"}),
        (("first.obj", "second.obj"), "pair", {"fixed": "first.obj", "moving": "second.obj"}),
        (
            ("upper_reference.stl", "upper_rescan.stl"),
            "pair",
            {"fixed": "upper_reference.stl", "moving": "upper_rescan.stl"},
        ),
        (
            ("UPPER.stl", "LOWER.stl", "BITE1.stl"),
            "bite",
            {"upper": "UPPER.stl", "lower": "LOWER.stl", "bite1": "BITE1.stl"},
        ),
    ],
)
def test_vendor_and_clinical_names(tmp_path: Path, names, kind, roles) -> None:
    _touch(tmp_path / "c1", *names)
    cases, bad = discover_cases(tmp_path)
    assert bad == []
    assert len(cases) == 1 and cases[0].kind == kind
    assert {r: p.name for r, p in cases[0].files.items()} == roles


def test_unrecognised_meshes_are_rejected_with_expected_names_not_dropped(tmp_path: Path) -> None:
    _touch(tmp_path / "mystery", "scan_a.stl", "scan_b.stl")
    _touch(tmp_path / "mystery" / "inner", "fixed.stl", "moving.stl")  # still searched
    _touch(tmp_path / "notes", "readme.txt")  # no mesh: not a case, not an error
    cases, bad = discover_cases(tmp_path)
    assert [c.label for c in cases] == ["mystery/inner"]
    assert [b.label for b in bad] == ["mystery"]
    assert "scan_a.stl" in bad[0].reason and "UpperJaw" in bad[0].reason and "case.json" in bad[0].reason


def test_ambiguous_names_are_rejected(tmp_path: Path) -> None:
    _touch(tmp_path / "a", "reference.stl", "baseline.stl", "rescan.stl")
    _touch(tmp_path / "b", "upper_lower.stl", "bite.stl")
    _touch(tmp_path / "c", "first_followup.stl", "x.stl")
    _, bad = discover_cases(tmp_path)
    reasons = {b.label: b.reason for b in bad}
    assert "several files for 'fixed'" in reasons["a"]
    assert "both the upper and the lower" in reasons["b"]
    assert "both the reference and the rescan" in reasons["c"]


def test_case_json_names_roles_and_options(tmp_path: Path) -> None:
    import json

    _touch(tmp_path / "c1", "scan_a.stl", "scan_b.stl")
    (tmp_path / "c1" / "case.json").write_text(
        json.dumps(
            {"kind": "pair", "files": {"fixed": "scan_a.stl", "moving": "scan_b.stl"}, "options": {"tolerance_mm": 0.1}}
        )
    )
    _touch(tmp_path / "c2", "UpperJaw.stl", "LowerJaw.stl", "BuccalBite.stl")
    (tmp_path / "c2" / "case.json").write_text(json.dumps({"options": {"contact_threshold_mm": 0.2, "settle": True}}))
    _touch(tmp_path / "c3", "fixed.stl", "moving.stl")
    (tmp_path / "c3" / "case.json").write_text(json.dumps({"options": {"tolerance_mm": -1}}))
    _touch(tmp_path / "c4", "a.stl")
    (tmp_path / "c4" / "case.json").write_text(json.dumps({"files": {"fixed": "a.stl", "moving": "../b.stl"}}))
    _touch(tmp_path / "c5", "fixed.stl", "moving.stl")
    (tmp_path / "c5" / "case.json").write_text("{not json")
    _touch(tmp_path / "c6", "fixed.stl", "moving.stl")
    (tmp_path / "c6" / "case.json").write_text(json.dumps({"colour": "red"}))
    cases, bad = discover_cases(tmp_path)
    by = {c.label: c for c in cases}
    assert (
        by["c1"].kind == "pair"
        and by["c1"].files["moving"].name == "scan_b.stl"
        and by["c1"].options == {"tolerance_mm": 0.1}
    )
    assert by["c2"].kind == "bite" and by["c2"].options["settle"] is True
    reasons = {b.label: b.reason for b in bad}
    assert set(reasons) == {"c3", "c4", "c5", "c6"}
    assert "c3/case.json" in reasons["c3"] and "tolerance_mm" in reasons["c3"]
    assert "no file '../b.stl'" in reasons["c4"]
    assert "c5/case.json: invalid" in reasons["c5"]
    assert "colour" in reasons["c6"]


from hypothesis import given, settings, strategies as st  # noqa: E402

_ROLE_WORDS = st.sampled_from(
    [
        "upper",
        "UpperJaw",
        "maxilla",
        "lower",
        "LowerJaw",
        "mandible",
        "bite",
        "BuccalBite",
        "reference",
        "baseline",
        "rescan",
        "followup",
        "scan",
        "model",
        "x",
    ]
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["", "case_", "Case-12 "]), _ROLE_WORDS, st.sampled_from([".stl", ".PLY", ".obj"])),
        min_size=1,
        max_size=6,
        unique_by=lambda t: t[1],
    )
)
def test_any_folder_of_meshes_is_a_case_or_a_reported_rejection(tmp_path_factory, files) -> None:
    """Whatever the names, a folder with meshes is never silently dropped."""
    root = tmp_path_factory.mktemp("h")
    _touch(root / "c", *(f"{p}{w}{s}" for p, w, s in files))
    cases, bad = discover_cases(root)
    assert len(cases) + len(bad) == 1
    for c in cases:
        assert set(c.files) in ({"fixed", "moving"}, {"upper", "lower", "bite1"}, {"upper", "lower", "bite1", "bite2"})
