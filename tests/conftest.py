"""Shared fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# The client distribution of this repository (clients/python, package occlutrace_client): the
# tests use the checkout's copy, as they do the server package's, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients" / "python"))


def _has_cuda() -> bool:
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# --- registration: synthetic rescans several registration test files share; see tests/registration_cases.py ---
from registration_cases import changed_case, clean_case  # noqa: E402,F401

# --- storage: a real S3 server (moto_server on 127.0.0.1); see tests/s3server.py ---
from s3server import s3_bucket, s3_server  # noqa: E402,F401


@pytest.fixture(scope="session")
def pair_files(tmp_path_factory) -> list[str]:
    """A small clean rescan pair as two binary PLY files (paths of fixed, moving): the align
    command's input in the CLI tests (test_cli_imports, test_registrar)."""
    from occlutrace_compute.meshes import mesh_to_bytes
    from occlutrace_compute.synth import make_pair_case

    case = make_pair_case(3, "clean", overlap=(0.9, 1.0), spacing_mm=0.8)
    folder = tmp_path_factory.mktemp("pair")
    paths = []
    for name, mesh in (("fixed.ply", case.fixed), ("moving.ply", case.moving)):
        (folder / name).write_bytes(mesh_to_bytes(mesh, "ply"))
        paths.append(str(folder / name))
    return paths
