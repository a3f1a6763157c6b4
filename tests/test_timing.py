"""The stage timer: accumulates per stage, records a stage that raised, never measures another's time."""

from __future__ import annotations

import time

import pytest

from occlutrace_compute.timing import stopwatch


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_stopwatch_adds_each_block_to_its_stage():
    stages: dict[str, float] = {"sampling": 1.0}
    with stopwatch(stages, "mid"):
        _busy(0.01)
    first = stages["mid"]
    with stopwatch(stages, "mid"):  # the mid level timed again (a local search round): sums
        _busy(0.01)
    with stopwatch(stages, "fine"):
        pass
    assert list(stages) == ["sampling", "mid", "fine"]  # stages in the order they ran
    assert stages["sampling"] == 1.0
    assert 0.01 <= first < stages["mid"]
    assert stages["mid"] >= 0.02
    assert 0.0 <= stages["fine"] < stages["mid"]


def test_stopwatch_records_a_stage_that_raised():
    stages: dict[str, float] = {}
    with pytest.raises(ValueError, match="bad input"), stopwatch(stages, "load"):
        _busy(0.005)
        raise ValueError("bad input")
    assert stages["load"] >= 0.005
