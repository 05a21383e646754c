"""infra.messages: each queue message built and parsed by one class, with a version."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bucketvision.infra.messages import (
    MESSAGE_VERSION,
    BatchMessage,
    GenerateItem,
    GenerateMessage,
    MessageError,
    ScheduledTraining,
    TrainingMessage,
    TrainingRequest,
    parse_job_message,
)
from bucketvision.infra.s3 import parse_s3_uri

BATCH = BatchMessage(
    "J", 3, "segment", ("in/a.png", "in/b.png"), parse_s3_uri("s3://b/in/"),
    parse_s3_uri("s3://b/out/"), "shapes@v2", item_outputs=False, enqueued_at=12.5,
)  # fmt: skip
GENERATE = GenerateMessage(
    "G", 1, parse_s3_uri("s3://b/gen/"), "gan@v1", (GenerateItem(0, 7, 2), GenerateItem(1, 8))
)
REQUEST = TrainingRequest("digits", "classify", "s3://d/digits/", epochs=3, minibatch_size=64)


def wire(body: dict[str, Any]) -> dict[str, Any]:
    """What a worker receives: the body after a JSON round trip."""
    return json.loads(json.dumps(body))


@pytest.mark.parametrize(
    "message",
    [
        BATCH,
        GENERATE,
        TrainingMessage("train-digits-1", REQUEST, enqueued_at=4.0),
        ScheduledTraining(REQUEST, every_seconds=60.0, min_new_items=10),
        ScheduledTraining(REQUEST, cron="0 3 * * *"),
    ],
)
def test_every_message_survives_the_wire(message: Any) -> None:
    body = wire(message.to_json())
    assert body["version"] == MESSAGE_VERSION
    assert type(message).from_json(body) == message


def test_a_job_message_is_parsed_by_its_task() -> None:
    assert parse_job_message(wire(BATCH.to_json())) == BATCH
    assert parse_job_message(wire(GENERATE.to_json())) == GENERATE
    assert GENERATE.keys == ["gen/generated/G/000000-seed7.png", "gen/generated/G/000001-seed8.png"]


def test_a_message_queued_before_versions_parses_as_version_1() -> None:
    """A batch body as round 1 sent it: no version, the same fields."""
    old = {key: value for key, value in wire(BATCH.to_json()).items() if key != "version"}
    assert BatchMessage.from_json(old) == BATCH
    old_train = {"run_id": "r", "request": {"name": "n", "task": "detect", "dataset": "s3://b/d/",
                                            "batch_size": 16, "epochs": None}}  # fmt: skip
    parsed = TrainingMessage.from_json(old_train)
    assert parsed.request.minibatch_size == 16  # the minibatch's old name
    flat_entry = {"name": "n", "task": "classify", "dataset": "s3://b/d/", "every_seconds": 60.0,
                  "cron": None, "epochs": 2, "min_new_items": 5}  # fmt: skip
    entry = ScheduledTraining.from_json(flat_entry)
    assert (entry.request.name, entry.request.epochs, entry.min_new_items) == ("n", 2, 5)


@pytest.mark.parametrize(
    "kind", [BatchMessage, GenerateMessage, TrainingMessage, ScheduledTraining]
)
def test_a_newer_message_is_refused_with_what_to_do(kind: Any) -> None:
    sample = {
        BatchMessage: BATCH,
        GenerateMessage: GENERATE,
        TrainingMessage: TrainingMessage("r", REQUEST),
        ScheduledTraining: ScheduledTraining(REQUEST, every_seconds=1.0),
    }[kind]
    body = {**sample.to_json(), "version": MESSAGE_VERSION + 1}
    with pytest.raises(MessageError, match=r"newer than this worker understands.*upgrade"):
        kind.from_json(body)


def test_unknown_fields_are_ignored() -> None:
    assert BatchMessage.from_json({**BATCH.to_json(), "priority": 5}) == BATCH


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {**BATCH.to_json(), "version": "1"},
        {**BATCH.to_json(), "version": 0},
        {**BATCH.to_json(), "task": "generate"},  # a batch message is an inference task
        {**BATCH.to_json(), "keys": None},
    ],
)
def test_malformed_messages_are_message_errors(body: Any) -> None:
    with pytest.raises(MessageError, match="malformed batch message"):
        BatchMessage.from_json(body)


def test_a_training_request_names_a_known_task() -> None:
    with pytest.raises(MessageError, match="task 'train' is not one of"):
        TrainingRequest.from_json({"name": "n", "task": "train", "dataset": "s3://b/"})
