"""Behaviour check for refactors of the registration code: same inputs, bit-identical outputs.

Runs `register` on two generated pairs (clean; changed with partial overlap, and that one again with
a forced local search around the answer), `register_batch` on both at once, one pair with
landmarks only, and `register_bite` on a two-bite case (both bites: the reconciling path; one
bite with `settle`). Every matrix and metric is saved, or compared with a saved run.

Usage:
  python bench/refactor_check.py --save /tmp/before.npz      # on the code before the refactor
  python bench/refactor_check.py --compare /tmp/before.npz   # after: exit 1 unless all equal
Generated cases are cached as pickles (--cache, default /tmp/refactor_check_cases). ~1 min.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _data import pickled

from occlutrace_compute.registration import RegistrationOptions, register, register_batch
from occlutrace_compute.registration.bite import register_bite
from occlutrace_compute.synth import make_bite_case
from occlutrace_compute.synth.cases import make_pair_case


def _options(**changes) -> RegistrationOptions:
    """Flat field names on the grouped options (#17) and on the flat ones before them."""
    if hasattr(RegistrationOptions, "updated"):
        return RegistrationOptions().updated(**changes)
    return RegistrationOptions(**changes)


FAST = _options(fine_points=8000, fixed_points=12000)


def _cached(cache: Path, name: str, make):
    def quiet():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return make()

    return pickled(cache / f"{name}.pkl", quiet)


def _pair_fields(prefix: str, r) -> dict[str, np.ndarray]:
    out = {
        f"{prefix}.matrix": np.asarray(r.matrix),
        f"{prefix}.outliers": r.outlier_mask,
        f"{prefix}.samples": r.moving_samples,
    }
    for k in (
        "rmse_mm",
        "fitness",
        "iterations",
        "converged",
        "confidence",
        "doubtful",
        "trimmed_error_mm",
        "runner_up_score_ratio",
        "hypotheses",
    ):
        # (trimmed_error_mm was rmse_mm under a second name before #17)
        out[f"{prefix}.{k}"] = np.asarray(getattr(r, k) if hasattr(r, k) else r.rmse_mm)
    out[f"{prefix}.regions"] = np.asarray(
        [[*c.centroid_mm, c.n_points, c.area_mm2, c.mean_deviation_mm] for c in r.changed_regions]
    ).reshape(-1, 6)
    return out


def _bite_fields(prefix: str, r) -> dict[str, np.ndarray]:
    out = {
        f"{prefix}.T_upper_lower": r.T_upper_lower,
        f"{prefix}.T_upper_bites": np.stack(r.T_upper_bites),
        f"{prefix}.T_lower_bites": np.stack(r.T_lower_bites),
        f"{prefix}.settle": r.settle_translation_mm,
    }
    for k in (
        "lower_rmse_mm",
        "lower_fitness",
        "bite_disagreement_mm",
        "confidence",
        "doubtful",
        "interpenetration_before_mm",
        "interpenetration_after_mm",
    ):
        out[f"{prefix}.{k}"] = np.asarray(getattr(r, k))
    for i, f in enumerate(r.fits):
        for band in ("upper", "lower"):
            b = getattr(f, band)
            T_arch_bite = b.T_arch_bite if hasattr(b, "T_arch_bite") else b.T  # (named T before #17)
            out[f"{prefix}.fit{i}.{band}"] = np.asarray([*T_arch_bite.ravel(), b.rmse_mm, b.fitness, b.band_share])
        out[f"{prefix}.fit{i}.pair"] = np.asarray([f.pair.score, f.pair.runner_up_ratio])
    return out


def run(cache: Path) -> dict[str, np.ndarray]:
    clean = _cached(
        cache, "pair_clean_1", lambda: make_pair_case(1, "clean", (0.6, 1.0), noise_mm=0.015, spacing_mm=0.4)
    )
    changed = _cached(
        cache, "pair_changed_2", lambda: make_pair_case(2, "changed", (0.35, 0.6), noise_mm=0.015, spacing_mm=0.4)
    )
    bite = _cached(cache, "bite_3", lambda: make_bite_case(3, n_bites=2, spacing_mm=0.3))
    out: dict[str, np.ndarray] = {}
    t = time.perf_counter()
    out |= _pair_fields("clean", register(clean.fixed, clean.moving, FAST, device="cpu"))
    changed_r = register(changed.fixed, changed.moving, FAST, device="cpu")
    out |= _pair_fields("changed", changed_r)
    for i, r in enumerate(
        register_batch([(clean.fixed, clean.moving), (changed.fixed, changed.moving)], FAST, device="cpu")
    ):
        out |= _pair_fields(f"batch{i}", r)
    idx = np.random.default_rng(0).choice(clean.moving.n_vertices, 6, replace=False)
    mov = clean.moving.vertices[idx]
    fix = mov @ clean.T_fixed_moving[:3, :3].T + clean.T_fixed_moving[:3, 3]
    lm_opt = _options(fine_points=8000, fixed_points=12000, fpfh_hypotheses=0, axis_hypotheses=0)
    out |= _pair_fields("landmarks", register(clean.fixed, clean.moving, lm_opt, landmarks=(mov, fix), device="cpu"))
    # Every answer counts as doubtful: the local search around it runs (rounds stop early on no gain).
    searched = register(
        changed.fixed, changed.moving, _options(fine_points=8000, fixed_points=12000, min_confidence=1.01), device="cpu"
    )
    out |= _pair_fields("searched", searched)
    print(f"pairs: {time.perf_counter() - t:.1f} s (forced local search: hypotheses={searched.hypotheses})", flush=True)
    t = time.perf_counter()
    out |= _bite_fields("bite2", register_bite(bite.upper, bite.lower, bite.bites, device="cpu"))
    out |= _bite_fields("bite1", register_bite(bite.upper, bite.lower, [bite.bites[1]], settle=True, device="cpu"))
    print(f"bites: {time.perf_counter() - t:.1f} s", flush=True)
    return out


def compare(now: dict[str, np.ndarray], before: dict[str, np.ndarray]) -> bool:
    same = True
    for k in sorted(set(now) | set(before)):
        if k not in now or k not in before:
            print(f"MISSING {k}")
            same = False
            continue
        a, b = np.asarray(now[k]), np.asarray(before[k])
        if a.shape != b.shape:
            print(f"SHAPE {k}: {a.shape} vs {b.shape}")
            same = False
        elif not np.array_equal(a, b):
            diff = np.max(np.abs(a.astype(float) - b.astype(float))) if a.size else 0.0
            print(f"DIFF {k}: max |delta| {diff:.3g}")
            same = False
    print("bit-identical" if same else "NOT identical", f"({len(before)} arrays)")
    return same


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", type=Path)
    group.add_argument("--compare", type=Path)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/refactor_check_cases"))
    args = ap.parse_args()
    now = run(args.cache)
    if args.save:
        np.savez(args.save, **now)
        print(f"saved {len(now)} arrays to {args.save}")
        return
    with np.load(args.compare) as f:
        before = dict(f)
    sys.exit(0 if compare(now, before) else 1)


if __name__ == "__main__":
    main()
