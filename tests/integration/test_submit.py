"""Submitting jobs against real Redis and the moto S3 server, and the CLI's bad paths."""

from __future__ import annotations

import json

import pytest
import redis

from bucketvision.infra.jobs import JobStore
from bucketvision.models.registry import ModelNotFound, RegistryError
from bucketvision.producer.submit import JobRequest, SubmitError, submit_job
from tests.helpers import png_bytes, run_cli

pytestmark = pytest.mark.integration


def test_submit_lists_filters_and_enqueues(
    settings, s3_client, fake_model, producer_clients
) -> None:
    s3_client.create_bucket(Bucket="it-submit")
    pixel = png_bytes(__import__("numpy").zeros((4, 4), dtype="uint8"))
    for index in range(70):
        s3_client.put_object(Bucket="it-submit", Key=f"in/x/{index:03d}.PNG", Body=pixel)
    s3_client.put_object(Bucket="it-submit", Key="in/readme.txt", Body=b"hi")
    s3_client.put_object(Bucket="it-submit", Key="in/folder/", Body=b"")
    queue = redis.Redis.from_url(settings.broker_url)
    before = queue.llen("inference")
    job = submit_job(
        JobRequest(
            "classify", "s3://it-submit/in/", "s3://it-submit/out/", "submit-test", batch_size=32
        ),
        **producer_clients(settings),
    )
    assert (job.total, job.batches, job.model) == (70, 3, fake_model)
    assert queue.llen("inference") - before == 3
    record = JobStore.from_url(settings.broker_url).get(job.job_id)
    assert record["state"] == "queued" and record["total"] == 70
    bodies = [json.loads(raw) for raw in queue.lrange("inference", 0, -1)]
    ours = [b for b in bodies if job.job_id in json.dumps(b)]
    assert len(ours) == 3 and all(b["headers"]["task"] == "bucketvision.classify" for b in ours)
    assert all(b["content-type"] == "application/json" for b in ours)
    queue.delete("inference")
    everything = submit_job(
        JobRequest(
            "classify", "s3://it-submit/in/", "s3://it-submit/out/", "submit-test", includes=["*"]
        ),
        **producer_clients(settings),
    )
    assert everything.total == 71  # every object but the folder marker
    queue.delete("inference")


def test_submit_errors_are_clear(settings, s3_client, fake_model, producer_clients) -> None:
    s3_client.create_bucket(Bucket="it-errors")
    clients = producer_clients(settings)
    with pytest.raises(SubmitError, match="does not exist"):
        submit_job(JobRequest("classify", "s3://no-such-bucket/x/", model="submit-test"), **clients)
    with pytest.raises(ModelNotFound, match="register"):
        submit_job(JobRequest("classify", "s3://it-errors/x/", model="nope"), **clients)
    with pytest.raises(SubmitError, match="no objects"):
        submit_job(JobRequest("classify", "s3://it-errors/empty/", model="submit-test"), **clients)
    with pytest.raises(RegistryError, match="is a 'classify' model, not 'detect'"):
        submit_job(JobRequest("detect", "s3://it-errors/x/", model="submit-test"), **clients)


def test_cli_bad_paths_exit_non_zero_with_a_message(service_env, fake_model) -> None:
    missing = run_cli(service_env, "submit", "--task", "classify", "--input", "s3://no-such/x/")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    wrong_model = run_cli(
        service_env,
        "submit",
        "--task",
        "classify",
        "--input",
        "s3://bv-test-models/x/",
        "--model",
        "nope",
    )
    assert wrong_model.returncode == 2 and "no model named 'nope'" in wrong_model.stderr
    not_uri = run_cli(service_env, "submit", "--task", "classify", "--input", "/tmp/x")
    assert not_uri.returncode == 2 and "not an S3 URI" in not_uri.stderr
    unknown_job = run_cli(service_env, "status", "nope")
    assert unknown_job.returncode == 2 and "no job" in unknown_job.stderr
    redis_down = run_cli({**service_env, "BV_BROKER_URL": "redis://127.0.0.1:1/0"}, "status", "x")
    assert redis_down.returncode == 3 and "cannot reach Redis" in redis_down.stderr
    s3_down = run_cli(
        {**service_env, "BV_S3_ENDPOINT_URL": "http://127.0.0.1:1"},
        "submit", "--task", "classify", "--input", "s3://bv-test-models/x/",
    )  # fmt: skip
    assert s3_down.returncode == 3 and "error:" in s3_down.stderr, s3_down.stderr
    bad_setting = run_cli({**service_env, "BV_BATCH_SIZE": "lots"}, "status", "x")
    assert bad_setting.returncode == 2 and "BV_BATCH_SIZE" in bad_setting.stderr
    listing = run_cli(service_env, "models", "list")
    assert listing.returncode == 0 and "submit-test" in listing.stdout
