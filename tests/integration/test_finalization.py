"""Finalising a job on a real Redis and S3 (moto): driven to the end, once, or failed.

Issue 14: a finaliser that dies holding the claim must not leave its job ``running``
forever; a batch of a job that already ended does no work; an S3 error that is not
an outage while writing the job files ends the job ``failed`` with that reason.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
from botocore.exceptions import ClientError

from bucketvision.infra import keys
from bucketvision.infra.batches import LostBatchAudit
from bucketvision.infra.job_plans import read_plan
from bucketvision.infra.jobs import JobStore
from bucketvision.infra.queue import INFERENCE_QUEUE
from bucketvision.infra.s3 import S3Store, StorageError, StorageUnavailable, parse_s3_uri
from bucketvision.infra.settings import Settings
from bucketvision.producer.status import format_status, job_status
from bucketvision.producer.submit import JobRequest, submit_job
from bucketvision.worker import delivery, tasks
from bucketvision.worker.finalize import finalize_job
from bucketvision.worker.manifest_parts import write_part
from bucketvision.worker.runtime import WorkerRuntime
from tests.helpers import manifest_lines, png_bytes

pytestmark = pytest.mark.integration

BUCKET = "it-final"
DEAD_LEASE_SECONDS = 2  # the lease a killed finaliser left behind (30 s in the service)


@pytest.fixture
def runtime(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> WorkerRuntime:
    """A pool child's runtime, in this process, for ``tasks.handle_inference_batch``."""
    built = WorkerRuntime(settings)
    monkeypatch.setattr(tasks, "get_runtime", lambda: built)
    return built


@pytest.fixture
def clients(settings: Settings, producer_clients: Any) -> dict[str, Any]:
    made: dict[str, Any] = producer_clients(settings)
    return made


def _submit(s3_client: Any, fake_model: str, clients: dict[str, Any]) -> str:
    """A job of 4 images in 2 batches, its messages sent to the inference queue."""
    s3_client.create_bucket(Bucket=BUCKET)
    pixel = png_bytes(np.zeros((4, 4), dtype="uint8"))
    for index in range(4):
        s3_client.put_object(Bucket=BUCKET, Key=f"in/{index}.png", Body=pixel)
    request = JobRequest("classify", f"s3://{BUCKET}/in/", f"s3://{BUCKET}/out/", fake_model, 2)
    return submit_job(request, **clients).job_id


def _record(clients: dict[str, Any], job_id: str, batch: int, keys_: list[str]) -> None:
    """A batch ran: its manifest part is written, then it is recorded (as a worker does)."""
    lines = manifest_lines(keys_)
    write_part(clients["store"], parse_s3_uri(f"s3://{BUCKET}/out/"), job_id, batch, lines)
    clients["jobs"].record_batch(job_id, batch, lines, {})


def _record_all(clients: dict[str, Any], job_id: str) -> None:
    """Both batches ran and were recorded (their messages were delivered)."""
    for batch in (0, 1):
        clients["jobs"].begin_batch(job_id, batch)
        _record(clients, job_id, batch, [f"in/{2 * batch}.png", f"in/{2 * batch + 1}.png"])


def _bodies(clients: dict[str, Any], job_id: str, batches: list[int]) -> dict[int, Any]:
    """The task bodies of these batches, read from the job's plan in S3."""
    output = parse_s3_uri(f"s3://{BUCKET}/out/")
    found = read_plan(clients["store"], clients["jobs"].redis, job_id, output, batches)
    return {batch: message.to_json() for batch, message in found.items()}


def _drain(broker: redis.Redis) -> Iterator[dict[str, Any]]:
    """The task bodies waiting in the inference queue, oldest first, taken off the queue."""
    while (raw := broker.rpop(INFERENCE_QUEUE)) is not None:
        yield json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0]


def _job_files(s3_client: Any, job_id: str) -> list[str]:
    listed = s3_client.list_objects_v2(Bucket=BUCKET, Prefix=f"out/_jobs/{job_id}/")
    return sorted(item["Key"].rsplit("/", 1)[-1] for item in listed.get("Contents", []))


# --- 1. a finaliser that died ---------------------------------------------------------------


