"""A job's ``summary.json``, tallied line by line as its manifest is composed.

The finaliser streams a job's manifest lines once (:mod:`worker.manifest_parts`);
:class:`SummaryTally` counts them as they pass, so a summary needs memory for its
counts and a bounded sample of latencies, not for the manifest. Latency
percentiles are exact up to ``LATENCY_SAMPLE`` items and computed on a uniform
random sample of that many beyond (reservoir sampling). The histogram of top
confidence is compared with the model card's (:mod:`infra.confidence`): drift.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from bucketvision.infra.confidence import (
    BINS,
    CONFIDENCE_TASKS,
    bin_of,
    drift_report,
    top_confidence,
)
from bucketvision.infra.job_life import STAGES
from bucketvision.infra.vocabulary import CANCELLING

LATENCY_SAMPLE = 1_000_000  # latencies kept for the percentiles (8 MB)


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def percentiles(values: Sequence[float] | np.ndarray) -> dict[str, float | None]:
    """p50, p95 and p99 of ``values`` in milliseconds (rounded to a microsecond)."""
    array = np.asarray(values, dtype=np.float64)
    if not array.size:
        return {"p50": None, "p95": None, "p99": None}
    p50, p95, p99 = np.percentile(array, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3)}


class SummaryTally:
    """Counts, error types, redeliveries and a latency sample of the lines seen so far."""

    def __init__(
        self, task: str | None = None, sample_limit: int = LATENCY_SAMPLE, seed: int = 0
    ) -> None:
        # The histogram of top confidence (infra/confidence.py), for tasks that have one.
        self.task = task if task in CONFIDENCE_TASKS else None
        self.confidence = [0] * BINS
        self.counts = {"ok": 0, "error": 0, "skipped": 0}
        self.errors_by_type: Counter[str] = Counter()
        self.redelivered = 0
        self.lines = 0
        self._sample = np.empty(min(sample_limit, 1024), dtype=np.float64)
        self._limit = sample_limit
        self._random = random.Random(seed)

    def add(self, line: dict[str, Any]) -> None:
        self.counts[line["status"]] += 1
        if line.get("error"):
            self.errors_by_type[line["error"]["type"]] += 1
        if line.get("attempts", 1) > 1:
            self.redelivered += 1
        if self.task and line["status"] == "ok":
            value = top_confidence(self.task, line.get("result"))
            if value is not None:
                self.confidence[bin_of(value)] += 1
        self._keep_latency(float(line["latency_ms"]))
        self.lines += 1

    def _keep_latency(self, value: float) -> None:
        seen = self.lines
        if seen < self._limit:
            if seen == len(self._sample):
                grown = np.empty(min(2 * len(self._sample), self._limit), dtype=np.float64)
                grown[:seen] = self._sample
                self._sample = grown
            self._sample[seen] = value
            return
        slot = self._random.randrange(seen + 1)  # Algorithm R: each line kept with equal odds
        if slot < self._limit:
            self._sample[slot] = value

    def summary(self, record: dict[str, Any], finished_at: float) -> dict[str, Any]:
        """The job's summary (docs/schemas/summary.schema.json) from its record and the lines."""
        submitted = float(record["submitted_at"])
        wall = max(finished_at - submitted, 1e-9)
        state = "failed" if record.get("failure") else "finished"
        if record.get("state") == CANCELLING:  # the manifest holds what ran before it stopped
            state = "cancelled"
        kept = self._sample[: min(self.lines, self._limit)]
        return {
            "job_id": record["job_id"],
            "task": record["task"],
            "model": record["model"],
            "input": record["input"],
            "output": record["output"],
            "state": state,
            "total": int(record["total"]),
            **self.counts,
            "submitted_at": iso(submitted),
            "started_at": iso(record.get("started_at")),
            "finished_at": iso(finished_at),
            "wall_seconds": round(wall, 3),
            "images_per_second": round(self.lines / wall, 2),
            "latency_ms": percentiles(kept),
            "stage_seconds": {
                stage: round(float(record.get(f"stage_{stage}", 0.0)), 3) for stage in STAGES
            },
            # What happened, beyond the counts: why items failed, and how many items ran
            # more than once because their worker died (redelivered batches).
            "errors_by_type": dict(sorted(self.errors_by_type.items())),
            "redelivered_items": self.redelivered,
            **({"failure": record["failure"]} if record.get("failure") else {}),
            **({"retry_of": record["retry_of"]} if record.get("retry_of") else {}),
            **({"not_run": int(record["total"]) - self.lines} if state == "cancelled" else {}),
            **({"confidence": self._drift(record)} if self.task else {}),
        }

    def _drift(self, record: dict[str, Any]) -> dict[str, Any]:
        reference = record.get("confidence_reference")
        return drift_report(json.loads(reference) if reference else None, self.confidence)


def build_summary(
    record: dict[str, Any], lines: Iterable[dict[str, Any]], finished_at: float
) -> dict[str, Any]:
    """The summary of a job whose manifest lines are ``lines``."""
    tally = SummaryTally(str(record["task"]))
    for line in lines:
        tally.add(line)
    return tally.summary(record, finished_at)
