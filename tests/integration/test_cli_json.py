"""Every command that reports takes ``--json``, and what it prints on stdout parses.

Run against the real Redis and S3 endpoint, with no worker: submissions are cleared from
the queue by the ``broker`` fixture, and the training queue is emptied at the end.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from bucketvision.infra.queue import TRAINING_QUEUE
from tests.helpers import png_bytes, run_cli

pytestmark = pytest.mark.integration

BUCKET = "it-json"


def _parsed(result: Any) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_json_outputs_parse(
    service_env: dict[str, str], s3_client: Any, fake_model: str, broker: redis.Redis
) -> None:
    from bucketvision.models.digits import make_digits

    s3_client.create_bucket(Bucket=BUCKET)
    images, _ = make_digits(2, seed=3)
    for index, image in enumerate(images):
        s3_client.put_object(Bucket=BUCKET, Key=f"in/{index}.png", Body=png_bytes(image))
    source = ("--input", f"s3://{BUCKET}/in/", "--model", "submit-test")
    submitted = _parsed(run_cli(service_env, "submit", "--task", "classify", *source, "--json"))
    assert submitted["total"] == 2 and submitted["model"] == fake_model
    status = _parsed(run_cli(service_env, "status", submitted["job_id"], "--json"))
    assert status["job_id"] == submitted["job_id"]
    listed = _parsed(run_cli(service_env, "jobs", "--json", "--limit", "5"))
    assert submitted["job_id"] in {row["job_id"] for row in listed}
    models = _parsed(run_cli(service_env, "models", "list", "--json"))
    assert any(row["name"] == "submit-test" for row in models)
    card = _parsed(run_cli(service_env, "models", "show", fake_model, "--json"))
    assert card["task"] == "classify"
    doctor = run_cli(service_env, "doctor", "--json")
    assert json.loads(doctor.stdout)["checks"][0]["check"] == "redis"

    watched = run_cli(
        service_env, "watch", *source, "--task", "classify", "--output",
        f"s3://{BUCKET}/watched/", "--once", "--json", "--include", "*.none",
    )  # fmt: skip
    assert watched.returncode == 0, watched.stderr
    lines = [json.loads(line) for line in watched.stdout.splitlines()]
    events = {"received": 0, "duplicate": 0, "reconciled": 0}  # no --events
    assert lines[-1] == {
        "stopped": True,
        "cycles": 1,
        "enqueued": 0,
        "failed": [],
        "events": events,
    }

    made = run_cli(
        service_env, "datasets", "make", "--task", "classify", "--count", "20",
        "--output", f"s3://{BUCKET}/datasets/d/",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    dataset = f"s3://{BUCKET}/datasets/d/"
    training = ("train", "json-digits", "--task", "classify", "--dataset", dataset, "--json")
    queued = _parsed(run_cli(service_env, *training))
    assert queued["run_id"].startswith("train-json-digits-") and queued["counts"]["train"] > 0
    broker.delete(TRAINING_QUEUE)