def test_a_job_whose_finaliser_died_is_finalised_by_the_audit(
    settings: Settings,
    s3_client: Any,
    fake_model: str,
    clients: dict[str, Any],
    broker: redis.Redis,
    runtime: WorkerRuntime,
) -> None:
    jobs, app = clients["jobs"], clients["app"]
    job_id = _submit(s3_client, fake_model, clients)
    plan = _bodies(clients, job_id, [0, 1])
    broker.delete(INFERENCE_QUEUE)  # both batches were delivered ...
    _record_all(clients, job_id)  # ... and recorded
    # The child that recorded the last batch took the claim and was killed (OOM, kill -9)
    # while writing the manifest: its lease is never renewed nor released.
    jobs.redis.set(keys.job_finalize_lock(job_id), "dead-child", ex=DEAD_LEASE_SECONDS)
    died = time.monotonic()
    # Its batch is redelivered: the new child finds it recorded and the claim taken, and acks.
    assert tasks.handle_inference_batch(plan[1]).job_finished is None
    assert jobs.get(job_id)["state"] == "running"
    audit = LostBatchAudit(app, jobs, clients["store"], quiet_seconds=3600)
    assert job_id not in audit.run_once()  # the lease is held: its finaliser may be at work

    bound = DEAD_LEASE_SECONDS + 5  # the lease, then one look by the audit and one delivery
    while jobs.get(job_id)["state"] == "running" and time.monotonic() - died < bound:
        audit.run_once()  # a worker parent's audit
        for body in _drain(broker):  # a pool child
            tasks.handle_inference_batch(body)
        time.sleep(0.2)
    record = jobs.get(job_id)
    assert record["state"] == "finished", (
        f"job still {record['state']} {time.monotonic() - died:.1f} s after its finaliser died"
    )
    assert _job_files(s3_client, job_id) == ["manifest.jsonl", "summary.json"]
    assert job_id not in jobs.active_jobs()
    assert not jobs.redis.exists(keys.job_finalize_lock(job_id))
    assert job_id not in audit.run_once() and broker.llen(INFERENCE_QUEUE) == 0  # done: left alone


def test_the_finalisation_claim_is_a_short_lease(redis_url: str) -> None:
    """A dead finaliser's claim frees itself in well under a minute (it was 10 minutes)."""
    jobs = JobStore.from_url(redis_url)
    job_id = "lease-" + str(time.time_ns())
    assert jobs.claim_finalization(job_id, "a")
    assert not jobs.claim_finalization(job_id, "b")
    assert 0 < jobs.redis.ttl(keys.job_finalize_lock(job_id)) <= 30


class _SlowStore(S3Store):
    """Writes that take a while, counted; ``during`` runs inside the first one."""

    def __init__(self, settings: Settings, seconds: float) -> None:
        super().__init__(S3Store.from_settings(settings).client)
        self.seconds = seconds
        self.puts: list[str] = []
        self.during: Any = None
        self._lock = threading.Lock()

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str = "") -> None:
        with self._lock:
            self.puts.append(key)
            first = len(self.puts) == 1
        if first and self.during is not None:
            self.during()
        time.sleep(self.seconds)
        super().put_bytes(bucket, key, data, content_type or "application/octet-stream")


def test_a_working_finaliser_keeps_its_lease_and_releases_it(
    settings: Settings,
    s3_client: Any,
    fake_model: str,
    clients: dict[str, Any],
    broker: redis.Redis,
) -> None:
    jobs = clients["jobs"]
    job_id = _submit(s3_client, fake_model, clients)
    _record_all(clients, job_id)
    store = _SlowStore(settings, seconds=1.5)  # two writes: 3 s, three 1 s leases
    summary = finalize_job(jobs, store, job_id, "slow", lease_seconds=1)
    assert summary is not None and summary["state"] == "finished"
    assert jobs.get(job_id)["state"] == "finished"
    assert not jobs.redis.exists(keys.job_finalize_lock(job_id))  # released when done
    stolen = [jobs.claim_finalization(job_id, "thief")]  # the job is done: taking it is harmless
    assert stolen == [True] and finalize_job(jobs, store, job_id, "late") is None


def test_a_working_finaliser_is_not_overtaken(
    settings: Settings,
    s3_client: Any,
    fake_model: str,
    clients: dict[str, Any],
    broker: redis.Redis,
) -> None:
    jobs = clients["jobs"]
    job_id = _submit(s3_client, fake_model, clients)
    _record_all(clients, job_id)
    store = _SlowStore(settings, seconds=1.2)
    overtaken: list[bool] = []

    def try_to_overtake() -> None:
        def later() -> None:
            overtaken.append(jobs.claim_finalization(job_id, "other"))

        timer = threading.Timer(2.0, later)  # past a 1 s lease, had it not been renewed
        timer.start()

    store.during = try_to_overtake
    assert finalize_job(jobs, store, job_id, "slow", lease_seconds=1) is not None
    time.sleep(0.2)
    assert overtaken == [False]


