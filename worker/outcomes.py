"""What a batch delivery yields, and the outcomes in which every item is an error.

A batch that ran has its lines from :mod:`worker.pipeline` (or :mod:`worker.generation`);
a batch whose model would not load, whose worker kept dying, or that could not ride out
an S3 outage has one error line per item, built here, so every key still gets its line.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bucketvision.infra.outputs import manifest_line
from bucketvision.models.shadow import ShadowTally


@dataclass
class BatchOutcome:
    """A delivery's manifest lines, stage seconds and the job's failure (a model that failed)."""

    lines: list[dict[str, Any]]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    failure: str | None = None
    stopped: bool = False  # its job was cancelled: only the items that ran have a line
    shadow: ShadowTally | None = None  # a shadowed batch: the candidate's comparison

    def dead_lettered(self) -> int:
        """How many items were dead-lettered (their worker kept dying)."""
        errors = (line.get("error") or {} for line in self.lines)
        return sum(1 for error in errors if error.get("type") == "DeadLetter")

    def counts(self) -> dict[str, int]:
        """Manifest lines by status (ok, error, skipped)."""
        found = {"ok": 0, "error": 0, "skipped": 0}
        for line in self.lines:
            found[line["status"]] = found.get(line["status"], 0) + 1
        return found


def all_failed(
    message: Any,
    keys: Sequence[str],
    error: tuple[str, str],
    attempt: int,
    started: float,
    failure: str | None,
) -> BatchOutcome:
    """One error line per key, all for the same reason (``failure``: the job's, if any)."""
    latency = (time.perf_counter() - started) * 1000.0
    lines = [
        manifest_line(
            key,
            status="error",
            output=None,
            result=None,
            error=error,
            model=message.model,
            latency_ms=latency,
            attempts=attempt,
        )
        for key in keys
    ]
    return BatchOutcome(lines, {}, failure)


def dead_letter(
    message: Any, attempt: int, deaths: int, max_attempts: int, *, alone: bool = False
) -> BatchOutcome:
    """Items whose worker died ``deaths`` >= ``max_attempts`` times: every one an error.

    ``alone``: the item ran by itself when its worker died (:mod:`worker.isolation`).
    """
    if alone:
        reason = (
            f"the worker died {deaths} times while processing this image (killed, crashed or "
            f"out of memory; BV_MAX_ATTEMPTS={max_attempts}); it ran alone, so it is the "
            "cause and is dead-lettered instead of retried, and the rest of its batch ran; "
            "check the image (it may crash the decoder or the model) or give the workers memory"
        )
    else:
        reason = (
            f"the worker running this batch died {deaths} times (killed, crashed or out of "
            f"memory; BV_MAX_ATTEMPTS={max_attempts}), so it is dead-lettered instead of "
            "retried; look for an item that crashes the decoder or the model, or give the "
            "workers more memory"
        )
    return all_failed(
        message, message.keys, ("DeadLetter", reason), attempt, time.perf_counter(), None
    )


def gave_up(message: Any, attempt: int, error: Exception, seconds: float) -> BatchOutcome:
    """A batch that could not run through an outage of ``seconds``: every item an error."""
    reason = (
        f"storage stayed unavailable for {seconds:.0f} s (BV_OUTAGE_SECONDS), so the batch "
        f"was given up; submit these keys again once S3 answers: {error}"
    )
    error_type = type(error).__name__
    return all_failed(
        message, message.keys, (error_type, reason), attempt, time.perf_counter(), None
    )
