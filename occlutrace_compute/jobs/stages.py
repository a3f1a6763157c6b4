"""A pair job cut into three stages for the device worker (service/device_worker.py).

1. `prepare_pair` (CPU): read the inputs from the store, parse and validate them (file names,
   label, limits, landmarks), and sample both scans into the registration's pyramid levels
   (`registration.prepare.prepare_all`, the very function the engine calls): everything that
   needs only the inputs. Its `DevicePayload` (samples + the two meshes' arrays) is what goes
   to the device.
2. `device_answers` (the device actor, many pairs of many jobs at once): registration of the
   whole batch (`registration.register_batch` on the prepared samples) and, per pair, the exact
   signed distances of the aligned scan's vertices to the reference surface
   (`analysis.distance_device.surface_index` on the device: the deviation's only heavy query).
3. `finish_pair` (CPU): the deviation report from those distances (`analysis.deviation`, fed
   the answered query), preview, exports, report, and the store writes, result.json last, as
   `jobs.runner.run_job` writes them.

The result equals `runner.run_job`'s for the same job (matrices within 0.1 um, the same
deviation figures: tests/test_device_worker.py); only `timings_seconds` differ in meaning:
`load` is the prepare stage (sampling included), `register` the wait for the device's answer
(batching and queueing included). Jobs the stages do not cover (bite jobs, a reference region,
a device other than the actor's) run `run_job` unchanged (`staged`).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.jobs.models import JobSpec
from occlutrace_compute.jobs.pipeline import (
    PairMeasured,
    _landmarks,
    _results,
    _Stages,
    _start_loads,
    deviation_of,
    pair_outputs,
)
from occlutrace_compute.jobs.runner import _read_inputs, write_outputs
from occlutrace_compute.meshes import LoadedMesh
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.privacy import ensure_anonymous
from occlutrace_compute.storage.base import ObjectStore


def staged(spec: JobSpec, device: str) -> bool:
    """Whether the three stages run this job on an actor of `device` ("cpu" or "cuda"): plain pair
    jobs whose device is "auto" or that device. Others run `run_job` as the ordinary worker does."""
    return spec.kind == "pair" and spec.options.reference_region is None and spec.options.device in ("auto", device)


@dataclass
class DevicePayload:
    """What the device needs of one pair (numpy only; pickled into Ray's object store).

    prepared: `registration.prepare.Prepared` (the samples of both scans at every level);
    fixed, moving: the meshes, the reference's faces for the distance index and the moving
    vertices to be placed and measured; radius_mm: the distance query's reach."""

    key: str
    prepared: Any
    landmarks: tuple[np.ndarray, np.ndarray] | None
    fixed: Mesh
    moving: Mesh
    radius_mm: float
    solo: bool = False  # run alone (a retry after the device actor was lost under a batch)

    @property
    def points(self) -> int:
        """The pair's size for the device's memory budget: every sample of both scans, the moving
        vertices measured and the reference faces indexed (the arrays that live on the device)."""
        p = self.prepared
        return int(len(p.moving.fine.points) + len(p.fixed.fine.points) + self.moving.n_vertices + self.fixed.n_faces)


@dataclass
class DeviceAnswer:
    """The device's answer for one pair: the registration and the signed distances (N,) of the
    aligned moving vertices (NaN beyond `radius_mm`), with which of them hit a boundary (N,)."""

    registration: Any  # registration.RegistrationResult
    distance: np.ndarray
    on_boundary: np.ndarray
    seconds: float  # the batch's device time divided by its pairs


@dataclass
class PairError:
    """A pair's error as the device actor returns it: plain fields, so it crosses Ray whole
    (InputRejected itself does not unpickle: its constructor takes two arguments)."""

    rejected: bool  # bad input (InputRejected: the job is `rejected`), else our fault
    source: str
    problem: str

    @classmethod
    def of(cls, exc: Exception) -> PairError:
        if isinstance(exc, InputRejected):
            return cls(True, exc.source, exc.problem)
        return cls(False, type(exc).__name__, str(exc))

    def error(self) -> Exception:
        """The exception to raise on the worker: InputRejected as the ordinary path raises it, else
        DeviceError naming the original type ("ValueError: ...")."""
        if self.rejected:
            return InputRejected(self.source, self.problem)
        return DeviceError(f"{self.source}: {self.problem}")


class DeviceError(RuntimeError):
    """A pair's failure on the device that is not bad input (the job's attempt fails)."""


@dataclass
class PreparedPair:
    """A prepared job on its CPU worker: the loaded inputs and the payload sent to the device."""

    spec: JobSpec
    fixed: LoadedMesh
    moving: LoadedMesh
    names: dict[str, str]
    payload: DevicePayload
    clock: _Stages


def _engine_names(exc: InputRejected, names: dict[str, str]) -> InputRejected:
    """The engine names roles ("fixed mesh"); the user knows files (as run_pair says it)."""
    role = exc.source.split()[0]
    return InputRejected(names.get(role, exc.source), exc.problem)


def prepare_pair(spec: JobSpec, store: ObjectStore, key: str = "") -> PreparedPair:
    """Stage 1: inputs read, parsed, validated and sampled (run_case's checks, in its order).

    Raises InputRejected naming the file (or the label) for bad input. Time and memory: one
    parse of each input (meshes/) and one sampling of each scan (O(faces + samples))."""
    from occlutrace_compute.analysis.deviation import FAR_FACTOR
    from occlutrace_compute.registration.options import RegistrationOptions
    from occlutrace_compute.registration.prepare import prepare_all

    inputs = _read_inputs(spec, store)  # run_job's order: inputs read, then the label judged
    if spec.case:
        ensure_anonymous(spec.case, f"case label '{spec.case}'", spec.allow)
    clock = _Stages()
    names = {"fixed": inputs["fixed"].name, "moving": inputs["moving"].name}
    with clock.stage("load"):
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="occlutrace-prepare") as pool:
            loaded = _results(_start_loads(pool, {"fixed": inputs["fixed"], "moving": inputs["moving"]}, spec.allow))
        fixed, moving = loaded["fixed"], loaded["moving"]
        landmarks = _landmarks(spec.options)
        try:
            prepared = prepare_all([(fixed.mesh, moving.mesh)], RegistrationOptions())[0]
        except InputRejected as e:
            raise _engine_names(e, names) from None
    payload = DevicePayload(
        key, prepared, landmarks, fixed.mesh, moving.mesh, FAR_FACTOR * spec.options.max_distance_mm
    )
    return PreparedPair(spec, fixed, moving, names, payload, clock)


