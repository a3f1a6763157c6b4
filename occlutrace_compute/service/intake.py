"""Validation and de-identification of everything a client sends before it is stored.

Case labels and file names go through the privacy checks (they are shown to people and end up
in keys); mesh bytes are validated and stripped of every embedded field by `sanitize_bytes`.
All failures raise `InputRejected` naming the label or file and the problem.
"""

from __future__ import annotations

import posixpath
from typing import Sequence

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes import Limits, sanitize_bytes
from occlutrace_compute.privacy import check_filename, ensure_anonymous
from occlutrace_compute.storage.keys import MAX_NAME_LENGTH, check_id


def checked_case(case: str, allow: Sequence[str] = ()) -> str:
    check_id("case label", case)
    ensure_anonymous(case, f"case label {case!r}", allow)
    return case


def checked_file_name(raw: str, allow: Sequence[str] = ()) -> str:
    """The base name of an uploaded file (clients send paths, sometimes Windows ones)."""
    name = posixpath.basename(raw.replace("\\", "/")).strip()
    if not name:
        raise InputRejected("file name", "missing: name the uploaded file")
    check_id("file name", name, MAX_NAME_LENGTH)
    check_filename(name, allow)
    return name


def clean_mesh(data: bytes, name: str, max_bytes: int) -> bytes:
    """The sanitised mesh bytes, ready to store; InputRejected for anything unusable."""
    if len(data) > max_bytes:
        raise InputRejected(name, f"file too large: {len(data)} bytes > limit {max_bytes}")
    return sanitize_bytes(data, name, Limits(max_bytes=max_bytes))
