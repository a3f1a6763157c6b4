"""`occlutrace align` registers in a process forked at its start (jobs/registrar.py): the same
outputs as registering in the command's own process, errors reported as before, no process left
behind, and the command's own process never imports torch. Each check runs in a fresh
interpreter (a fork from pytest's threaded process would not be what the command does)."""

from __future__ import annotations

import json
import subprocess
import sys

from occlutrace_compute.jobs.registrar import INPROCESS_ENV, ForkedRegistrar


def _probe(code: str, env: dict[str, str] | None = None) -> dict:
    import os

    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | (env or {}),
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


UNIT = """
import json, os, sys
from occlutrace_compute.jobs.registrar import ForkedRegistrar
bad, idle = ForkedRegistrar.start(), ForkedRegistrar.start()
from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.synth import make_pair_case

case = make_pair_case(5, "clean", overlap=(0.9, 1.0), spacing_mm=0.8)
# a scan too small to register: a few triangles (the engine rejects it, naming the mesh)
tiny = Mesh(case.fixed.vertices[:60], case.fixed.faces[(case.fixed.faces < 60).all(axis=1)][:20])
try:
    bad.register(tiny, case.moving, landmarks=None, device="cpu")
    forked_error = None
except InputRejected as e:
    forked_error = [e.source, e.problem]
torch_here = "torch" in sys.modules
pid = idle.pid
idle.close()  # never asked: ended and reaped
try:
    os.kill(pid, 0)
    idle_alive = True
except ProcessLookupError:
    idle_alive = False
bad.close()
from occlutrace_compute.registration import register
try:
    register(tiny, case.moving, device="cpu")
    here_error = None
except InputRejected as e:
    here_error = [e.source, e.problem]
print(json.dumps({"torch_here": torch_here, "forked_error": forked_error, "here_error": here_error,
                  "idle_alive": idle_alive}))
"""


def test_forked_registration_reports_the_same_errors_and_leaves_no_process():
    got = _probe(UNIT)
    assert got["torch_here"] is False  # the engine was imported in the other process only
    assert got["here_error"] is not None  # the tiny scan is rejected in-process ...
    assert got["forked_error"] == got["here_error"]  # ... and the same way through the fork
    assert got["idle_alive"] is False


WHOLE = """
import json, sys, contextlib, io, pathlib
from occlutrace_compute.jobs.registrar import ForkedRegistrar
registrar = ForkedRegistrar.start()
from occlutrace_compute.cli import main
argv = {argv!r}
with contextlib.redirect_stdout(io.StringIO()):
    code = main(argv + ["-o", {forked!r}], registrar)
registrar.close()
torch_here = "torch" in sys.modules
with contextlib.redirect_stdout(io.StringIO()):
    code_here = main(argv + ["-o", {here!r}])
def outputs(folder):
    files = {{p.name: p.read_bytes() for p in pathlib.Path(folder).iterdir()}}
    result = json.loads(files.pop("result.json"))
    result.pop("timings_seconds")
    files.pop("report.html"), files.pop("report.pdf")  # they carry the time of the run
    return result, files
print(json.dumps({{"codes": [code, code_here], "torch_here": torch_here,
                  "same": outputs({forked!r}) == outputs({here!r})}}))
"""


def test_align_with_the_forked_registration_writes_what_in_process_writes(pair_files, tmp_path):
    argv = ["align", *pair_files, "--device", "cpu"]
    got = _probe(WHOLE.format(argv=argv, forked=str(tmp_path / "forked"), here=str(tmp_path / "here")))
    assert got == {"codes": [0, 0], "torch_here": False, "same": True}


def test_registration_names_load_on_first_use():
    # The command's process unpickles the result (registration.result) and may refine on a
    # region (registration.region) without the engine's torch; the package's names still work.
    got = _probe(
        "import json, sys\n"
        "import occlutrace_compute.registration.result, occlutrace_compute.registration.region\n"
        "before = 'torch' in sys.modules\n"
        "from occlutrace_compute.registration import RegistrationResult, register, features\n"
        "from occlutrace_compute.registration.engine import register as engine_register\n"
        "print(json.dumps({'before': before, 'after': 'torch' in sys.modules,\n"
        "                  'same': register is engine_register, 'module': features.__name__}))"
    )
    assert got == {
        "before": False,
        "after": True,
        "same": True,
        "module": "occlutrace_compute.registration.features",
    }


def test_the_in_process_switch_starts_nothing(monkeypatch):
    monkeypatch.setenv(INPROCESS_ENV, "1")
    assert ForkedRegistrar.start() is None


def test_a_clean_pair_registers_without_scipy(tmp_path):
    # The registration process's imports are align's critical path: scipy.spatial and
    # scipy.sparse (~0.4 s) load only where a local search or a changed region needs them. A clean
    # pair's few rejected samples cannot make a region as large as the smallest reported one, so
    # the clustering (and its imports) is skipped; a changed pair still gets its regions
    # (test_registration's changed cases). The case is made here: the generator imports scipy.
    import numpy as np

    from occlutrace_compute.synth import make_pair_case

    case = make_pair_case(1, "clean", overlap=(0.9, 1.0), spacing_mm=0.3)
    arrays = tmp_path / "pair.npz"
    np.savez(arrays, fv=case.fixed.vertices, ff=case.fixed.faces, mv=case.moving.vertices, mf=case.moving.faces)
    got = _probe(
        "import json, sys\n"
        "import numpy as np\n"
        "from occlutrace_compute.meshes.model import Mesh\n"
        "from occlutrace_compute.registration.engine import register\n"
        f"z = np.load({str(arrays)!r})\n"
        "r = register(Mesh(z['fv'], z['ff']), Mesh(z['mv'], z['mf']))\n"
        "print(json.dumps({'regions': len(r.changed_regions),\n"
        "                  'scipy': sorted(m for m in ('scipy.spatial', 'scipy.sparse') if m in sys.modules)}))"
    )
    assert got == {"regions": 0, "scipy": []}
