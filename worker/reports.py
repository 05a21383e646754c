"""What a task reports to the task hooks: one typed record per kind of task.

The plain task functions return these; the thin Celery tasks hand Celery their
``to_json()`` (a task's return value must be JSON), and the hooks
(:mod:`bucketvision.worker.hooks`) read it back with ``from_json``, so both
ends share one definition.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Self

from celery.utils.dispatch import Signal

from bucketvision.infra.messages import known_fields

# Sent by a pool child's finisher (worker.finishing) with ``report=``, the final
# BatchReport of a batch whose task returned before its record (``finishing``).
batch_finished = Signal(name="bv_batch_finished")


class Report:
    """A report as JSON (what Celery carries) and back; unknown fields are ignored."""

    def to_json(self) -> dict[str, Any]:
        report: dict[str, Any] = asdict(self)  # type: ignore[call-overload]
        return report

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Self:
        return cls(**known_fields(cls, body))


@dataclass(frozen=True)
class BatchReport(Report):
    """What one delivery of a job's batch did.

    ``recorded`` is True for the delivery that recorded the batch; ``items`` is
    None when this delivery ran nothing (dropped, or recorded by an earlier one).
    ``finishing``: the task returned before its batch was complete and recorded; the
    child's finisher reports the rest with :data:`batch_finished`.
    """

    job_id: str
    batch: int
    task: str
    model: str
    attempt: int = 1
    dropped: bool = False
    recorded: bool = False
    items: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    dead_lettered_items: int = 0
    job_finished: str | None = None  # the job's final state, if this delivery finalised it
    confidence_psi: float | None = None  # and its drift from the model card (infra/confidence)
    job_seconds: float | None = None  # and its wall time, submission to the end
    finishing: bool = False

    @property
    def dead_letter(self) -> bool:
        return self.dead_lettered_items > 0


@dataclass(frozen=True)
class TrainingReport(Report):
    """What a training (or scheduled training) task did.

    ``outcome`` (promoted, rejected, failed, skipped) is None when the task ran
    nothing new (the run had ended, or runs elsewhere): such a task is not counted.
    """

    model: str
    task: str
    state: str
    run_id: str | None = None
    outcome: str | None = None
    version: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
