"""One pair job's result as the report and PDF tests feed it (the fields the case page and the
PDF page read), with the case label and any extra fields a test plants."""

from __future__ import annotations


def pair_result(case: str, **extra: object) -> dict:
    return {
        "kind": "pair",
        "case": case,
        "metrics": {"rmse_mm": 0.0264, "fitness": 0.867, "confidence": 1.0, "doubtful": False},
        "deviation": {
            "rms_mm": 0.178,
            "mean_mm": -0.037,
            "median_mm": 0.003,
            "p5_mm": -0.4,
            "p95_mm": 0.059,
            "max_abs_mm": 0.996,
            "within_tolerance_share": 0.795,
            "tolerance_mm": 0.05,
            "overlap_share": 0.938,
            "beyond_max_distance_share": 0.001,
            "max_distance_mm": 1.0,
        },
        "changed_regions": [
            {
                "centroid_mm": [1, 2, 3],
                "area_mm2": 152.6,
                "mean_deviation_mm": 0.664,
                "location": {"text": "upper left anterior"},
            }
        ],
    } | extra