# --- stage 2: on the device -------------------------------------------------------------------


def register_prepared(payloads: list[DevicePayload], device: str) -> list:
    """`registration.register_batch` on samples made by stage 1 (`prepare.prepare_all`'s output,
    made on the CPU workers with the same default options), one batch for all payloads."""
    from occlutrace_compute.registration import register_batch

    return register_batch(
        [(p.fixed, p.moving) for p in payloads],
        device=device,
        landmarks=[p.landmarks for p in payloads],
        prepared=[p.prepared for p in payloads],
    )


def device_answers(payloads: list[DevicePayload], device: str) -> list[DeviceAnswer | Exception]:
    """Stage 2 for a batch: one registration of all pairs, then each pair's distance query on the
    device. A pair whose query fails gets its exception in its place (only its job fails); a
    failing registration raises (the caller runs the pairs alone to find the culprit)."""
    from occlutrace_compute.analysis.distance_device import surface_index

    start = time.perf_counter()
    regs = register_prepared(payloads, device)
    answers: list[DeviceAnswer | Exception] = []
    measured: list[tuple[np.ndarray, np.ndarray] | Exception] = []
    for p, reg in zip(payloads, regs):
        try:
            aligned = p.moving.transformed(reg.matrix)
            index = surface_index(p.fixed, name="reference", device=device)
            got = index.query(aligned.vertices, max_distance=p.radius_mm)
            measured.append((got.distance, got.on_boundary))
        except Exception as exc:
            measured.append(exc)
    share = (time.perf_counter() - start) / max(len(payloads), 1)
    for reg, m in zip(regs, measured):
        answers.append(m if isinstance(m, Exception) else DeviceAnswer(reg, m[0], m[1], share))
    return answers


