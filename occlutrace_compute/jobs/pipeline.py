"""The pipeline that runs one job on in-memory inputs and returns its output files.

One core for three callers: `occlutrace align/bite` write the files to a folder, `batch`
writes them per case, the service worker uploads them to the store. Input bytes are
validated (and so de-identified on the way out: exports carry no metadata) here.
"""

from __future__ import annotations

import ctypes
import functools
import json
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.jobs.heap import held_heap, keep_heap
from occlutrace_compute.jobs.models import RESULT_SCHEMA_VERSION, JobOptions
from occlutrace_compute.meshes import Limits, LoadedMesh, load_mesh, mesh_to_bytes
from occlutrace_compute.meshes.export import mesh_files
from occlutrace_compute.privacy import check_filename, ensure_anonymous
from occlutrace_compute.timing import stopwatch

if TYPE_CHECKING:  # torch and the analysis stack load only when a job needs them (the CLI's start)
    from occlutrace_compute.analysis.deviation import DeviationReport
    from occlutrace_compute.analysis.frame import ArchFrame
    from occlutrace_compute.analysis.preview import Raster
    from occlutrace_compute.jobs.registrar import Registrar
    from occlutrace_compute.meshes.model import Mesh
    from occlutrace_compute.registration.result import RegistrationResult


@dataclass(frozen=True)
class InputFile:
    """One uploaded or on-disk mesh: its (anonymous) file name and raw bytes.

    companions: where a textured mesh's MTL and image are found by base name (the files of a
    case folder, a function reading beside the file or among a case's committed inputs); None:
    a texture the mesh names is dropped with a warning."""

    name: str
    data: bytes
    companions: Mapping[str, bytes] | Callable[[str], bytes | None] | None = field(default=None, compare=False)


@dataclass
class JobOutput:
    """`result` is result.json's content; `files` maps output names to bytes (result.json included)."""

    result: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # per stage, all threads (benchmarks)


