"""A job's footprint on a real Redis and S3 (moto): fed in a window, nothing left behind.

The queue holds a window of a job, not the job: submit sends the first ``window``
batches and each first recording sends the next one from the job's plan in S3.
A batch taken from the plan but never sent (its sender died) is sent again by the
lost-batch audit. Once the job ends, Redis keeps only its record, and S3 only its
manifest and summary: the manifest parts and the plan go. A recorded batch whose
part is missing ends the job ``failed``, naming the part, and keeps the others.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import numpy as np
import pytest
import redis

from bucketvision.infra import keys
from bucketvision.infra.batches import LostBatchAudit
from bucketvision.infra.outputs import parse_jsonl
from bucketvision.infra.queue import INFERENCE_QUEUE
from bucketvision.infra.s3 import parse_s3_uri
from bucketvision.infra.settings import Settings
from bucketvision.producer.submit import JobRequest, submit_job
from bucketvision.worker import delivery, tasks
from bucketvision.worker.manifest_parts import write_part
from bucketvision.worker.outcomes import BatchOutcome
from bucketvision.worker.runtime import WorkerRuntime
from tests.helpers import manifest_lines, png_bytes

pytestmark = pytest.mark.integration

BUCKET = "it-footprint"
OUTPUT = f"s3://{BUCKET}/out/"


@pytest.fixture
def runtime(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> WorkerRuntime:
    """A pool child's runtime in this process; its model run answers ``ok`` for every key."""
    built = WorkerRuntime(settings.with_overrides(outage_seconds=5))
    monkeypatch.setattr(tasks, "get_runtime", lambda: built)
    monkeypatch.setattr(delivery, "run_message", _ok)
    return built


@pytest.fixture
def clients(settings: Settings, producer_clients: Any) -> dict[str, Any]:
    made: dict[str, Any] = producer_clients(settings)
    return made


def _ok(_: Any, message: Any, attempt: int) -> BatchOutcome:
    return BatchOutcome(manifest_lines(message.keys, attempts=attempt), {"infer": 0.01})


def _submit(
    s3_client: Any, fake_model: str, clients: dict[str, Any], images: int, window: int
) -> tuple[str, list[str]]:
    """A job of ``images`` in batches of 2, fed ``window`` batches at a time; its id, keys."""
    s3_client.create_bucket(Bucket=BUCKET)
    prefix = f"in-{secrets.token_hex(4)}/"
    pixel = png_bytes(np.zeros((4, 4), dtype="uint8"))
    names = [f"{prefix}{index:02d}.png" for index in range(images)]
    for name in names:
        s3_client.put_object(Bucket=BUCKET, Key=name, Body=pixel)
    request = JobRequest(
        "classify", f"s3://{BUCKET}/{prefix}", OUTPUT, fake_model, 2, window=window
    )
    return submit_job(request, **clients).job_id, names


def _pop(broker: redis.Redis) -> dict[str, Any] | None:
    """The oldest task body waiting in the inference queue, taken off it (a delivery)."""
    raw = broker.rpop(INFERENCE_QUEUE)
    return None if raw is None else json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0]


def _job_objects(s3_client: Any, job_id: str) -> list[str]:
    """What S3 holds under the job's folder, relative to it."""
    prefix = f"out/_jobs/{job_id}/"
    listed = s3_client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"].removeprefix(prefix) for item in listed.get("Contents", []))


def _manifest(s3_client: Any, job_id: str) -> list[dict[str, Any]]:
    key = f"out/_jobs/{job_id}/manifest.jsonl"
    return parse_jsonl(s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode())


def test_a_job_is_fed_to_the_queue_a_window_at_a_time(
    s3_client: Any,
    fake_model: str,
    clients: dict[str, Any],
    broker: redis.Redis,
    runtime: WorkerRuntime,
) -> None:
    jobs = clients["jobs"]
    job_id, names = _submit(s3_client, fake_model, clients, images=14, window=2)  # 7 batches
    record = jobs.get(job_id)
    assert (record["batches"], int(record["window"]), record["planned"]) == (7, 2, 1)
    assert broker.llen(INFERENCE_QUEUE) == 2 and record["sent"] == 2
    ran: list[int] = []
    while (body := _pop(broker)) is not None:
        waiting, before = broker.llen(INFERENCE_QUEUE), jobs.get(job_id)["sent"]
        report = tasks.handle_inference_batch(body)
        assert report.recorded, f"batch {body['batch']} was not recorded"
        ran.append(body["batch"])
        more = 1 if before < 7 else 0  # a first recording sends one more while any are left
        assert jobs.get(job_id)["sent"] == before + more
        assert broker.llen(INFERENCE_QUEUE) == waiting + more, f"after batches {ran}"
    assert ran == list(range(7))  # each batch delivered once, in order
    record = jobs.get(job_id)
    assert record["state"] == "finished" and record["ok"] == 14 and record["sent"] == 7
    assert [line["key"] for line in _manifest(s3_client, job_id)] == names


