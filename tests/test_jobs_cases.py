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
