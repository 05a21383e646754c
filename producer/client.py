"""The Python API: submit, follow and read jobs, train and manage models, from code.

```python
from bucketvision.producer import Client

client = Client.from_env()  # BV_BROKER_URL, BV_S3_ENDPOINT_URL, BV_MODELS_URI, AWS_*
job = client.submit("s3://photos/incoming/", task="classify", model="digits")
job.wait(timeout=600)  # the final status; JobFailed if it failed or was cancelled
for line in job.results():  # the manifest, streamed
    print(line["key"], line["status"], line["result"])
```

Every call is the one the ``bucketvision`` command makes (the CLI is a shell over this),
so errors are the same :class:`infra.errors.UserError` subclasses with the same messages:
a missing bucket, an unknown model, a job that is not there. A job is known by its id
alone, so a notebook can pick up a job submitted elsewhere: ``client.job(job_id)``.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bucketvision.infra.errors import EXIT_FAILED, UserError
from bucketvision.infra.jobs import JobStore
from bucketvision.infra.messages import TrainingRequest
from bucketvision.infra.outputs import MANIFEST_FILE, SUMMARY_FILE, job_file_key
from bucketvision.infra.review import ReviewPolicy
from bucketvision.infra.s3 import S3Store, parse_s3_uri
from bucketvision.infra.s3_streams import iter_json_lines
from bucketvision.infra.settings import Settings
from bucketvision.infra.training_runs import TrainingRuns
from bucketvision.models.registry import ModelRef, ModelRegistry
from bucketvision.producer.follow import Patience, wait
from bucketvision.producer.job_start import SubmittedJob


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

    def _file_key(self, name: str) -> tuple[str, str]:
        output = parse_s3_uri(str(self.client.job_store.get(self.id)["output"]))
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


@dataclass
class Models:
    """The model registry: list, show, promote, roll back, register."""

    registry: ModelRegistry

    def list(self) -> builtins.list[dict[str, Any]]:
        """One row per model: task, CURRENT, versions, metrics."""
        return self.registry.summary()

    def show(self, reference: str) -> dict[str, Any]:
        """The card of ``NAME`` (CURRENT) or ``NAME@vK``, with its versions and file URIs."""
        from bucketvision.models.registration import show_model

        return show_model(self.registry, reference)

    def promote(self, reference: str) -> ModelRef:
        from bucketvision.models.registry import parse_model_ref

        name, version = parse_model_ref(reference)
        if version is None:
            raise UserError("promote takes NAME@VERSION, e.g. digits@v2")
        return self.registry.promote(name, version)

    def rollback(self, name: str) -> ModelRef:
        return self.registry.rollback(name)

    def register(
        self, name: str, *, task: str, path: str, labels: Sequence[str] | None = None, **card: Any
    ) -> ModelRef:
        """Add a model file (``.keras`` or a SavedModel, local or ``s3://``) as the next version
        after one forward pass; ``card`` takes the card fields (``preprocess``, ``resize``...)."""
        from bucketvision.models.registration import register_model

        promote = card.pop("promote", None)
        return register_model(
            self.registry,
            name,
            task=task,
            path=path,
            labels=builtins.list(labels) if labels is not None else None,
            fields=card,
            promote=promote,
        )


@dataclass
class Client:
    """The service as seen from code: the broker, the S3 store, the job store, the registry."""

    settings: Settings
    store: S3Store = field(repr=False)
    job_store: JobStore = field(repr=False)
    registry: ModelRegistry = field(repr=False)
    _app: Any = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> Client:
        """Settings from the environment, as the command reads them (``docs/settings.md``)."""
        return cls.from_settings(Settings.from_env())

    @classmethod
    def connect(cls, broker_url: str, s3_endpoint_url: str | None = None, **env: str) -> Client:
        """Explicit URLs; ``env`` takes any other setting by its variable (``BV_MODELS_URI``)."""
        environ = {"BV_BROKER_URL": broker_url, **env}
        if s3_endpoint_url:
            environ["BV_S3_ENDPOINT_URL"] = s3_endpoint_url
        return cls.from_settings(Settings.from_env(environ))

    @classmethod
    def from_settings(cls, settings: Settings) -> Client:
        store = S3Store.from_settings(settings)
        registry = ModelRegistry(store, settings.models_uri)
        return cls(settings, store, JobStore.from_url(settings.broker_url), registry)

    @property
    def app(self) -> Any:
        """The Celery app that sends the tasks (made on first use)."""
        if self._app is None:
            from bucketvision.infra.queue import make_celery

            self._app = make_celery(self.settings)
        return self._app

    @property
    def runs(self) -> TrainingRuns:
        return TrainingRuns(self.job_store.redis)

    @property
    def models(self) -> Models:
        return Models(self.registry)

    def _clients(self) -> dict[str, Any]:
        return {"store": self.store, "jobs": self.job_store, "registry": self.registry}

    def submit(
        self,
        input: str,
        *,
        task: str = "classify",
        output: str | None = None,
        model: str | None = None,
        batch_size: int | None = None,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        keys: Sequence[str] | None = None,
        job_id: str | None = None,
        item_outputs: bool = True,
        review_below: float | None = None,
    ) -> Job:
        """Run ``task`` over the images under ``input`` (or over ``keys``); the job, queued."""
        from bucketvision.producer.submit import JobRequest, submit_job

        request = JobRequest(
            task=task,
            input=input,
            output=output,
            model=model,
            batch_size=batch_size or self.settings.batch_size,
            includes=tuple(include),
            item_outputs=item_outputs,
            excludes=tuple(exclude),
            keys=list(keys) if keys is not None else None,
            keys_source="the keys given",
            job_id=job_id,
            window=self.settings.job_window,
            review=ReviewPolicy(below=review_below) if review_below is not None else None,
        )
        submitted = submit_job(request, app=self.app, **self._clients())
        return Job(submitted.job_id, self, submitted)

    def generate(
        self,
        count: int,
        *,
        output: str,
        model: str | None = None,
        seed: int | None = None,
        label: str | None = None,
        batch_size: int | None = None,
    ) -> Job:
        """Sample ``count`` images from a generator into ``<output>/generated/<job_id>/``."""
        from bucketvision.producer.generate import GenerateRequest, submit_generate

        request = GenerateRequest(
            count, output, model, seed, label, batch_size or self.settings.batch_size,
            self.settings.job_window,
        )  # fmt: skip
        submitted = submit_generate(request, app=self.app, **self._clients())
        return Job(submitted.job_id, self, submitted)

    def train(self, name: str, *, task: str, dataset: str, **options: Any) -> TrainingRun:
        """Queue a training run of the next version of ``name``; ``options`` are the fields of
        a training request (``epochs``, ``minibatch_size``, ``promote``, ``shadow_jobs``...)."""
        from bucketvision.producer.train import submit_training

        request = TrainingRequest.from_json(
            {"name": name, "task": task, "dataset": dataset, **options}
        )
        run_id, counts = submit_training(
            request, app=self.app, store=self.store, runs=self.runs, registry=self.registry
        )
        return TrainingRun(run_id, self, counts)

    def job(self, job_id: str) -> Job:
        """A job submitted before (by anyone): checks that it exists."""
        self.job_store.get(job_id)
        return Job(job_id, self)

    def jobs(self, *, state: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The newest jobs (what ``bucketvision jobs --json`` prints)."""
        from bucketvision.producer.lifecycle import list_jobs

        return list_jobs(self.job_store, state=state, limit=limit)
