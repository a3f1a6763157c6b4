"""What a format parser hands to validation: raw arrays plus what the file said about itself."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Parsed:
    """Geometry exactly as read (no validation yet) and the embedded metadata found.

    vertices (N, 3) float64, faces (M, 3) int64 (polygons already fan-triangulated, indices not
    yet range-checked), colors (N, 4) uint8 or None.
    """

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray | None = None
    metadata: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    uv: np.ndarray | None = None  # (N, 2) float64 per vertex
    texture_ref: str | None = None  # OBJ: the mtllib file name; PLY: the TextureFile name
    # (M,) bool: validate._non_degenerate of faces, where the parser computed it on the way
    # (STL's C++ passes: binary records, the ASCII fast path's face checks); None: validate computes it
    keep: np.ndarray | None = None


def printable(text: str, limit: int = 500) -> str:
    """A metadata value safe to print on one line: control characters replaced, length capped."""
    cleaned = "".join(c if c.isprintable() else "?" for c in text.strip())
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


def colors_to_uint8(channels: list[np.ndarray], scale_max: float) -> np.ndarray:
    """(N, 4) uint8 RGBA from 3 or 4 channel arrays; floats in [0, scale_max] are rescaled."""
    n = len(channels[0])
    out = np.full((n, 4), 255, dtype=np.uint8)
    for i, ch in enumerate(channels[:4]):
        if ch.dtype == np.uint8:
            out[:, i] = ch
            continue
        vals = np.asarray(ch, dtype=np.float64)
        if scale_max != 255.0:
            vals = vals * (255.0 / scale_max)
        with np.errstate(invalid="ignore"):
            out[:, i] = np.clip(np.nan_to_num(np.rint(vals)), 0, 255).astype(np.uint8)
    return out


def report(field: str, samples: list[str], count: int, nbytes: int, what: str) -> list[tuple[str, str]]:
    """Metadata entries for a field found many times: up to 10 distinct sample values, then one
    summary `"<count> <what>, <nbytes> bytes"` (inspect's "which field, how many, how many bytes")."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for s in samples:
        p = printable(s)
        if p and p not in seen and len(seen) < 10:
            seen.add(p)
            out.append((field, p))
    out.append((field, f"{count} {what}, {nbytes} bytes"))
    return out