# --- stage 3: back on a CPU ---------------------------------------------------------------------


class AnsweredIndex:
    """A distance index whose query was answered on the device: `deviation` reads its distances
    here instead of querying a SurfaceIndex. It answers only for the points it was asked for
    (the aligned vertices, or a contiguous run of their rows, as `deviation` splits a query) at
    the reach it was asked with; anything else is a ValueError, never a wrong answer."""

    def __init__(self, mesh: Mesh, points: np.ndarray, answer: DeviceAnswer, radius_mm: float) -> None:
        self.mesh = mesh
        self._points = points
        self._answer = answer
        self._radius = radius_mm
        if answer.distance.shape != (len(points),):
            raise ValueError(f"{answer.distance.shape[0]} distances answered for {len(points)} points")

    @property
    def features(self) -> None:
        return None  # nothing to build: the answer is in

    def query(self, points: np.ndarray, max_distance: float | None = None) -> Any:
        from occlutrace_compute.analysis.distance import SurfaceDistance

        if max_distance != self._radius:
            raise ValueError(f"distances were answered within {self._radius} mm, asked within {max_distance}")
        start = self._row_offset(points)
        rows = slice(start, start + len(points))
        n = len(points)
        return SurfaceDistance(
            self._answer.distance[rows],
            np.full((n, 3), np.nan),  # not used by deviation: not sent back by the device
            np.full(n, -1, dtype=np.int64),
            self._answer.on_boundary[rows],
        )

    def _row_offset(self, points: np.ndarray) -> int:
        """Row of `points[0]` within the answered points; `points` must be a run of their rows."""
        full = self._points
        if points is full or (points.ndim == 2 and len(points) == 0):  # an empty run: no rows
            return 0
        if points.strides == full.strides and points.dtype == full.dtype and np.shares_memory(points, full):
            offset = points.__array_interface__["data"][0] - full.__array_interface__["data"][0]
            start, rem = divmod(offset, full.strides[0])
            if rem == 0 and np.array_equal(points, full[start : start + len(points)]):
                return int(start)
        raise ValueError("distances asked for other points than those answered on the device")


def finish_pair(pp: PreparedPair, answer: DeviceAnswer, wait_s: float, store: ObjectStore) -> dict[str, Any]:
    """Stage 3: deviation report, preview, exports, report, store writes (result.json last).

    `run_pair` after its registration, with the deviation's query answered (AnsweredIndex), then
    `run_job`'s writes; returns the result with `outputs` mapping names to object keys."""

    spec, options, clock = pp.spec, pp.spec.options, pp.clock
    fixed, moving, reg = pp.fixed, pp.moving, answer.registration
    clock.wall["register"] = wait_s
    with clock.stage("deviation"):
        aligned = moving.mesh.transformed(reg.matrix)
        answered = AnsweredIndex(fixed.mesh, aligned.vertices, answer, pp.payload.radius_mm)
        dev = deviation_of(aligned, fixed.mesh, options, answered)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="occlutrace-finish") as pool:
        from occlutrace_compute.analysis.frame import arch_frame

        reference_framing = pool.submit(arch_frame, fixed.mesh) if reg.changed_regions else None
        measured = PairMeasured(fixed, moving, aligned, reg, dev, reference_framing)
        out = pair_outputs(pool, clock, measured, dict(pp.names), options, spec.case)
    return write_outputs(spec, store, out)
