"""Bite registration on synthetic cases (coarse 0.3 mm spacing to stay fast): the lower arch's
pose in occlusion from one and two buccal bites, the JSON shape, doubt on a bite that belongs to
another patient, settling out of interpenetration, and rejection of unusable input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.registration.bite import BiteResult, register_bite
from occlutrace_compute.registration.bite_contact import UpperSurface, max_penetration, settle
from occlutrace_compute.registration.bite_frames import occlusal_direction
from occlutrace_compute.registration.sampling import sample_surface_area
from occlutrace_compute.synth import make_bite_case, pointwise_rms_um

TOLERANCE_UM = 50.0


@pytest.fixture(scope="module")
def case_two():
    return make_bite_case(3, n_bites=2, spacing_mm=0.3)


@pytest.fixture(scope="module")
def case_one():
    return make_bite_case(4, n_bites=1, spacing_mm=0.3)


@pytest.fixture(scope="module")
def one_bite_right(case_two) -> BiteResult:
    """One bite (the patient's right), settled (the fitted pose is the settled one minus the
    reported translation)."""
    return register_bite(case_two.upper, case_two.lower, [case_two.bites[1]], settle=True)


@pytest.fixture(scope="module")
def two_bites(case_two) -> BiteResult:
    return register_bite(case_two.upper, case_two.lower, case_two.bites)


def _error_um(T: np.ndarray, case) -> float:
    return pointwise_rms_um(T, case.T_upper_lower, case.lower.vertices)


def _fitted(r: BiteResult) -> np.ndarray:
    T = r.T_upper_lower.copy()
    T[:3, 3] -= r.settle_translation_mm
    return T


def test_one_bite_recovers_the_occlusion(case_two, one_bite_right):
    assert _error_um(_fitted(one_bite_right), case_two) < TOLERANCE_UM
    assert not one_bite_right.doubtful, one_bite_right.reason
    assert one_bite_right.confidence > 0.5
    # the bite's own poses chain to the same relative pose
    T_chain = one_bite_right.T_upper_bites[0] @ np.linalg.inv(one_bite_right.T_lower_bites[0])
    assert _error_um(T_chain, case_two) < 2 * TOLERANCE_UM
    assert (
        pointwise_rms_um(one_bite_right.T_upper_bites[0], case_two.T_upper_bites[1], case_two.bites[1].vertices)
        < TOLERANCE_UM
    )


def test_two_bites_recover_the_occlusion_jointly(case_two, two_bites):
    assert _error_um(two_bites.T_upper_lower, case_two) < TOLERANCE_UM
    assert not two_bites.doubtful, two_bites.reason
    assert two_bites.bite_disagreement_mm < 0.3
    assert len(two_bites.fits) == 2


def test_result_json_shape(two_bites):
    j = json.loads(json.dumps(two_bites.to_json()))  # JSON-serialisable as is
    assert np.allclose(np.asarray(j["matrix"]), two_bites.T_upper_lower)
    assert len(j["bites"]) == 2
    for bite in j["bites"]:
        for arch in ("upper", "lower"):
            assert np.asarray(bite[arch]["matrix"]).shape == (4, 4)
            assert 0.0 <= bite[arch]["fitness"] <= 1.0
            assert bite[arch]["rmse_mm"] < 0.05
    assert 0.0 <= j["confidence"] <= 1.0
    assert j["doubtful"] is False and j["reason"] == ""
    assert set(j["interpenetration_mm"]) == {"before", "after"}
    assert j["settled"] is False


def test_bite_from_another_case_is_doubtful(case_two, case_one):
    r = register_bite(case_two.upper, case_two.lower, [case_one.bites[0]])
    assert r.doubtful
    assert r.reason
    assert r.confidence == 0.0


def test_settle_lifts_the_lower_out_of_the_upper(case_two, one_bite_right):
    r = one_bite_right
    assert r.settled and r.to_json()["settled"] is True
    assert r.interpenetration_after_mm < r.interpenetration_before_mm
    assert r.interpenetration_after_mm <= 0.01
    assert np.linalg.norm(r.settle_translation_mm) < 0.3  # a small correction, not a new pose


def test_settle_undoes_a_deliberate_intrusion(case_two):
    """Push the true occlusion 0.3 mm deeper: settle must take the lower back out, about the
    same way it came in."""
    up_pts, up_nrm, area = sample_surface_area(case_two.upper, 60000, seed=1)
    upper = UpperSurface.of((up_pts, up_nrm), area)
    lower = case_two.lower.vertices @ case_two.T_upper_lower[:3, :3].T + case_two.T_upper_lower[:3, 3]
    occlusal = occlusal_direction((up_pts, up_nrm))  # points from the upper towards the lower
    intruded = lower - 0.3 * occlusal
    assert max_penetration(upper, intruded) > 0.25
    s = settle(upper, intruded)
    assert s.before_mm > 0.25
    assert s.after_mm <= 0.01
    assert np.linalg.norm(s.translation) < 0.45


def test_unusable_input_is_rejected(case_one):
    with pytest.raises(InputRejected, match="bites"):
        register_bite(case_one.upper, case_one.lower, [])
    with pytest.raises(InputRejected, match="bites"):
        register_bite(case_one.upper, case_one.lower, case_one.bites * 3)
    tiny = Mesh(np.zeros((3, 3)), np.array([[0, 1, 2]], dtype=np.int64))
    with pytest.raises(InputRejected, match="bite1 mesh"):
        register_bite(case_one.upper, case_one.lower, [tiny])
    bad = Mesh(case_one.lower.vertices.copy(), case_one.lower.faces)
    bad.vertices[0, 0] = np.nan
    with pytest.raises(InputRejected, match="lower mesh"):
        register_bite(case_one.upper, bad, case_one.bites)


def test_clear_placement_skips_the_band_search_with_the_same_answer(case_two, one_bite_right):
    """Issue 12 item 3: a first placement that passes every test with margin skips the band
    search; forcing the band search (nothing is ever 'clear') must land on the same occlusion."""
    from dataclasses import replace

    from occlutrace_compute.registration.bite import BiteOptions

    always = replace(BiteOptions(), clear_band_fitness=2.0)  # never clear: the band search always runs
    full = register_bite(case_two.upper, case_two.lower, [case_two.bites[1]], settle=True, options=always)
    assert pointwise_rms_um(full.T_upper_lower, one_bite_right.T_upper_lower, case_two.lower.vertices) < 1.0
    assert full.doubtful == one_bite_right.doubtful