def test_two_concurrent_finalisers_write_once(
    settings: Settings,
    s3_client: Any,
    fake_model: str,
    clients: dict[str, Any],
    broker: redis.Redis,
) -> None:
    jobs = clients["jobs"]
    job_id = _submit(s3_client, fake_model, clients)
    _record_all(clients, job_id)
    store = _SlowStore(settings, seconds=0.3)
    start = threading.Barrier(2)
    results: dict[str, Any] = {}

    def finalise(owner: str) -> None:
        start.wait()
        results[owner] = finalize_job(jobs, store, job_id, owner)

    threads = [threading.Thread(target=finalise, args=(owner,)) for owner in ("w1", "w2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    winners = [owner for owner, summary in results.items() if summary is not None]
    assert len(results) == 2 and len(winners) == 1
    assert sorted(key.rsplit("/", 1)[-1] for key in store.puts) == [
        "manifest.jsonl",
        "summary.json",
    ]
    assert jobs.get(job_id)["state"] == "finished"


def test_a_finaliser_that_lost_its_lease_does_not_end_the_job(
    settings: Settings,
    s3_client: Any,
    fake_model: str,
    clients: dict[str, Any],
    broker: redis.Redis,
) -> None:
    """Paused past its lease (a stopped VM, a long GC): another finaliser owns the job now."""
    jobs = clients["jobs"]
    job_id = _submit(s3_client, fake_model, clients)
    _record_all(clients, job_id)
    store = _SlowStore(settings, seconds=0.0)

    def lease_lost() -> None:
        jobs.redis.set(keys.job_finalize_lock(job_id), "successor", ex=30)

    store.during = lease_lost
    assert finalize_job(jobs, store, job_id, "paused") is None
    record = jobs.get(job_id)
    assert record["state"] == "running" and job_id in jobs.active_jobs()
    assert jobs.redis.get(keys.job_finalize_lock(job_id)) == b"successor"  # not released by it


# --- 2. batches of a job that ended ---------------------------------------------------------


@pytest.mark.parametrize("ending", ["failed", "finished", "cancelled"])
def test_a_batch_of_an_ended_job_is_skipped(
    ending: str,
    s3_client: Any,
    fake_model: str,
    clients: dict[str, Any],
    broker: redis.Redis,
    runtime: WorkerRuntime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jobs = clients["jobs"]
    job_id = _submit(s3_client, fake_model, clients)
    body = _bodies(clients, job_id, [0])[0]
    if ending == "failed":
        assert jobs.abandon(job_id, "the watcher enqueued its objects again")
    elif ending == "finished":
        jobs.mark_finished(job_id, "finished", time.time())
    else:  # a state a later release may add: it must end the job too
        jobs.redis.hset(keys.job(job_id), "state", "cancelled")
    ran: list[int] = []

    def run(_: Any, message: Any, attempt: int) -> Any:
        ran.append(message.batch)
        raise AssertionError(f"batch {message.batch} of a {ending} job ran")

    monkeypatch.setattr(delivery, "run_message", run)
    report = tasks.handle_inference_batch(body)
    assert ran == []
    assert report.dropped and report.items is None and not report.recorded
    record = jobs.get(job_id)
    assert record["state"] == ending and "started_at" not in record
    assert jobs.recorded_batches(job_id).size == 0
    assert jobs.redis.hlen(keys.job_attempts(job_id)) == 0


# --- 3. an S3 error that is not an outage while writing the job files ------------------------


class _DeniedStore(S3Store):
    """A bucket policy that denies writing the job files; or S3 down, with ``outage``."""

    def __init__(self, settings: Settings, outage: bool = False) -> None:
        super().__init__(S3Store.from_settings(settings).client)
        self.outage = outage

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str = "") -> None:
        if self.outage:
            raise StorageUnavailable(f"writing s3://{bucket}/{key}: S3 is unavailable (503)")
        answer = {
            "Error": {"Code": "AccessDenied", "Message": "Access Denied"},
            "ResponseMetadata": {"HTTPStatusCode": 403},
        }
        raise self.explain(ClientError(answer, "PutObject"), f"writing s3://{bucket}/{key}")  # type: ignore[arg-type]


def test_access_denied_writing_the_job_files_fails_the_job(
    settings: Settings,
    s3_client: Any,
    fake_model: str,
    clients: dict[str, Any],
    broker: redis.Redis,
) -> None:
    jobs = clients["jobs"]
    job_id = _submit(s3_client, fake_model, clients)
    _record_all(clients, job_id)
    summary = finalize_job(jobs, _DeniedStore(settings), job_id, "w1")
    assert summary is not None and summary["state"] == "failed"
    record = jobs.get(job_id)
    assert record["state"] == "failed" and record.get("finished_at")
    failure = record.get("failure", "")
    assert "AccessDenied" in failure and f"out/_jobs/{job_id}/manifest.jsonl" in failure
    assert job_id not in jobs.active_jobs()
    assert not jobs.redis.exists(keys.job_finalize_lock(job_id))
    shown = format_status(job_status(record))
    assert "failed" in shown and "AccessDenied" in shown
    assert finalize_job(jobs, S3Store.from_settings(settings), job_id, "w2") is None  # ended


def test_an_outage_writing_the_job_files_leaves_the_job_to_a_retry(
    settings: Settings,
    s3_client: Any,
    fake_model: str,
    clients: dict[str, Any],
    broker: redis.Redis,
) -> None:
    jobs = clients["jobs"]
    job_id = _submit(s3_client, fake_model, clients)
    _record_all(clients, job_id)
    with pytest.raises(StorageError):
        finalize_job(jobs, _DeniedStore(settings, outage=True), job_id, "w1")
    assert jobs.get(job_id)["state"] == "running" and job_id in jobs.active_jobs()
    assert not jobs.redis.exists(keys.job_finalize_lock(job_id))  # free for the next attempt
    assert finalize_job(jobs, S3Store.from_settings(settings), job_id, "w2") is not None
    assert jobs.get(job_id)["state"] == "finished"
