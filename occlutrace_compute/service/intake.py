"""Validation and de-identification of everything a client sends before it is stored.

Case labels and file names go through the privacy checks (they are shown to people and end up
in keys); mesh bytes are validated and stripped of every embedded field by `sanitize_bytes`; a textured
mesh's MTL and PNG/JPEG texture, uploaded as files of the same case, are re-made by
`clean_companion`.
All failures raise `InputRejected` naming the label or file and the problem (`FileTooLarge`, its
subclass, for a file over the limit: the API answers 413 for it, 422 for the others).
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes import Limits, sanitize_bytes
from occlutrace_compute.meshes.texture import COMPANION_SUFFIXES, clean_companion
from occlutrace_compute.privacy import check_filename, ensure_anonymous
from occlutrace_compute.service.errors import FileTooLarge
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


def clean_mesh(data: bytes, name: str, max_bytes: int, allow: Sequence[str] = ()) -> bytes:
    """The sanitised bytes, ready to store; InputRejected for anything unusable.

    Meshes are re-serialised; a textured OBJ/PLY keeps the base name of the MTL/image it names
    (after the same privacy check as an uploaded file name) so the job finds the case's
    uploaded MTL and image. An uploaded MTL is re-written by us (`newmtl texture`, `map_Kd
    <checked image name>`), an uploaded PNG/JPEG re-encoded from its pixels (meshes/texture.py)."""
    if len(data) > max_bytes:
        raise FileTooLarge(name, len(data), max_bytes)
    limits = Limits(max_bytes=max_bytes)

    def checked_ref(ref: str) -> str:
        return checked_file_name(ref, allow)

    if name.lower().endswith(COMPANION_SUFFIXES):
        return clean_companion(data, name, limits, checked_ref)
    return sanitize_bytes(data, name, limits, keep_refs=checked_ref)
