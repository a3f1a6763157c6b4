"""A wheel carries everything the package reads at run time, including the CUDA sources, and
the C++ text scanner where a compiler is found (else the build goes on without it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the sources (setuptools writes build/ and egg-info beside them)."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("occlutrace_compute", "kernels"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("occlutrace_compute-*.whl")
    return path


def test_wheel_holds_kernel_sources_and_package_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for source in sorted(p for ext in ("cu", "cuh", "h") for p in (REPO / "kernels").glob(f"*.{ext}")):
        assert any(n.endswith(f".data/data/share/occlutrace/kernels/{source.name}") for n in names), source.name
    assert any(n.startswith("occlutrace_compute/privacy/data/first_names") for n in names)
    for asset in (
        "swagger-ui/swagger-ui-bundle.js",
        "swagger-ui/swagger-ui.css",
        "swagger-ui/LICENSE",
        "swagger-ui/NOTICE",
        "redoc/redoc.standalone.js",
        "redoc/LICENSE",
    ):  # /docs and /redoc work offline
        assert f"occlutrace_compute/service/static/{asset}" in names, asset


COMPILER = shutil.which("c++") or shutil.which("g++")
HEADERS = (Path(sysconfig.get_paths()["include"]) / "Python.h").exists()


@pytest.mark.skipif(not (COMPILER and HEADERS), reason="no C++ compiler or Python headers: the wheel is pure")
def test_wheel_holds_the_text_scanner_and_it_loads(wheel, tmp_path):
    """Built where g++ and Python.h exist (CI's image, the Dockerfile's build stage): the
    extension is in the wheel and imports on its own (it needs nothing but Python)."""
    names = zipfile.ZipFile(wheel).namelist()
    (so,) = [n for n in names if n.startswith("occlutrace_compute/meshes/_textscan") and n.endswith(".so")]
    zipfile.ZipFile(wheel).extract(so, tmp_path)
    code = (
        "import importlib.util as u, sys; s = u.spec_from_file_location('_textscan', sys.argv[1]); "
        "m = u.module_from_spec(s); s.loader.exec_module(m); print(m.count_tokens(b' 1 2\\n3'))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / so)], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "3"


def test_wheel_builds_without_a_compiler(tmp_path):
    """No working C++ compiler (CC/CXX point at `false`): the build warns and goes on, a wheel
    without the extension, whose readers take the Python path."""
    src, out = tmp_path / "src", tmp_path / "wheel"
    src.mkdir()
    shutil.copy(REPO / "pyproject.toml", src / "pyproject.toml")
    shutil.copy(REPO / "README.md", src / "README.md")
    shutil.copytree(
        REPO / "occlutrace_compute", src / "occlutrace_compute", ignore=shutil.ignore_patterns("__pycache__", "*.so")
    )
    false = shutil.which("false") or "/bin/false"
    env = {**os.environ, "CC": false, "CXX": false, "LDSHARED": false, "LDCXXSHARED": false}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
        env=env,
    )
    (path,) = out.glob("occlutrace_compute-*.whl")
    names = zipfile.ZipFile(path).namelist()
    assert "occlutrace_compute/meshes/native.py" in names
    assert not [n for n in names if "_textscan" in n and n.endswith(".so")]


def test_installed_wheel_finds_its_kernels(wheel, tmp_path):
    """Installed from the wheel (no source checkout beside it), kernel_files resolves the
    sources under the environment's share/occlutrace/kernels."""
    env = tmp_path / "env"
    venv.create(env, with_pip=False)
    py = env / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (module,) = env.glob("lib/python*/site-packages/occlutrace_compute/nn/kernel_files.py")
    code = (
        f"import importlib.util as u; s = u.spec_from_file_location('kf', r'{module}'); m = u.module_from_spec(s); "
        "s.loader.exec_module(m); print(m.kernel_path('grid_knn.cu')); "
        "assert '#include \"' not in m.kernel_source('grid_knn.cu')"  # the shared header found there too
    )
    found = subprocess.run(
        [str(py), "-c", code], check=True, capture_output=True, text=True, timeout=60, cwd=tmp_path
    ).stdout.strip()  # not the checkout: its egg-info would answer
    assert Path(found) == env / "share" / "occlutrace" / "kernels" / "grid_knn.cu"
    assert Path(found).read_text() == (REPO / "kernels" / "grid_knn.cu").read_text()
