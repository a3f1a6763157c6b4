"""Bite registration accuracy and time on synthetic bite cases (occlutrace_compute.synth).

Each seed is generated once with two bites (left + right) and registered twice: with one bite
(left on even seeds, right on odd ones) and with both. Error = point-wise RMS of the lower ->
upper pose over the lower arch's vertices (um); success = under 50 um. Also counts doubtful
verdicts (wanted on failures, unwanted on successes), and a few bites from ANOTHER case, which
must all come back doubtful.

Usage: python bench/bench_bite.py [--seeds 50] [--first 100] [--spacing 0.15] [--cache DIR] [--settle]
Generation is slow (~5-10 s a case at 0.15 mm); --cache keeps generated cases as pickles.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _data import pickled

from occlutrace_compute.registration.bite import register_bite
from occlutrace_compute.synth import BiteCase, make_bite_case, pointwise_rms_um

SUCCESS_UM = 50.0


def _case(seed: int, spacing: float, cache: Path | None) -> BiteCase:
    path = cache / f"case_{spacing}_2_{seed}.pkl" if cache else None
    return pickled(path, lambda: make_bite_case(seed, n_bites=2, spacing_mm=spacing))


def _summary(label: str, errors: list[float], doubtful: list[bool], wall: list[float], cpu: list[float]) -> None:
    e = np.asarray(errors)
    d = np.asarray(doubtful)
    ok = e < SUCCESS_UM
    print(
        f"{label}: n={e.size} success(<{SUCCESS_UM:.0f} um)={ok.mean():.1%} median={np.median(e):.1f} um "
        f"p95={np.percentile(e, 95):.1f} um max={e.max():.1f} um | doubtful: on failures {int((d & ~ok).sum())}/{int((~ok).sum())}, "
        f"on successes {int((d & ok).sum())}/{int(ok.sum())} | time/case wall median {np.median(wall):.1f} s "
        f"(max {max(wall):.1f}), CPU median {np.median(cpu):.1f} s",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--first", type=int, default=100)
    ap.add_argument("--spacing", type=float, default=0.15)
    ap.add_argument("--foreign", type=int, default=5, help="bites from another case to check the doubtful verdict")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--settle", action="store_true")
    args = ap.parse_args()

    stats: dict[int, tuple[list, list, list, list]] = {1: ([], [], [], []), 2: ([], [], [], [])}
    seeds = list(range(args.first, args.first + args.seeds))
    for seed in seeds:
        case = _case(seed, args.spacing, args.cache)
        for bites in ([case.bites[seed % 2]], case.bites):
            w0, c0 = time.perf_counter(), time.process_time()
            r = register_bite(case.upper, case.lower, bites, settle=args.settle)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            err = pointwise_rms_um(r.T_upper_lower, case.T_upper_lower, case.lower.vertices)
            for lst, v in zip(stats[len(bites)], (err, r.doubtful, wall, cpu)):
                lst.append(v)
            print(
                f"seed {seed} bites {len(bites)}: error {err:.1f} um, confidence {r.confidence:.2f}, doubtful {r.doubtful} "
                f"{r.reason!r}, penetration {r.interpenetration_before_mm:.3f} -> {r.interpenetration_after_mm:.3f} mm, "
                f"{wall:.1f} s wall, {cpu:.1f} s CPU",
                flush=True,
            )
    for n in (1, 2):
        _summary(f"{n} bite{'s' if n > 1 else ''}", *stats[n])

    flagged = 0
    for k in range(min(args.foreign, len(seeds) - 1)):
        case, other = _case(seeds[k], args.spacing, args.cache), _case(seeds[k + 1], args.spacing, args.cache)
        r = register_bite(case.upper, case.lower, [other.bites[0]])
        flagged += r.doubtful
        print(f"foreign bite (case {seeds[k + 1]} on case {seeds[k]}): doubtful {r.doubtful} {r.reason!r}", flush=True)
    if args.foreign:
        print(f"foreign bites flagged doubtful: {flagged}/{min(args.foreign, len(seeds) - 1)}")


if __name__ == "__main__":
    main()
