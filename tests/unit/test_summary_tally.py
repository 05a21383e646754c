"""worker.summary.SummaryTally: a summary tallied line by line, in bounded memory.

The finaliser streams a job's manifest once; the tally counts every line exactly
and keeps a uniform sample of at most ``sample_limit`` latencies for the
percentiles (exact while the job has no more lines than that).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bucketvision.worker.summary import SummaryTally, build_summary, percentiles

LINES = 10_000


def _record() -> dict[str, Any]:
    return {
        "job_id": "20260101T000000Z-abcdef01",
        "state": "running",
        "task": "classify",
        "model": "digits@v1",
        "input": "s3://b/in/",
        "output": "s3://b/out/",
        "total": LINES,
        "submitted_at": 1000.0,
        "started_at": 1001.0,
    }


def _lines() -> list[dict[str, Any]]:
    """10,000 lines, latencies 1 to 10,000 ms in rising order (as a slowing job would have)."""
    lines = []
    for index in range(LINES):
        status = "ok" if index % 10 < 7 else "error" if index % 10 < 9 else "skipped"
        line: dict[str, Any] = {"key": f"in/{index}.png", "status": status}
        line["latency_ms"] = float(index + 1)
        line["attempts"] = 2 if index % 50 == 0 else 1
        if status == "error":
            line["error"] = {
                "type": "DecodeError" if index % 10 == 7 else "Timeout",
                "message": "x",
            }
        lines.append(line)
    return lines


def _tally(limit: int, lines: list[dict[str, Any]]) -> SummaryTally:
    tally = SummaryTally("classify", sample_limit=limit)
    for line in lines:
        tally.add(line)
    return tally


def test_a_small_sample_counts_exactly_and_estimates_the_percentiles() -> None:
    lines = _lines()
    tally = _tally(100, lines)
    summary = tally.summary(_record(), finished_at=1100.0)
    assert (summary["ok"], summary["error"], summary["skipped"]) == (7000, 2000, 1000)
    assert summary["errors_by_type"] == {"DecodeError": 1000, "Timeout": 1000}
    assert summary["redelivered_items"] == 200 and tally.lines == LINES
    assert summary["images_per_second"] == 100.0  # 10,000 lines in 100 s
    assert len(tally._sample) <= 100  # memory for the sample, not for the job

    true = percentiles([line["latency_ms"] for line in lines])  # 5000.5, 9500.05, 9900.01
    estimated = summary["latency_ms"]
    # A uniform sample of 100 from 1..10,000: standard errors about 500, 220 and 100 ms.
    # Keeping the first 100 lines instead would give about 50, 95 and 99.
    assert estimated["p50"] == pytest.approx(true["p50"], abs=1500)
    assert estimated["p95"] == pytest.approx(true["p95"], abs=700)
    assert estimated["p99"] == pytest.approx(true["p99"], abs=500)
    assert estimated["p50"] < estimated["p95"] <= estimated["p99"] <= 10_000


def test_every_line_has_the_same_odds_of_being_in_the_sample() -> None:
    kept = np.concatenate(
        [
            _tally_seeded(seed, 100)._sample[:100]
            for seed in range(20)  # 2,000 draws over the lines 1..10,000
        ]
    )
    tenths = np.bincount(((kept - 1) // 1000).astype(int), minlength=10)
    assert tenths.sum() == 2000 and tenths.min() > 120 and tenths.max() < 280, tenths


def _tally_seeded(seed: int, limit: int) -> SummaryTally:
    tally = SummaryTally(sample_limit=limit, seed=seed)
    for index in range(LINES):
        tally.add({"status": "ok", "latency_ms": float(index + 1)})
    return tally


def test_up_to_the_sample_limit_the_percentiles_are_exact() -> None:
    lines = _lines()
    tally = _tally(LINES, lines)
    exact = build_summary(_record(), lines, finished_at=1100.0)
    assert tally.summary(_record(), finished_at=1100.0) == exact
    assert exact["latency_ms"] == percentiles([line["latency_ms"] for line in lines])


def test_an_empty_tally_has_no_percentiles() -> None:
    summary = SummaryTally(sample_limit=100).summary(_record(), finished_at=1100.0)
    assert summary["latency_ms"] == {"p50": None, "p95": None, "p99": None}
    assert (summary["ok"], summary["error"], summary["skipped"]) == (0, 0, 0)
