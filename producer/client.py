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
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from bucketvision.infra.errors import UserError
from bucketvision.infra.jobs import JobStore
from bucketvision.infra.messages import TrainingRequest
from bucketvision.infra.review import ReviewPolicy
from bucketvision.infra.s3 import S3Store
from bucketvision.infra.settings import Settings
from bucketvision.infra.training_runs import TrainingRuns
from bucketvision.models.registry import ModelRef, ModelRegistry
from bucketvision.producer.handles import Job, JobFailed, TrainingRun

if TYPE_CHECKING:
    from bucketvision.producer.lifecycle import DryRun
    from bucketvision.producer.submit import JobRequest

__all__ = ["Client", "Job", "JobFailed", "Models", "ReviewPolicy", "TrainingRun"]


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

    def job_request(
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
        keys_source: str = "the keys given",
        job_id: str | None = None,
        item_outputs: bool = True,
        review: ReviewPolicy | None = None,
    ) -> JobRequest:
        """The request :meth:`submit` sends; settings fill what is not given (``BV_BATCH_SIZE``).

        ``keys`` runs those keys (``keys_source`` names them in errors) instead of a listing;
        ``review`` routes items below its confidence to review (else the card's ``review_below``).
        """
        from bucketvision.producer.key_lists import check_job_id
        from bucketvision.producer.submit import JobRequest

        return JobRequest(
            task=task,
            input=input,
            output=output,
            model=model,
            batch_size=batch_size or self.settings.batch_size,
            includes=tuple(include),
            item_outputs=item_outputs,
            excludes=tuple(exclude),
            keys=list(keys) if keys is not None else None,
            keys_source=keys_source,
            job_id=check_job_id(job_id) if job_id else None,
            window=self.settings.job_window,
            review=review,
        )

    def submit(self, input: str, **options: Any) -> Job:
        """Run ``task`` over the images under ``input`` (or over ``keys``); the job, queued.
        ``options`` are :meth:`job_request`'s. A ``job_id`` taken already is that job."""
        return self.send(self.job_request(input, **options))

    def send(self, request: JobRequest) -> Job:
        """Queue a job for ``request`` (from :meth:`job_request`, or a retry's)."""
        from bucketvision.producer.submit import submit_job

        submitted = submit_job(request, app=self.app, **self._clients())
        return Job(submitted.job_id, self, submitted)

    def dry_run(self, input: str, **options: Any) -> DryRun:
        """What :meth:`submit` would run (objects, bytes, model, output), without a job."""
        from bucketvision.producer.lifecycle import dry_run

        request = self.job_request(input, **options)
        return dry_run(request, store=self.store, registry=self.registry)

    def retry(self, job_id: str, *, errors: Sequence[str] = (), model: str | None = None) -> Job:
        """A new job over the keys of ``job_id``'s error lines (of the ``errors`` types only,
        when given), with its model unless ``model``; linked to it by ``retry_of``."""
        from bucketvision.producer.lifecycle import retry_request

        request = retry_request(self.job_store, self.store, job_id, errors=errors, model=model)
        return self.send(replace(request, window=self.settings.job_window))

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

    def train(
        self, name: str = "", *, request: TrainingRequest | None = None, **options: Any
    ) -> TrainingRun:
        """Queue a training run of the next version of ``name``: ``options`` are the fields of
        a training request (``task``, ``dataset``, ``epochs``, ``minibatch_size``, ``promote``,
        ``shadow_jobs``...), or pass a whole ``request``."""
        from bucketvision.producer.train import submit_training

        if request is None:
            request = TrainingRequest.from_json({"name": name, **options})
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