class _Stages:
    """Wall seconds (result.json's timings_seconds) and process CPU seconds (all threads) per
    stage: `with clock.stage("load"):` (timing.stopwatch)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def stage(self, name: str) -> AbstractContextManager[None]:
        return stopwatch(self.wall, name, self.cpu)


@functools.lru_cache(maxsize=1)
def _blas_thread_counts() -> list[tuple[Callable[[], int], Callable[[int], Any]]]:
    """(get, set) of the thread count of each BLAS numpy loaded (found once: a scan of the loaded
    libraries costs ~1 ms). OpenBLAS's pthreads pool is set through its own C API, not through
    threadpoolctl, whose OpenBLAS setter silently does nothing on any thread but the one that
    set it first while that thread lives (threadpoolctl 3.6+): jobs run on worker threads."""
    from itertools import product

    from threadpoolctl import ThreadpoolController

    counts: list[tuple[Callable[[], int], Callable[[int], Any]]] = []
    for lib in ThreadpoolController().select(user_api="blas").lib_controllers:
        found = None
        if lib.internal_api == "openblas" and getattr(lib, "threading_layer", "") != "openmp":
            dll = ctypes.CDLL(lib.filepath)
            for prefix, suffix in product(("", "scipy_"), ("", "64_", "_64")):
                get = getattr(dll, f"{prefix}openblas_get_num_threads{suffix}", None)
                put = getattr(dll, f"{prefix}openblas_set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
                    found = (get, put)
                    break
        counts.append(found or (lambda lib=lib: lib.num_threads, lib.set_num_threads))
    return counts


class _OneBlasThread:
    """numpy's BLAS on one thread while any job of this process runs (reference-counted: jobs
    that overlap on a worker's threads share one cap; the last one out restores the setting the
    first one found). Why: a job already keeps both cores busy with its own threads, and
    OpenBLAS's second thread, started by the (N, 3) @ (3, 3) products of the transforms, frames
    and exports, spins waiting for a core the job holds: ~0.15-0.25 s of CPU lost per
    150k-vertex pair job (bench/RESULTS.md, fifth session). OpenBLAS's count is process-wide.
    Cost: O(1) per entry and exit (two C calls under a lock), one ~1 ms library scan a process.

    Under concurrency (checked on the OpenBLAS numpy ships, 0.3.31, pthreads, NO_AFFINITY;
    OpenBLAS source driver/others/blas_server.c `goto_set_num_threads`, interface/gemm.c,
    common_thread.h `num_cpu_avail`; tests/test_jobs_tail.py's stress test):
    - Safe while other threads are inside BLAS: below the pool's size (this cap sets 1 and
      restores a count it read, never more) the setter only stores the global `blas_cpu_number`;
      a BLAS call reads it once as it starts and runs on threads that exist either way. Only
      growing the pool creates threads, under OpenBLAS's server lock. So a call that starts as a
      job enters or leaves runs on 1 or 2 threads, with the same results.
    - Process-wide by design: a thread outside any job also gets one BLAS thread while a job runs
      (OpenBLAS's pthreads build has no per-thread count: `openblas_set_num_threads_local` sets
      the global one too). No code of ours calls BLAS outside a job in a process that runs jobs.
    - Save and restore are exact for setters that nest inside a job (the engine's
      `nn.threads.cpu_threads`) or run while no job does. A setter on another thread, outside
      any job and uncoordinated with this lock (threadpoolctl's limits save and restore too), can
      have a transient value saved by the first job in and restored by the last one out, or
      restore the cap's 1 after the last job left: a lost update of the count, never a wrong
      result (the stress test's raw setter shows it). None runs so in this package.
    - OpenBLAS built on OpenMP (not numpy's wheel) resets its count from omp_get_max_threads() at
      each call (OpenMathLib/OpenBLAS#5806), so there the cap does nothing; its setter also
      frees per-thread buffers (blas_server_omp.c), which is not safe beside a running call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved: list[int] = []

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with held_heap():  # the job's span for the heap too: its freed heap goes back once idle
            with self._lock:
                if self._users == 0:
                    counts = _blas_thread_counts()
                    self._saved = [get() for get, _ in counts]
                    for _, put in counts:
                        put(1)
                self._users += 1
            try:
                yield
            finally:
                with self._lock:
                    self._users -= 1
                    if self._users == 0:
                        for (_, put), n in zip(_blas_thread_counts(), self._saved):
                            if n and n > 0:
                                put(n)


one_blas_thread = _OneBlasThread()


def _load(f: InputFile, limits: Limits, allow: Sequence[str]) -> LoadedMesh:
    check_filename(f.name, allow)
    return load_mesh(data=f.data, name=f.name, limits=limits, companions=f.companions)


def _start_loads(pool: ThreadPoolExecutor, inputs: dict[str, InputFile], allow: Sequence[str]) -> dict[str, Future]:
    """Parses the inputs on the pool's threads: numpy parsing and validation release the GIL for
    most of their work, so two files load side by side (and beside the imports of the stages)."""
    limits = Limits()
    return {role: pool.submit(_load, f, limits, allow) for role, f in inputs.items()}


def _results(futures: dict[str, Future]) -> dict[str, LoadedMesh]:
    """The loaded meshes in role order: the first bad input (in that order) is the error raised."""
    return {role: fut.result() for role, fut in futures.items()}


def _reference_index(surface_index, loading: Future):
    """The deviation reference's index, built on a worker thread as soon as the reference is
    parsed: beside the imports of the registration and the registration itself, which do not
    need it. A bad reference raises its load error here too (the job reports it from the load
    first). The whole mesh's features are not built: the CPU query signs a face-interior hit by
    its face's normal and makes pseudo-normals only around edge and corner hits (analysis/
    distance.py); a device index builds its own."""
    return surface_index(loading.result().mesh, name="reference")


def _aligned_encoding(loaded: LoadedMesh, options: JobOptions) -> str:
    """Binary unless the job asks to keep the input's encoding (OBJ is always text)."""
    return loaded.encoding if options.keep_encoding else "binary"


def _file_bytes(write, suffix: str) -> bytes:
    """Runs a writer that takes a path (matplotlib previews write files) and returns the bytes."""
    with tempfile.TemporaryDirectory(prefix="occlutrace-") as d:
        path = Path(d) / f"out{suffix}"
        write(path)
        return path.read_bytes()


def _collected(exports: dict[str, Future]) -> dict[str, bytes]:
    """The encoded exports: a future gives one file's bytes, or (mesh_files: a mesh with its MTL
    and re-encoded texture) a dict of files."""
    files: dict[str, bytes] = {}
    for name, fut in exports.items():
        got = fut.result()
        files.update(got if isinstance(got, dict) else {name: got})
    return files


def _landmarks(options: JobOptions) -> tuple[np.ndarray, np.ndarray] | None:
    if not options.landmarks:
        return None
    pts = np.asarray(options.landmarks, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[1:] != (2, 3) or len(pts) < 3 or not np.isfinite(pts).all():
        raise InputRejected(
            "landmarks", "need at least 3 pairs [[x,y,z] in moving, [x,y,z] in fixed] of finite numbers"
        )
    return pts[:, 0], pts[:, 1]


def _finish(result: dict[str, Any], files: dict[str, bytes], label: str, clock: _Stages) -> JobOutput:
    result.update(
        {
            "schema_version": RESULT_SCHEMA_VERSION,
            "case": label,
            "status": "succeeded",
            "timings_seconds": {k: round(v, 4) for k, v in clock.wall.items()},
        }
    )
    files["result.json"] = json.dumps(result, indent=2).encode()
    return JobOutput(result, files, clock.cpu)


def _located(regions: list[dict], reference_frame: Future | None, options: JobOptions) -> list[dict]:
    """Changed regions with their place on the arch (sector, patient side, arch) beside the
    centroid; reference_frame: the future of arch_frame(reference) (started when there are any)."""
    from occlutrace_compute.analysis.sectors import locate_regions

    return locate_regions(regions, reference_frame.result(), options.arch) if regions and reference_frame else []


MOVED_FRAME_TOL = 1e-9  # largest difference of a unit axis from MOVING's axis moved by the pose


def _moving_occlusal(moving: Mesh, after: Future) -> tuple[ArchFrame, Raster] | None:
    """MOVING's arch frame and the deviation sheet's large view of MOVING in it (preview.
    occlusal_raster), made once `after` (the reference index's future, submitted before it) is
    done; None where either fails (then the aligned scan's view is drawn from it as before; the
    job reports its own errors). O(N + F + H * W) (~0.11-0.14 s CPU at 150k vertices)."""
    try:
        after.result()
        from occlutrace_compute.analysis.frame import arch_frame
        from occlutrace_compute.analysis.preview import occlusal_raster

        frame = arch_frame(moving)
        return frame, occlusal_raster(moving, frame)
    except Exception:  # an optimisation only: any failure falls back to the exact path
        return None


def _preview_geometry(
    aligned: Mesh, framing: Future, arch: str | None, predrawn: Future | None = None, matrix: np.ndarray | None = None
):
    """The deviation preview's views before colour (analysis.deviation.preview_geometry), once
    the aligned scan's frame is made (a pool thread: it waits for futures submitted before it,
    so never for a task queued behind it). predrawn: _moving_occlusal's future; its large view
    is used when the aligned scan's frame is MOVING's frame moved by `matrix` (each axis within
    MOVED_FRAME_TOL): the same picture up to rounding in the last bits (a pixel centre that far
    from an edge; tests/test_analysis_preview.py), else the view is drawn from the aligned scan.
    O(N log N + F + H * W) without it, O(N log N + small views) with it."""
    from occlutrace_compute.analysis.deviation import preview_geometry

    frame = framing.result()
    got = predrawn.result() if predrawn is not None else None
    large = None
    if got is not None and matrix is not None:
        moved_frame, raster = got
        rotation = np.asarray(matrix, dtype=np.float64)[:3, :3]
        axes = ("x", "anterior", "occlusal")
        if all(np.abs(rotation @ getattr(moved_frame, a) - getattr(frame, a)).max() <= MOVED_FRAME_TOL for a in axes):
            large = raster
    return preview_geometry(aligned, frame, arch, large)


def _viewer(mesh, values, ramp, frame, arch) -> dict[str, Any]:
    """The report's 3D view data (run on a pool thread beside the preview)."""
    from occlutrace_compute.analysis.report import viewer_payload

    return viewer_payload(mesh.vertices, mesh.faces, values, ramp, frame, arch)


def _with_report(out: JobOutput, options: JobOptions, viewer: dict[str, Any]) -> JobOutput:
    """Adds the case's inspection page (with its 3D view) and PDF to the outputs; its time is
    the `report` stage."""
    from occlutrace_compute.analysis.report import case_report_files

    wall: dict[str, float] = {}
    with stopwatch(wall, "report", out.cpu_seconds):
        shown = options.model_dump(mode="json", exclude={"landmarks", "device"})
        out.files.update(case_report_files(out.result, out.files, viewer, shown))
    out.result["timings_seconds"]["report"] = round(wall["report"], 4)
    out.files["result.json"] = json.dumps(out.result, indent=2).encode()
    return out


def run_pair(
    fixed_in: InputFile,
    moving_in: InputFile,
    options: JobOptions,
    label: str = "",
    allow: Sequence[str] = (),
    registrar: Registrar | None = None,
) -> JobOutput:
    """Registers MOVING onto FIXED, then measures the deviation of the aligned scan.

    Overlaps what is free to overlap on two cores: both inputs parse on two threads while this
    thread imports the registration and analysis stages, the reference's distance index builds
    on a thread from the moment the reference is parsed (beside the imports and the
    registration, and then MOVING's frame and the preview's large view in it, which serves the
    aligned scan: _moving_occlusal), the deviation query runs on two threads with the arch
    frames, the aligned mesh's encoding and the preview's other views before colour
    (analysis.deviation.preview_geometry: they need the pose and frame, not the values) beside
    it on the pool, and the deviation map's export and the report's 3D-view data are made on
    the pool's threads while this one colours and composes the preview. Stage times
    (`timings_seconds`) are wall seconds of each stage as this thread sees it: load includes
    waiting for the parses, register the reference index and MOVING's large view built beside
    it, deviation the arch frames and the preview's views beside the query, export the wait for
    the encodings after the preview.

    registrar: registers the pair elsewhere (`occlutrace align`: jobs/registrar.py, a process
    that imported torch beside this one's imports); None: here, the engine imported during load.
    """
    keep_heap()
    clock = _Stages()
    with one_blas_thread(), ThreadPoolExecutor(max_workers=2, thread_name_prefix="occlutrace-job") as pool:
        with clock.stage("load"):
            loading = _start_loads(pool, {"fixed": fixed_in, "moving": moving_in}, allow)
            from occlutrace_compute.analysis.distance_device import surface_index

            # The deviation's index of FIXED does not depend on the pose: queued behind the parses
            # (it starts when one ends and waits for FIXED's), it builds while this thread imports
            # the registration (torch: ~2 s of a command) and registers. On the job's device
            # (distance_device: "auto" is the CUDA kernel when a GPU is usable, else distance.py).
            indexing = pool.submit(_reference_index, partial(surface_index, device=options.device), loading["fixed"])
            if registrar is None:
                from occlutrace_compute.registration import register

                registrar = register
            loaded = _results(loading)
            fixed, moving = loaded["fixed"], loaded["moving"]
            # The preview's large view does not move with the scan: drawn from MOVING in its own
            # frame once the index is built (~0.11 s CPU at 150k vertices, while one core is
            # otherwise idle for the rest of the registration, ~0.17 s), it is the aligned scan's
            # view when the aligned scan's frame is MOVING's moved by the pose (checked after).
            predrawing = pool.submit(_moving_occlusal, moving.mesh, indexing)

        with clock.stage("register"):
            try:
                reg = registrar(fixed.mesh, moving.mesh, landmarks=_landmarks(options), device=options.device)
            except InputRejected as e:  # the engine names roles ("fixed mesh"); the user knows files
                names = {"fixed": fixed_in.name, "moving": moving_in.name}
                role = e.source.split()[0]
                raise InputRejected(names.get(role, e.source), e.problem) from None
            matrix, region_json = reg.matrix, None
            if options.reference_region is not None:
                from occlutrace_compute.registration.region import refine_on_region, region_mask

                spec = options.reference_region
                mask = region_mask(fixed.mesh, spec.vertices, spec.sectors, spec.spheres, options.arch)
                fit = refine_on_region(fixed.mesh, moving.mesh, reg.matrix, mask)
                matrix = fit.matrix
                region_json = fit.to_json(
                    spec.model_dump(exclude_none=True, exclude={"vertices"})
                    | ({"vertices": len(spec.vertices)} if spec.vertices else {})
                )
                region_json["whole_arch_matrix"] = np.round(reg.matrix, 10).tolist()

        with clock.stage("deviation"):
            aligned = moving.mesh.transformed(matrix)
            # The arch frames read only geometry: the aligned scan's (the preview's first need,
            # ~0.13 s CPU at 150k vertices) and, when regions changed, the reference's (their
            # places on the arch) are computed on the pool beside the deviation query instead of
            # on this thread's path after it. Their time is in this stage's CPU, not in preview's.
            from occlutrace_compute.analysis.frame import arch_frame

            framing = pool.submit(arch_frame, aligned)
            reference_framing = pool.submit(arch_frame, fixed.mesh) if reg.changed_regions else None
            # The aligned mesh's file needs only the pose: encoded now on the pool, not in the
            # tail beside the preview, where a text mesh (an OBJ's ~0.1 s of CPU) made the job
            # wait for it after the preview (the `export` stage).
            exporting = pool.submit(mesh_files, aligned, "aligned", moving.format, _aligned_encoding(moving, options))
            # The preview's views before colour need the pose and the frame, not the deviation:
            # the small ones (~0.05 s CPU at 150k vertices; the large one too where MOVING's
            # could not serve) are drawn on the pool beside the query instead of in the preview
            # stage, which then only colours and composes. Queued behind the frame it waits for.
            drawing = pool.submit(_preview_geometry, aligned, framing, options.arch, predrawing, matrix)
            dev = deviation_of(aligned, fixed.mesh, options, indexing.result())
            dev = replace(dev, aligned_frame=framing.result())

        return pair_outputs(
            pool,
            clock,
            PairMeasured(fixed, moving, aligned, reg, dev, reference_framing, region_json, exporting, drawing),
            {"fixed": fixed_in.name, "moving": moving_in.name},
            options,
            label,
        )


def deviation_of(aligned: Mesh, reference: Mesh, options: JobOptions, reference_index: Any) -> DeviationReport:
    """The job's deviation map of the aligned scan against the reference, with the job's
    tolerance, cutoff, colour scale, band and arch, on a reference index made beforehand."""
    from occlutrace_compute.analysis import deviation

    return deviation(
        aligned,
        reference,
        tolerance_mm=options.tolerance_mm,
        max_distance_mm=options.max_distance_mm,
        color_scale_mm=options.color_scale_mm,
        band_mm=options.band_mm,
        arch=options.arch,
        reference_index=reference_index,
    )


@dataclass
class PairMeasured:
    """A pair job after its deviation: what its outputs are made from. `reference_framing`: the
    future of the reference's arch frame (when regions changed); `region_json`: the
    reference-region alignment's summary (when asked); `aligned_export`: the future of the
    aligned mesh's files when the job started encoding them earlier; `preview_geometry`: the
    future of the preview's views before colour when the job started drawing them earlier."""

    fixed: LoadedMesh
    moving: LoadedMesh
    aligned: Mesh
    reg: RegistrationResult
    dev: DeviationReport
    reference_framing: Future | None = None
    region_json: dict | None = None
    aligned_export: Future | None = None  # mesh_files(aligned, ...) started earlier; None: in the tail
    preview_geometry: Future | None = None  # _preview_geometry(aligned, ...) started earlier; None: in the tail


@one_blas_thread()  # a ContextDecorator: the cap is taken at each call and lifted at its end
def pair_outputs(
    pool: ThreadPoolExecutor,
    clock: _Stages,
    m: PairMeasured,
    input_names: dict[str, str],
    options: JobOptions,
    label: str,
) -> JobOutput:
    """The pair job's preview, exports, result and report (run_pair's tail, and the device
    worker's finish stage): the mesh exports and the 3D view's data encode on `pool` while this
    thread renders the preview. numpy's BLAS on one thread meanwhile (`one_blas_thread`)."""
    dev, reg, region_json = m.dev, m.reg, m.region_json
    with clock.stage("preview"):
        frame = dev.frame  # once, for the preview and the 3D view
        viewing = pool.submit(_viewer, dev.colored, dev.shown, dev.ramp, frame, options.arch)
        exports: dict[str, Future] = {
            "aligned": m.aligned_export
            or pool.submit(mesh_files, m.aligned, "aligned", m.moving.format, _aligned_encoding(m.moving, options)),
            "deviation.ply": pool.submit(mesh_to_bytes, dev.colored, "ply", quality=dev.shown),
        }
        geometry = m.preview_geometry.result() if m.preview_geometry is not None else None
        files = {"deviation.png": _file_bytes(partial(dev.write_preview, geometry=geometry), ".png")}
    with clock.stage("export"):
        files.update(_collected(exports))
        viewer = viewing.result()
    reg_json = reg.to_json()
    result = {
        "kind": "pair",
        "inputs": dict(input_names),
        "matrix": reg_json["matrix"] if region_json is None else region_json["matrix"],
        "metrics": reg_json["metrics"],
        "changed_regions": _located(reg_json["changed_regions"], m.reference_framing, options),
        "deviation": dev.to_dict(),
        **({"reference_region": region_json} if region_json else {}),
        "warnings": m.fixed.warnings + m.moving.warnings,
        "outputs": sorted(files) + ["report.html", "report.pdf"],
    }
    return _with_report(_finish(result, files, label, clock), options, viewer)


def run_bite(
    inputs: dict[str, InputFile], options: JobOptions, label: str = "", allow: Sequence[str] = ()
) -> JobOutput:
    """Places the lower arch into occlusion with the upper through the bite scans; contacts.

    Overlaps like run_pair: inputs parse on two threads beside the imports, the arches' files
    encode beside the contacts and the contact maps' beside the preview.
    """
    keep_heap()
    clock = _Stages()
    with one_blas_thread(), ThreadPoolExecutor(max_workers=2, thread_name_prefix="occlutrace-job") as pool:
        with clock.stage("load"):
            loading = _start_loads(pool, inputs, allow)
            from occlutrace_compute.analysis import contacts
            from occlutrace_compute.registration.bite import register_bite

            loaded = _results(loading)
            upper, lower = loaded["upper"], loaded["lower"]
            bites = [loaded[r].mesh for r in ("bite1", "bite2") if r in loaded]

        with clock.stage("register"):
            bite = register_bite(upper.mesh, lower.mesh, bites, settle=options.settle, device=options.device)

        with clock.stage("contacts"):
            upper_occ = upper.mesh  # the occlusion frame is UPPER's own frame
            lower_occ = lower.mesh.transformed(bite.T_upper_lower)
            # The arches' files need only the pose: encoded on the pool beside the contacts (as
            # run_pair does with its aligned mesh), not in the tail after the preview.
            exports: dict[str, Future] = {
                "upper_occlusion": pool.submit(
                    mesh_files, upper_occ, "upper_occlusion", upper.format, _aligned_encoding(upper, options)
                ),
                "lower_occlusion": pool.submit(
                    mesh_files, lower_occ, "lower_occlusion", lower.format, _aligned_encoding(lower, options)
                ),
            }
            report = contacts(upper_occ, lower_occ, threshold_mm=options.contact_threshold_mm, device=options.device)

        with clock.stage("preview"):
            from occlutrace_compute.meshes.model import Mesh

            both = Mesh(
                np.concatenate([upper_occ.vertices, lower_occ.vertices]),
                np.concatenate([upper_occ.faces, lower_occ.faces + upper_occ.n_vertices]),
            )
            values = np.concatenate([report.upper.distance, report.lower.distance])
            # The 3D view's data first (~0.09 s CPU for two 120k-vertex arches, the longest task
            # beside the preview), then the two contact meshes (~0.01 s each) on the other thread.
            viewing = pool.submit(_viewer, both, values, report.ramp, report.upper.frame, "upper")
            exports |= {
                "contacts_upper.ply": pool.submit(
                    mesh_to_bytes, report.upper.colored, "ply", quality=report.upper.distance
                ),
                "contacts_lower.ply": pool.submit(
                    mesh_to_bytes, report.lower.colored, "ply", quality=report.lower.distance
                ),
            }
            files = {"contacts.png": _file_bytes(report.write_preview, ".png")}
        with clock.stage("export"):
            files.update(_collected(exports))
            viewer = viewing.result()
    result = {
        "kind": "bite",
        "inputs": {role: f.name for role, f in inputs.items()},
        "upper": {"matrix": np.eye(4).tolist()},
        "lower": {"matrix": np.asarray(bite.T_upper_lower).tolist()},
        "registration": bite.to_json(),
        "contacts": report.to_dict(),
        "warnings": [w for m in loaded.values() for w in m.warnings],
        "outputs": sorted(files) + ["report.html", "report.pdf"],
    }
    return _with_report(_finish(result, files, label, clock), options, viewer)


def run_case(
    kind: str, inputs: dict[str, InputFile], options: JobOptions, label: str = "", allow: Sequence[str] = ()
) -> JobOutput:
    """Runs a pair or bite job; the case label itself must be anonymous (`allow`: a lab's own
    label-scheme regexes, exempt from identifier detection)."""
    if label:
        ensure_anonymous(label, f"case label '{label}'", allow)
    if kind == "pair":
        return run_pair(inputs["fixed"], inputs["moving"], options, label, allow)
    if kind == "bite":
        return run_bite(inputs, options, label, allow)
    raise InputRejected(label or "job", f"unknown job kind {kind!r}")


def summary_fields(result: dict[str, Any]) -> dict[str, Any]:
    """The key numbers of a result for summary.csv and the batch report."""
    if result.get("kind") == "pair":
        m, d = result["metrics"], result["deviation"]
        return {
            "rmse_mm": round(m["rmse_mm"], 5),
            "fitness": round(m["fitness"], 4),
            "confidence": round(m["confidence"], 3),
            "doubtful": m["doubtful"],
            "deviation_rms_mm": d.get("rms_mm"),
            "within_tolerance_share": d.get("within_tolerance_share"),
            "changed_regions": len(result.get("changed_regions", [])),
        }
    if result.get("kind") == "bite":
        c = result["contacts"]["per_side"]
        reg = result["registration"]
        return {
            "confidence": reg.get("confidence"),
            "doubtful": reg.get("doubtful"),
            "contact_area_left_mm2": round(c["left"]["contact_area_mm2"], 3),
            "contact_area_right_mm2": round(c["right"]["contact_area_mm2"], 3),
            "max_penetration_mm": round(result["contacts"]["max_penetration_mm"], 4),
        }
    return {}
