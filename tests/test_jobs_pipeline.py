"""The job pipeline's input checks: labels, file names, a lab's allow patterns, bad meshes."""

from __future__ import annotations

import numpy as np
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


# --- outputs' encoding, parallel loading (issue 12) ---------------------------------------------


@pytest.fixture(scope="module")
def small_pair():
    from occlutrace_compute.synth import make_pair_case

    return make_pair_case(3, "clean", overlap=(0.9, 1.0), spacing_mm=0.45)


def _pair_inputs(case, fmt: str, encoding: str) -> dict[str, InputFile]:
    from occlutrace_compute.meshes import mesh_to_bytes

    return {
        role: InputFile(f"{role}.{fmt}", mesh_to_bytes(getattr(case, role), fmt, encoding))
        for role in ("fixed", "moving")
    }


def test_aligned_mesh_is_binary_unless_the_input_encoding_is_kept(small_pair) -> None:
    from occlutrace_compute.meshes import load_mesh

    default = run_case("pair", _pair_inputs(small_pair, "stl", "ascii"), JobOptions(device="cpu"), "case-0001")
    kept = run_case(
        "pair", _pair_inputs(small_pair, "ply", "ascii"), JobOptions(device="cpu", keep_encoding=True), "case-0001"
    )
    stl, ply = (
        load_mesh(data=default.files["aligned.stl"], name="aligned.stl"),
        load_mesh(data=kept.files["aligned.ply"], name="aligned.ply"),
    )
    assert stl.encoding == "binary" and ply.encoding == "ascii"
    # Same pose either way (ASCII rounds to its printed digits), same result contract.
    assert stl.mesh.n_faces == ply.mesh.n_faces == small_pair.moving.n_faces
    moved = small_pair.moving.transformed(np.asarray(kept.result["matrix"]))
    assert abs(ply.mesh.vertices - moved.vertices).max() < 1e-3
    assert set(default.result) == set(kept.result)
    assert (
        default.result["outputs"] == sorted(set(default.files) - {"result.json"}) and "deviation.png" in default.files
    )
    assert {"load", "register", "deviation", "preview", "export"} <= set(default.result["timings_seconds"])


def test_both_inputs_bad_names_the_fixed_file_first() -> None:
    # The inputs parse on two threads; the error raised is still the first role's.
    for _ in range(5):
        with pytest.raises(InputRejected) as e:
            run_case("pair", BROKEN, JobOptions(), "case-0001")
        assert e.value.source == "fixed.stl"
    good_fixed = {"fixed": InputFile("fixed.stl", BROKEN["moving"].data), "moving": BROKEN["moving"]}
    with pytest.raises(InputRejected) as e:
        run_case("pair", good_fixed, JobOptions(), "case-0001")
    assert e.value.source == "fixed.stl"


def test_changed_regions_are_placed_on_the_arch_and_the_sheet_uses_the_aligned_frame() -> None:
    # The arch frames are computed on the job's pool beside the deviation query: the reference's
    # (where regions changed) must still place every region, the aligned scan's must be the one
    # the report's sheet would compute itself.
    from occlutrace_compute.analysis.frame import arch_frame
    from occlutrace_compute.analysis.sectors import locate_regions
    from occlutrace_compute.synth import make_pair_case

    case = make_pair_case(5, "changed", overlap=(0.9, 1.0), spacing_mm=0.45)
    out = run_case("pair", _pair_inputs(case, "ply", "binary"), JobOptions(device="cpu"), "case-0002")
    regions = out.result["changed_regions"]
    assert regions, "the changed scenario should report changed regions"
    bare = [{k: v for k, v in r.items() if k != "location"} for r in regions]
    assert regions == locate_regions(bare, arch_frame(case.fixed), None)
    # The job's aligned frame: same matrix, same mesh, so the same frame bit for bit.
    from occlutrace_compute.analysis.deviation import deviation

    aligned = case.moving.transformed(np.asarray(out.result["matrix"]))
    frame = arch_frame(aligned)
    dev = deviation(aligned, case.fixed, aligned_frame=frame)
    assert dev.frame is frame
    assert np.array_equal(deviation(aligned, case.fixed).frame.occlusal, frame.occlusal)


def test_the_preview_drawn_beside_the_query_is_the_report_s_own_png(small_pair, tmp_path, monkeypatch) -> None:
    """The job draws the deviation sheet's views before the values exist (the large one from
    MOVING in its own frame during the registration, the small ones beside the deviation query)
    and only colours them after: the PNG shows what the deviation report renders by itself for
    the same aligned mesh, pixel for pixel but for rounding in the last bits (at most a handful
    of pixels; upper arch: patient sides named, so the views depend on the frame's sign too),
    the large view drawn during the registration was used, and the sheet drew nothing itself."""
    import io
    import sys

    from PIL import Image

    from occlutrace_compute.analysis import preview
    from occlutrace_compute.analysis.deviation import DeviationReport
    from occlutrace_compute.analysis.distance import SurfaceIndex
    from occlutrace_compute.jobs.pipeline import deviation_of, run_pair
    from occlutrace_compute.registration import register

    seen = {}

    def registrar(fixed, moving, **kw):
        seen["reg"], seen["meshes"] = register(fixed, moving, **kw), (fixed, moving)
        return seen["reg"]

    drawn_by_the_sheet = []
    made_here = preview.sheet_geometry  # write_arch_sheet's own fallback

    def counted(*args, **kw):
        drawn_by_the_sheet.append(1)
        return made_here(*args, **kw)

    monkeypatch.setattr(preview, "sheet_geometry", counted)
    large_views = []
    deviation_module = sys.modules[DeviationReport.__module__]  # the package's `deviation` is the function
    made = deviation_module.preview_geometry

    def noted(aligned, frame, arch, large=None):
        large_views.append(large)
        return made(aligned, frame, arch, large)

    monkeypatch.setattr(deviation_module, "preview_geometry", noted)
    options = JobOptions(device="cpu", arch="upper")
    inputs = _pair_inputs(small_pair, "ply", "binary")
    out = run_pair(inputs["fixed"], inputs["moving"], options, registrar=registrar)
    assert not drawn_by_the_sheet
    assert len(large_views) == 1 and large_views[0] is not None  # MOVING's view, drawn during the registration
    fixed, moving = seen["meshes"]
    aligned = moving.transformed(seen["reg"].matrix)
    dev = deviation_of(aligned, fixed, options, SurfaceIndex(fixed, name="reference"))
    assert isinstance(dev, DeviationReport) and dev.aligned_frame is None  # its own frame, its own views
    own = dev.write_preview(tmp_path / "own.png").read_bytes()
    assert drawn_by_the_sheet == [1]
    with Image.open(io.BytesIO(out.files["deviation.png"])) as a, Image.open(io.BytesIO(own)) as b:
        differ = (np.asarray(a.convert("RGB")) != np.asarray(b.convert("RGB"))).any(axis=2)
    assert differ.sum() <= 5, f"{differ.sum()} pixels differ"
