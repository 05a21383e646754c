"""Confidence drift: a job's distribution of top confidence against its model's validation split.

A model card holds the histogram of the top confidence its model gave on its
validation (evaluation) split; a job's summary holds the same histogram over its own
items and the population stability index (PSI) between the two. A PSI above
:data:`DRIFT_PSI` (0.2, the usual "significant shift" line) says the job's images are
not like the ones the model was checked on: the summary marks ``drift``, the worker
raises ``bv_confidence_drift``, ``status`` and the report say so. Pure Python.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

CONFIDENCE_TASKS = ("classify", "detect", "segment")  # generate has no confidence
BINS = 10  # equal-width bins of [0, 1]
DRIFT_PSI = 0.2
# Each bin starts at half an item (additive smoothing), so an empty bin makes PSI neither
# infinite nor huge: a card evaluated on a few dozen items leaves bins empty by chance.
PSEUDO_COUNT = 0.5


def top_confidence(task: str, result: dict[str, Any] | None) -> float | None:
    """The item's top confidence: the top class probability (classify), the best box's score
    (detect; None without a box), the mean top pixel probability (segment)."""
    if not result:
        return None
    if task == "classify":
        score = result.get("score")
        return None if score is None else float(score)
    if task == "detect":
        scores = [float(box["score"]) for box in result.get("detections", [])]
        return max(scores) if scores else None
    confidence = result.get("confidence")
    return None if confidence is None else float(confidence)


def bin_of(value: float) -> int:
    """The histogram bin of a confidence in [0, 1] (1.0 falls in the last bin)."""
    return min(BINS - 1, max(0, int(value * BINS)))


def confidence_histogram(values: Iterable[float]) -> list[int]:
    """Counts of ``values`` in :data:`BINS` equal bins of [0, 1]."""
    counts = [0] * BINS
    for value in values:
        counts[bin_of(value)] += 1
    return counts


def population_stability_index(reference: Sequence[int], observed: Sequence[int]) -> float | None:
    """PSI = sum over bins of (observed share - reference share) * ln(observed / reference).

    Shares are smoothed by :data:`PSEUDO_COUNT` items a bin. None when either histogram
    is empty or they differ in length (nothing to compare).
    """
    total_reference, total_observed = sum(reference), sum(observed)
    if not total_reference or not total_observed or len(reference) != len(observed):
        return None
    smoothing = PSEUDO_COUNT * len(reference)
    psi = 0.0
    for expected_count, actual_count in zip(reference, observed, strict=True):
        expected = (expected_count + PSEUDO_COUNT) / (total_reference + smoothing)
        actual = (actual_count + PSEUDO_COUNT) / (total_observed + smoothing)
        psi += (actual - expected) * math.log(actual / expected)
    return round(psi, 6)


def drift_report(reference: Sequence[int] | None, observed: Sequence[int]) -> dict[str, Any]:
    """The summary's ``confidence``: histogram, the card's, PSI and whether it drifted."""
    psi = population_stability_index(reference, observed) if reference else None
    return {
        "histogram": list(observed),
        "reference": list(reference) if reference else None,
        "psi": psi,
        "drift": psi is not None and psi > DRIFT_PSI,
    }