def test_a_batch_taken_from_the_plan_but_never_sent_is_sent_by_the_audit(
    s3_client: Any,
    fake_model: str,
    clients: dict[str, Any],
    broker: redis.Redis,
    runtime: WorkerRuntime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jobs, store = clients["jobs"], clients["store"]
    job_id, names = _submit(s3_client, fake_model, clients, images=6, window=1)  # 3 batches
    first = _pop(broker)
    assert first is not None and first["batch"] == 0 and broker.llen(INFERENCE_QUEUE) == 0
    # A worker ran batch 0 and recorded it, taking batch 1 from the plan, then died
    # before sending it: nobody else will.
    jobs.begin_batch(job_id, 0)
    write_part(store, parse_s3_uri(OUTPUT), job_id, 0, manifest_lines(names[:2]))
    recorded = jobs.record_batch(job_id, 0, manifest_lines(names[:2]), {})
    assert recorded.first_time and recorded.next_batch == 1 and jobs.get(job_id)["sent"] == 2
    assert broker.llen(INFERENCE_QUEUE) == 0

    monkeypatch.setattr(jobs, "active_jobs", lambda: [job_id])  # other tests' jobs aside
    audit = LostBatchAudit(clients["app"], jobs, store, quiet_seconds=0)
    assert audit.run_once() == {job_id: [1]}
    resent = _pop(broker)
    assert resent is not None and resent["batch"] == 1 and resent["keys"] == names[2:4]
    assert broker.llen(INFERENCE_QUEUE) == 0 and jobs.get(job_id)["resent_batches"] == 1
    # Its delivery records it and sends batch 2, whose delivery finishes the job.
    assert tasks.handle_inference_batch(resent).recorded
    last = _pop(broker)
    assert last is not None and last["batch"] == 2
    assert tasks.handle_inference_batch(last).job_finished == "finished"
    assert [line["key"] for line in _manifest(s3_client, job_id)] == names


def test_a_finished_job_leaves_only_its_record_and_its_files(
    s3_client: Any,
    fake_model: str,
    clients: dict[str, Any],
    broker: redis.Redis,
    runtime: WorkerRuntime,
) -> None:
    jobs = clients["jobs"]
    job_id, names = _submit(s3_client, fake_model, clients, images=6, window=2)
    assert jobs.redis.exists(keys.job_plan_offsets(job_id))
    assert "plan.jsonl" in _job_objects(s3_client, job_id)
    body = _pop(broker)
    assert body is not None and tasks.handle_inference_batch(body).recorded
    assert _job_objects(s3_client, job_id) == ["parts/00000000.jsonl", "plan.jsonl"]
    while (body := _pop(broker)) is not None:
        tasks.handle_inference_batch(body)
    assert jobs.get(job_id)["state"] == "finished"

    left = sorted(key.decode() for key in jobs.redis.scan_iter(match=f"bv:job:{job_id}:*"))
    assert left == [], f"per-batch keys left in Redis: {left}"
    assert jobs.redis.exists(keys.job(job_id)) and jobs.redis.ttl(keys.job(job_id)) > 0
    assert _job_objects(s3_client, job_id) == ["manifest.jsonl", "summary.json"]
    assert [line["key"] for line in _manifest(s3_client, job_id)] == names
    summary = json.loads(
        s3_client.get_object(Bucket=BUCKET, Key=f"out/_jobs/{job_id}/summary.json")["Body"].read()
    )
    assert (summary["state"], summary["ok"], summary["total"]) == ("finished", 6, 6)


def test_a_recorded_batch_whose_part_is_missing_fails_the_job_and_keeps_the_parts(
    s3_client: Any,
    fake_model: str,
    clients: dict[str, Any],
    broker: redis.Redis,
    runtime: WorkerRuntime,
) -> None:
    jobs = clients["jobs"]
    job_id, _ = _submit(s3_client, fake_model, clients, images=6, window=3)
    bodies = [_pop(broker) for _ in range(3)]
    assert [body["batch"] for body in bodies if body] == [0, 1, 2]
    for body in bodies[:2]:
        assert body is not None and tasks.handle_inference_batch(body).recorded
    # A lifecycle rule (or a person) deletes batch 1's part while the job runs.
    s3_client.delete_object(Bucket=BUCKET, Key=f"out/_jobs/{job_id}/parts/00000001.jsonl")
    assert bodies[2] is not None
    assert tasks.handle_inference_batch(bodies[2]).job_finished == "failed"

    record = jobs.get(job_id)
    failure = record.get("failure", "")
    assert record["state"] == "failed", record
    assert "batch 1" in failure and f"_jobs/{job_id}/parts/00000001.jsonl" in failure, failure
    assert job_id not in jobs.active_jobs()
    assert not jobs.redis.exists(keys.job_finalize_lock(job_id))
    kept = _job_objects(s3_client, job_id)
    assert "parts/00000000.jsonl" in kept and "parts/00000002.jsonl" in kept, kept
    assert "manifest.jsonl" not in kept, "a manifest was written without batch 1's lines"
