"""Synthetic intraoral scans with ground truth, for tests, benchmarks and demos.

- `make_arch(jaw, seed, spacing_mm)`: a full arch (14 teeth with cusps, fossae, grooves,
  embrasures; a gum band with an open lower border) as an open triangle mesh with per-vertex
  FDI labels (0 = gingiva). Canonical frame, shared by both arches of a seed, which are thus
  already in occlusion: x = patient's right, y = anterior, z = superior, mm; occlusal plane
  near z = 0 (see `arch.py` for the construction).
- `make_pair_case`: a scan and a partial rescan of one arch (optionally with clinical changes),
  each in a random scanner frame, with `T_fixed_moving` and a per-vertex unchanged mask.
- `make_bite_case`: upper, lower and buccal bite scans with `T_upper_lower`, `T_upper_bites`
  and the exact occlusal contacts (`ContactTruth`).
- `write_pair_case` / `write_bite_case`: case folders with meshes and `truth.json`.
- `score`: rotation, translation and point-wise errors of an estimated transform.

Scans differ from each other as real ones do: independent grids (spacing jittered, random
phases), ragged borders, holes, and Gaussian noise of `noise_mm` along the normals.
"""

from occlutrace_compute.synth.arch import Arch, make_arch
from occlutrace_compute.synth.cases import BiteCase, PairCase, make_bite_case, make_pair_case
from occlutrace_compute.synth.io import write_bite_case, write_pair_case
from occlutrace_compute.synth.occlusion import ContactRegion, ContactTruth
from occlutrace_compute.synth.score import pointwise_rms_um, rotation_error_deg, translation_error_um

__all__ = [
    "Arch",
    "BiteCase",
    "ContactRegion",
    "ContactTruth",
    "PairCase",
    "make_arch",
    "make_bite_case",
    "make_pair_case",
    "pointwise_rms_um",
    "rotation_error_deg",
    "translation_error_um",
    "write_bite_case",
    "write_pair_case",
]
