"""Setup several registration test files share: the reduced option set and the synthetic rescans.

`clean_case` and `changed_case` are session fixtures (tests/conftest.py imports them), so a run
that takes several of these files builds each case once."""

from __future__ import annotations

import warnings
from typing import Literal

import pytest

from occlutrace_compute.registration import RegistrationOptions
from occlutrace_compute.synth.cases import PairCase, make_pair_case

# Coarse scans (0.4 mm grid, ~20k vertices) and fewer samples keep each registration well
# under a second; accuracy at full density is the benchmark's job (bench/bench_registration.py).
FAST = RegistrationOptions().updated(fine_points=8000, fixed_points=12000)


def pair_case(
    seed: int,
    scenario: Literal["clean", "changed"],
    overlap: tuple[float, float],
    noise_mm: float = 0.015,
    spacing_mm: float = 0.4,
) -> PairCase:
    """`make_pair_case` on the tests' coarse grid, RuntimeWarnings silenced as these tests always
    had them (none of the cases here raises one today)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return make_pair_case(seed, scenario, overlap, noise_mm=noise_mm, spacing_mm=spacing_mm)


@pytest.fixture(scope="session")
def clean_case() -> PairCase:
    """A clean rescan, 60-100 % overlap."""
    return pair_case(1, "clean", (0.6, 1.0))


@pytest.fixture(scope="session")
def changed_case() -> PairCase:
    """A rescan with changed anatomy, 35-60 % overlap."""
    return pair_case(2, "changed", (0.35, 0.6))
