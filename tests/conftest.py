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
