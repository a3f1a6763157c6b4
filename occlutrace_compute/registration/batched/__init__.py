"""The batch path with no per-pair host work between loading and results: every stage of
`register_batch` (hypotheses, selection, ICP levels, verdicts, local search) as tensor ops over the
whole batch, so the number of torch calls and device->host transfers does not grow with the
number of pairs (`counting.OpCounter` measures it)."""

from occlutrace_compute.registration.batched.engine import register_batch

__all__ = ["register_batch"]
