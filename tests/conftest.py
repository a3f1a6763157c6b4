"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch


def _has_cuda() -> bool:
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# --- storage: a real S3 server (moto_server on 127.0.0.1); see tests/s3server.py ---
from s3server import s3_bucket, s3_server  # noqa: E402,F401
