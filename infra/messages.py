"""The queue messages, each defined once: built by the producer, parsed by the worker.

Every message is a frozen dataclass whose ``to_json`` is the Celery task's one
JSON argument and whose ``from_json`` parses it back, so sender and receiver
cannot drift apart. Each body carries ``version``. A body without it was sent
before the field existed and parses as version 1; a version newer than
``MESSAGE_VERSION`` is refused with a :class:`MessageError` that says to
upgrade the worker. Unknown fields are ignored, so a field added later does
not break an older worker. ``docs/queue-messages.md`` describes the bodies.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar, Self

from bucketvision.infra.errors import UserError
from bucketvision.infra.outputs import generated_image_key
from bucketvision.infra.s3 import S3Uri, parse_s3_uri
from bucketvision.infra.vocabulary import FAMILY_TASKS, INFERENCE_TASKS

MESSAGE_VERSION = 1


class MessageError(UserError):
    """A task body that cannot be parsed: malformed, or from a newer release."""


def _check_version(body: dict[str, Any], kind: str) -> None:
    version = body.get("version", 1)
    if not isinstance(version, int) or version < 1:
        raise MessageError(f"malformed {kind} message: version {version!r}")
    if version > MESSAGE_VERSION:
        raise MessageError(
            f"{kind} message version {version} is newer than this worker understands "
            f"({MESSAGE_VERSION}); upgrade the worker to the producer's release"
        )


class Message:
    """What every message shares: parsing with the version check and one kind of error.

    A message class names its ``KIND`` (for errors) and builds itself from a checked
    body in ``_from_body``; ``from_json`` wraps any failure there in a MessageError.
    """

    KIND: ClassVar[str]

    @classmethod
    def from_json(cls, body: Any) -> Self:
        """Parse a task body; raises MessageError saying what is wrong with it."""
        if not isinstance(body, dict):
            raise MessageError(
                f"malformed {cls.KIND} message: a JSON object expected, not {body!r:.80}"
            )
        _check_version(body, cls.KIND)
        try:
            return cls._from_body(body)
        except MessageError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise MessageError(f"malformed {cls.KIND} message: {error!r}") from None

    @classmethod
    def _from_body(cls, body: dict[str, Any]) -> Self:
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        """The task body: every field, URIs as text, tuples as lists, nested messages too."""
        body: dict[str, Any] = _plain(self)
        return body


@dataclass(frozen=True)
class BatchMessage(Message):
    """One batch of a classify, detect or segment job: which keys, where to, which model."""

    KIND = "batch"

    job_id: str
    batch: int
    task: str
    keys: tuple[str, ...]
    input: S3Uri
    output: S3Uri
    model: str  # pinned NAME@VERSION
    item_outputs: bool = True
    enqueued_at: float | None = None  # Unix seconds, stamped just before sending
    shadow: str | None = None  # a candidate NAME@VERSION also run, for comparison only
    version: int = MESSAGE_VERSION

    @classmethod
    def _from_body(cls, body: dict[str, Any]) -> BatchMessage:
        task = str(body["task"])
        if task not in INFERENCE_TASKS:
            raise ValueError(f"task {task!r} is not one of {', '.join(INFERENCE_TASKS)}")
        return cls(
            job_id=str(body["job_id"]),
            batch=int(body["batch"]),
            task=task,
            keys=tuple(str(key) for key in body["keys"]),
            input=parse_s3_uri(body["input"]),
            output=parse_s3_uri(body["output"]),
            model=str(body["model"]),
            item_outputs=bool(body.get("item_outputs", True)),
            enqueued_at=_optional_float(body.get("enqueued_at")),
            shadow=None if body.get("shadow") is None else str(body["shadow"]),
        )

    def to_json(self) -> dict[str, Any]:
        """The body; ``shadow`` only when there is one (most batches: the message stays small)."""
        body = super().to_json()
        if body.get("shadow") is None:
            body.pop("shadow", None)
        return body


@dataclass(frozen=True)
class GenerateItem:
    """One image to generate: its index in the job, its seed and (conditional) class id."""

    index: int
    seed: int
    label: int | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> GenerateItem:
        label = body.get("label")
        return cls(int(body["index"]), int(body["seed"]), None if label is None else int(label))


@dataclass(frozen=True)
class GenerateMessage(Message):
    """One batch of a generate job: seeds (and classes) to sample, where to write them."""

    KIND = "generate"

    job_id: str
    batch: int
    output: S3Uri
    model: str
    items: tuple[GenerateItem, ...]
    enqueued_at: float | None = None
    version: int = MESSAGE_VERSION
    task: str = field(default="generate", init=False)

    @property
    def keys(self) -> list[str]:
        """The output key of each item, in order (the manifest's ``key``)."""
        return [
            generated_image_key(self.output, self.job_id, item.index, item.seed)
            for item in self.items
        ]

    @classmethod
    def _from_body(cls, body: dict[str, Any]) -> GenerateMessage:
        return cls(
            job_id=str(body["job_id"]),
            batch=int(body["batch"]),
            output=parse_s3_uri(body["output"]),
            model=str(body["model"]),
            items=tuple(GenerateItem.from_json(item) for item in body["items"]),
            enqueued_at=_optional_float(body.get("enqueued_at")),
        )


JobMessage = BatchMessage | GenerateMessage


def parse_job_message(body: dict[str, Any]) -> JobMessage:
    """The batch or generate message in ``body``, by its ``task``."""
    if isinstance(body, dict) and body.get("task") == "generate":
        return GenerateMessage.from_json(body)
    return BatchMessage.from_json(body)


@dataclass(frozen=True)
class TrainingRequest(Message):
    """What to train; ``None`` fields take the family's tuned defaults."""

    KIND = "training request"

    name: str
    task: str
    dataset: str
    epochs: int | None = None
    minibatch_size: int | None = None
    learning_rate: float | None = None
    image_size: int | None = None
    seed: int = 0
    tolerance: float = 0.0
    promote: str = "auto"
    steps_per_epoch: int | None = None
    shadow_jobs: int = 0  # a version the gate would promote runs in CURRENT's shadow first
    shadow_agreement: float | None = None  # ... and is promoted only if it agrees this much
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _from_body(cls, body: dict[str, Any]) -> TrainingRequest:
        values = dict(body)
        if "batch_size" in values:  # the minibatch's name before version 1 was fixed
            values.setdefault("minibatch_size", values.pop("batch_size"))
        request = cls(**known_fields(cls, values))
        request.check()
        return request

    def check(self) -> None:
        """Raise MessageError naming the field whose value cannot be trained with."""
        if self.task not in FAMILY_TASKS:
            raise MessageError(f"task {self.task!r} is not one of {', '.join(FAMILY_TASKS)}")
        if not isinstance(self.shadow_jobs, int) or self.shadow_jobs < 0:
            raise MessageError(f"shadow_jobs must be a whole number >= 0, not {self.shadow_jobs!r}")
        agreement = self.shadow_agreement
        share = isinstance(agreement, int | float) and 0 <= agreement <= 1
        if agreement is not None and not share:
            raise MessageError(f"shadow_agreement must be a share in [0, 1], not {agreement!r}")


@dataclass(frozen=True)
class TrainingMessage(Message):
    """The ``train`` task's body: a recorded run and what it trains."""

    KIND = "train"

    run_id: str
    request: TrainingRequest
    enqueued_at: float | None = None
    version: int = MESSAGE_VERSION

    @classmethod
    def _from_body(cls, body: dict[str, Any]) -> TrainingMessage:
        return cls(
            run_id=str(body["run_id"]),
            request=TrainingRequest.from_json(dict(body["request"])),
            enqueued_at=_optional_float(body.get("enqueued_at")),
        )


@dataclass(frozen=True)
class ScheduledTraining(Message):
    """One ``[[train]]`` entry of the schedule: a request, its clock and its data threshold.

    It is also the ``scheduled_train`` task's body, sent by beat on every tick.
    """

    KIND = "scheduled_train"

    request: TrainingRequest
    every_seconds: float | None = None
    cron: str | None = None
    min_new_items: int = 0
    version: int = MESSAGE_VERSION

    @property
    def name(self) -> str:
        return self.request.name

    @classmethod
    def _from_body(cls, body: dict[str, Any]) -> ScheduledTraining:
        # Bodies sent before version 1 was written down had the request's fields inline.
        request = body.get("request", body)
        return cls(
            request=TrainingRequest.from_json(dict(request)),
            every_seconds=_optional_float(body.get("every_seconds")),
            cron=None if body.get("cron") is None else str(body["cron"]),
            min_new_items=int(body.get("min_new_items") or 0),
        )


def known_fields(kind: Any, body: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``body`` that name a field of the dataclass ``kind``.

    The rest are ignored: fields a newer sender added, which this reader predates.
    """
    names = {item.name for item in fields(kind)}
    return {key: value for key, value in body.items() if key in names}


def _plain(value: Any) -> Any:
    """``value`` as JSON-ready data (dataclasses as dicts of their fields)."""
    if isinstance(value, S3Uri):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return {item.name: _plain(getattr(value, item.name)) for item in fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
