"""Regenerate samples/: small synthetic demo cases with ground truth (a few MB in all).

    python scripts/make_samples.py [--out samples]

case-0001-pair     clean scan/rescan pair, binary PLY
case-0002-changed  scan/rescan with clinical changes, binary STL (+ moving_unchanged.npy)
case-0003-bite     upper, lower and one buccal bite scan, binary PLY
Coarse spacing (0.5 mm) keeps the files small; the generator's default is 0.15 mm.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from occlutrace_compute.synth import make_bite_case, make_pair_case, write_bite_case, write_pair_case

SPACING_MM = 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "samples")
    out = parser.parse_args().out
    for name in ("case-0001-pair", "case-0002-changed", "case-0003-bite"):
        shutil.rmtree(out / name, ignore_errors=True)
    write_pair_case(
        make_pair_case(101, "clean", overlap=(0.7, 0.8), spacing_mm=SPACING_MM), out / "case-0001-pair", fmt="ply"
    )
    write_pair_case(
        make_pair_case(102, "changed", overlap=(0.7, 0.8), spacing_mm=SPACING_MM), out / "case-0002-changed", fmt="stl"
    )
    write_bite_case(make_bite_case(103, n_bites=1, spacing_mm=SPACING_MM), out / "case-0003-bite", fmt="ply")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
