"""Confidence drift: histograms of top confidence and their population stability index."""

from __future__ import annotations

import numpy as np
import pytest

from bucketvision.infra.confidence import (
    DRIFT_PSI,
    confidence_histogram,
    drift_report,
    population_stability_index,
    top_confidence,
)
from bucketvision.worker.summary import build_summary


def test_the_histogram_has_ten_bins_and_one_falls_in_the_last() -> None:
    assert confidence_histogram([0.0, 0.05, 0.1, 0.55, 0.999, 1.0]) == [
        2,
        1,
        0,
        0,
        0,
        1,
        0,
        0,
        0,
        2,
    ]


def test_psi_is_zero_for_the_same_shape_and_grows_with_the_shift() -> None:
    rng = np.random.default_rng(0)
    sure = confidence_histogram(rng.beta(20, 1, 5000))  # most near 1
    same = confidence_histogram(rng.beta(20, 1, 800))
    unsure = confidence_histogram(rng.beta(2, 2, 800))  # spread out: a shifted population
    assert population_stability_index(sure, [4 * c for c in sure]) == pytest.approx(0, abs=1e-3)
    assert population_stability_index(sure, same) < 0.05 < DRIFT_PSI
    assert population_stability_index(sure, unsure) > 1.0
    assert population_stability_index([], same) is None
    assert population_stability_index(sure, [0] * 10) is None


def test_the_report_marks_drift_only_above_the_line() -> None:
    reference = [0, 0, 0, 0, 0, 0, 0, 0, 10, 90]
    assert drift_report(reference, [0, 0, 0, 0, 0, 0, 0, 0, 11, 89])["drift"] is False
    shifted = drift_report(reference, [10, 10, 10, 10, 10, 10, 10, 10, 10, 10])
    assert shifted["drift"] is True and shifted["psi"] > DRIFT_PSI
    assert drift_report(None, reference) == {
        "histogram": reference,
        "reference": None,
        "psi": None,
        "drift": False,
    }


def test_top_confidence_by_task() -> None:
    assert top_confidence("classify", {"label": "3", "score": 0.7}) == 0.7
    boxes = {"detections": [{"score": 0.4}, {"score": 0.9}]}
    assert top_confidence("detect", boxes) == 0.9
    assert top_confidence("detect", {"detections": []}) is None
    assert top_confidence("segment", {"confidence": 0.8}) == 0.8
    assert top_confidence("segment", {"pixel_fraction": {}}) is None  # a class map
    assert top_confidence("classify", None) is None


def test_a_job_summary_compares_its_histogram_with_the_cards() -> None:
    lines = [
        {"key": f"k{i}", "status": "ok", "result": {"label": "1", "score": score},
         "latency_ms": 1.0, "attempts": 1, "error": None}
        for i, score in enumerate([0.35, 0.45, 0.55, 0.65, 0.75])
    ]  # fmt: skip
    lines.append({"key": "bad", "status": "error", "result": None, "latency_ms": 1.0,
                  "attempts": 1, "error": {"type": "X", "message": "m"}})  # fmt: skip
    record = {
        "job_id": "J", "task": "classify", "model": "m@v1", "input": "s3://b/i/",
        "output": "s3://b/o/", "total": 6, "submitted_at": 1000.0,
        "confidence_reference": "[0, 0, 0, 0, 0, 0, 0, 0, 5, 95]",
    }  # fmt: skip
    confidence = build_summary(record, lines, finished_at=1001.0)["confidence"]
    assert confidence["histogram"] == [0, 0, 0, 1, 1, 1, 1, 1, 0, 0]
    assert confidence["reference"] == [0, 0, 0, 0, 0, 0, 0, 0, 5, 95]
    assert confidence["drift"] is True
