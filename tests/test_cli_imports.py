"""A command imports only what it needs: `inspect` and `align`'s parser start without the
service (FastAPI, uvicorn, store clients), Ray, torch or matplotlib (issue 12: seconds of imports
before the first byte of work). Each check runs in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from occlutrace_compute.meshes import Mesh, mesh_to_bytes

HEAVY = ("fastapi", "uvicorn", "ray", "torch", "matplotlib", "trimesh", "minio", "boto3", "httpx")

PROBE = """
import json, sys
from occlutrace_compute.cli import main
try:
    code = {call}
except SystemExit as e:  # argparse's exit on a usage error
    code = e.code
print(json.dumps({{"code": code, "loaded": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""


def _run(call: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(call=call, heavy=HEAVY)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def tetra(tmp_path):
    v = np.array([[0.0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]])
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], dtype=np.int64)
    path = tmp_path / "case01_upper.ply"
    path.write_bytes(mesh_to_bytes(Mesh(v, f), "ply"))
    return path


def test_inspect_imports_nothing_heavy(tetra):
    got = _run(f"main(['inspect', {str(tetra)!r}])")
    assert got == {"code": 0, "loaded": []}


def test_align_parser_imports_nothing_heavy(tetra):
    # Parsing `align` (here failing on the missing -o) must not build the service's parser.
    got = _run(f"main(['align', {str(tetra)!r}, {str(tetra)!r}])")
    assert got == {"code": 2, "loaded": []}


def test_serve_and_submit_still_have_their_options():
    from occlutrace_compute.cli import build_parser

    for command in (None, "serve", "submit"):
        text = build_parser(command).format_help()
        assert "serve" in text and "submit" in text
    serve = build_parser("serve")._subparsers._group_actions[0].choices["serve"].format_help()
    submit = build_parser("submit")._subparsers._group_actions[0].choices["submit"].format_help()
    assert "--port" in serve and "--server" in submit


def test_keep_encoding_is_an_option_of_align_bite_and_batch():
    from occlutrace_compute.cli import build_parser

    argv = {
        "align": ["align", "f.ply", "m.ply", "-o", "out"],
        "bite": ["bite", "--upper", "u.ply", "--lower", "l.ply", "--bite", "b.ply", "-o", "out"],
        "batch": ["batch", "cases", "-o", "out"],
    }
    for command, args in argv.items():
        assert build_parser(command).parse_args(args).keep_encoding is False
        assert build_parser(command).parse_args([*args, "--keep-encoding"]).keep_encoding is True


# What only `serve`, `submit` or `batch` need (the service, its store clients, Ray) and the
# matplotlib/trimesh a job's outputs no longer use: a whole `align` run imports none of them.
SERVICE_AND_BATCH = (
    "fastapi",
    "starlette",
    "uvicorn",
    "ray",
    "boto3",
    "botocore",
    "minio",
    "httpx",
    "matplotlib",
    "trimesh",
    "occlutrace_compute.service",
    "occlutrace_compute.jobs.batch",
    "occlutrace_compute.storage",
)

WHOLE_RUN = """
import json, sys
from occlutrace_compute.cli import main
code = main({argv!r})
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {top!r} or m in {names!r})
print(json.dumps({{"code": code, "loaded": loaded}}))
"""


def test_a_whole_align_run_imports_nothing_of_serve_or_batch(pair_files, tmp_path):
    argv = ["align", *pair_files, "-o", str(tmp_path / "out"), "--device", "cpu"]
    tops = sorted({n for n in SERVICE_AND_BATCH if "." not in n})
    names = [n for n in SERVICE_AND_BATCH if "." in n]
    probe = WHOLE_RUN.format(argv=argv, top=tops, names=names)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"code": 0, "loaded": []}
    assert (tmp_path / "out" / "result.json").is_file()


def test_align_command_ends_fast_with_every_output_and_line_out(pair_files, tmp_path):
    # The console entry ends align without the interpreter's teardown (os._exit): its output
    # must still be complete through a pipe, and the files on disk.
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "occlutrace_compute.cli", "align", *pair_files, "-o", str(out), "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("rmse ") and lines[-1].startswith(f"wrote {out}/: ")
    written = {p.name for p in out.iterdir()}
    assert set(lines[-1].split(": ", 1)[1].split(", ")) == written
    result = json.loads((out / "result.json").read_text())
    assert set(result["outputs"]) <= written
    # an error still ends with its one line and exit code 1
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 3\n")
    proc = subprocess.run(
        [*cmd[:4], str(bad), pair_files[1], "-o", str(tmp_path / "o2")], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 1 and proc.stderr.startswith("error: bad.ply: truncated")
