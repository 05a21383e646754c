"""What the Python API hands back: a :class:`Job` and a :class:`TrainingRun`, each known by
its id alone, so code can follow work submitted elsewhere (``client.job(job_id)``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from bucketvision.infra.errors import EXIT_FAILED, UserError
from bucketvision.infra.outputs import MANIFEST_FILE, SUMMARY_FILE, job_file_key
from bucketvision.infra.s3 import parse_s3_uri
from bucketvision.infra.s3_streams import iter_json_lines
from bucketvision.producer.follow import Patience, wait
from bucketvision.producer.job_start import SubmittedJob, submitted_view

if TYPE_CHECKING:
    from bucketvision.producer.client import Client


class JobFailed(UserError):
    """A job waited for ended ``failed`` or ``cancelled``; ``status`` holds its last status."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, status: dict[str, Any]) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Job:
    """A job, by its id: its status, its end, its results."""

    id: str
    client: Client = field(repr=False)
    submitted: SubmittedJob | None = field(default=None, repr=False)

    def status(self) -> dict[str, Any]:
        """State, counts, rate and ETA (what ``bucketvision status --json`` prints)."""
        from bucketvision.producer.status import job_status

        return job_status(self.client.job_store.get(self.id))

    def wait(self, timeout: float | None = None, *, progress: bool = False) -> dict[str, Any]:
        """Block until the job ends; its final status. Raises :class:`JobFailed` when it failed
        or was cancelled, and ``WaitTimedOut`` after ``timeout`` seconds (the job goes on)."""
        from bucketvision.producer.status import JOB_PATIENCE, followed_job

        patience: Patience = replace(JOB_PATIENCE, timeout_seconds=timeout)
        status = wait(
            followed_job(self.client.job_store, self.id), progress=progress, patience=patience
        )
        if status["state"] != "finished":
            reason = status.get("failure") or status["state"]
            raise JobFailed(f"job {self.id} ended {status['state']}: {reason}", status)
        return status

    def cancel(self) -> str:
        """Stop the job: no new batch starts, running ones stop; what happened, in words."""
        from bucketvision.producer.lifecycle import cancel_job

        return cancel_job(self.client.job_store, self.client.store, self.id)

    @property
    def submission(self) -> SubmittedJob:
        """What was submitted: items, batches, model, output (read from the record once)."""
        if self.submitted is None:
            self.submitted = submitted_view(self.client.job_store.get(self.id))
        return self.submitted

    def _file_key(self, name: str) -> tuple[str, str]:
        output = parse_s3_uri(self.submission.output)
        return output.bucket, job_file_key(output, self.id, name)

    def summary(self) -> dict[str, Any]:
        """The finished job's ``summary.json`` (counts, timings, confidence, review)."""
        found: dict[str, Any] = self.client.store.get_json(*self._file_key(SUMMARY_FILE))
        return found

    def results(self) -> Iterator[dict[str, Any]]:
        """The finished job's manifest lines, one per input, streamed (any size)."""
        return iter_json_lines(self.client.store, *self._file_key(MANIFEST_FILE))


@dataclass
class TrainingRun:
    """A training run, by its id: its record and its end."""

    id: str
    client: Client = field(repr=False)
    counts: dict[str, int] = field(default_factory=dict)

    def status(self) -> dict[str, Any]:
        """The run's record: state, stage, epoch and logs, then version, decision, metrics."""
        record: dict[str, Any] = self.client.runs.get(self.id)
        return record

    def wait(self, timeout: float | None = None, *, progress: bool = False) -> dict[str, Any]:
        """Block until the run ends; its final record (``state`` finished or failed)."""
        from bucketvision.producer.train import TRAINING_PATIENCE, followed_run

        patience = replace(TRAINING_PATIENCE, timeout_seconds=timeout)
        record: dict[str, Any] = wait(
            followed_run(self.client.runs, self.id), progress=progress, patience=patience
        )
        return record
