"""The last stages: mid and fine levels with duels between close finalists, and the local
search around doubtful answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from occlutrace_compute.registration import hypotheses as hyp
from occlutrace_compute.registration.batch import Clouds, pack
from occlutrace_compute.registration.geometry import rotation_angle_deg
from occlutrace_compute.registration.icp import IcpOutcome, Scores, refine, score
from occlutrace_compute.registration.matcher import Matcher
from occlutrace_compute.registration.options import RegistrationOptions
from occlutrace_compute.registration.prepare import Prepared, scan_centres
from occlutrace_compute.registration.result import RegistrationResult
from occlutrace_compute.registration.schedule import fine_level, mid_level
from occlutrace_compute.registration.selection import PER_PAIR, Choices
from occlutrace_compute.registration.verdict import result
from occlutrace_compute.timing import stopwatch


@dataclass
class Final:
    """Fine-level outcome: item `chosen[p]` is pair p's answer; runner-up ratio/angle per pair
    (numpy arrays from `selection.PER_PAIR`'s choices, tensors from `batched.select.BATCHED`'s)."""

    out: IcpOutcome
    scores: Scores
    fine_m: Clouds
    chosen: Any
    ratio: Any
    angle: Any

    def score_of(self, p: int) -> float:
        return float(self.scores.score[int(self.chosen[p])])

    def result(self, p: int, prep: Prepared, opt: RegistrationOptions, n_hyp: int) -> RegistrationResult:
        return result(
            int(self.chosen[p]),
            prep,
            self.out,
            self.scores,
            self.fine_m,
            opt,
            float(self.ratio[p]),
            float(self.angle[p]),
            n_hyp,
        )


def mid_and_fine(
    prepared: list[Prepared],
    pair_of: torch.Tensor,
    T_fixed_moving: torch.Tensor,
    opt: RegistrationOptions,
    dev: torch.device,
    stages: dict[str, float],
    finalists: int = 2,
    margin: float | None = None,
    reach_mm: float | None = None,
    centres: Any = None,
    choices: Choices = PER_PAIR,
) -> Final:
    """Mid level: the given poses (T_fixed_moving, one per item of `pair_of`) refined and
    ranked, the best `finalists` distinct ones per pair kept. Fine level: the winner at full
    density, with every finalist whose mid score is within `margin` (default: ambiguity_margin)
    of it: under heavy change the true pose and a rival 3-4 deg off score alike at 0.6 mm, while
    over 20k samples and a 0.1 mm inlier band the true one wins. `reach_mm`: first
    correspondence cut of the mid level (default 1.5 coarse voxels). `centres`: the moving
    centroids in `choices`' kind (default `scan_centres(prepared)`, numpy); `choices`: how items
    are chosen (per pair in numpy, or `batched.select.BATCHED` as batched tensor ops)."""
    with stopwatch(stages, "mid"):
        centres = scan_centres(prepared) if centres is None else centres
        mid_m = pack([p.moving.mid for p in prepared], dev)
        mid_f = pack([p.fixed.mid for p in prepared], dev)
        matcher = Matcher(mid_f, opt.runtime.knn_backend)
        mid = mid_level(opt, reach_mm)
        out = refine(mid_m.index(pair_of), pair_of, T_fixed_moving, matcher, mid)
        sc = score(mid_m.index(pair_of), pair_of, out.T_fixed_moving, matcher, mid, track=True)
        ranked = choices.top_distinct(pair_of, out.T_fixed_moving, sc.score, finalists, centres)
        items, ratio, angle = choices.pick_finalists(
            pair_of,
            ranked,
            out.T_fixed_moving,
            sc.score,
            len(prepared),
            opt.verdict.ambiguity_margin if margin is None else margin,
        )

    with stopwatch(stages, "fine"):
        pair_of = pair_of[items]
        fine_m = pack([p.moving.fine for p in prepared], dev).index(pair_of)
        fine_f = pack([p.fixed.fine for p in prepared], dev)
        matcher = Matcher(fine_f, opt.runtime.knn_backend)
        fine = fine_level(opt)
        out = refine(fine_m, pair_of, out.T_fixed_moving[items], matcher, fine)
        sc = score(fine_m, pair_of, out.T_fixed_moving, matcher, fine, track=True)
        chosen, ratio, angle = choices.fine_duels(pair_of, out.T_fixed_moving, sc.score, ratio, angle, centres)
    return Final(out, sc, fine_m, chosen, ratio, angle)


def search_around_doubtful(
    prepared: list[Prepared],
    results: list[RegistrationResult],
    first: Final,
    opt: RegistrationOptions,
    dev: torch.device,
    n_hyp: list[int],
) -> None:
    """Search harder where the answer is doubtful: when changed anatomy covers most of the
    overlap the true pose can sit in a narrow basin ~1 mm / 3-4 deg beside the one found, which
    no global hypothesis reached. Random rigid steps around the answer (about its centroid) go
    through the mid level (correspondences cut at two step sigmas) and the fine level again; a
    better fine score replaces the answer, and the old answer, if a different pose, becomes a
    rival. Up to `local_search_rounds` rounds, each from the last improvement. In place."""
    todo = [i for i, r in enumerate(results) if r.confidence < opt.verdict.min_confidence]
    best = {i: first.score_of(i) for i in todo}
    for rnd in range(opt.local_search.rounds if opt.local_search.starts > 0 else 0):
        if not todo:
            return
        sub = [prepared[i] for i in todo]
        centres = scan_centres(sub)
        starts_fixed_moving = [
            hyp.around(
                results[i].T_fixed_moving,
                centres[k],
                opt.local_search.starts,
                opt.local_search.step_deg,
                opt.local_search.step_mm,
                opt.runtime.seed + rnd,
            )
            for k, i in enumerate(todo)
        ]
        pair_of = torch.tensor([k for k, s in enumerate(starts_fixed_moving) for _ in range(len(s))], device=dev)
        found = mid_and_fine(
            sub,
            pair_of,
            torch.from_numpy(np.concatenate(starts_fixed_moving)).to(dev),
            opt,
            dev,
            {},
            finalists=4,
            margin=1.0,
            reach_mm=2 * opt.local_search.step_mm,
        )
        improved = []
        for k, i in enumerate(todo):
            old, new = best[i], found.score_of(k)
            if new <= old:
                continue
            T_fixed_moving = found.out.T_fixed_moving[int(found.chosen[k])].cpu().numpy()
            if not hyp.same_pose(results[i].T_fixed_moving, T_fixed_moving, centres[k]) and old / new > found.ratio[k]:
                found.ratio[k], found.angle[k] = (
                    old / new,
                    rotation_angle_deg(results[i].T_fixed_moving, T_fixed_moving),
                )
            results[i] = found.result(k, sub[k], opt, n_hyp[i] + (rnd + 1) * opt.local_search.starts)
            best[i] = new
            if results[i].confidence < opt.verdict.min_confidence:
                improved.append(i)
        todo = improved
