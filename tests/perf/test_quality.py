"""The issue's quality targets, as a slow test (`pytest -m slow tests/perf/test_quality.py`).

Runs the same thing as `make bench-quality`: every family trained through
`bucketvision train` with default settings, evaluated on held-out data.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.perf.quality import TIME_LIMIT_SECONDS, run_quality

pytestmark = pytest.mark.slow


def test_every_family_reaches_its_target_in_time(tmp_path: Path) -> None:
    figures = run_quality(["classify", "detect", "segment", "generate"], tmp_path)
    assert figures["classify"]["accuracy"] >= 0.98
    assert figures["detect"]["map50"] >= 0.9
    assert figures["segment"]["miou"] >= 0.9
    assert figures["generate"]["judge_mean_confidence"] >= 0.9
    assert figures["generate"]["judge_classes_present"] == 10
    assert all(row["wall_seconds"] < TIME_LIMIT_SECONDS for row in figures.values()), figures
