"""Issue 14: a redelivery is a worker death only when the batch's owner is known to be dead.

Every delivery that runs a batch owns it through a lease in Redis, renewed by a
heartbeat while the batch runs (riding out an outage included). A second delivery
of a batch whose owner is alive stands down; one whose owner stopped renewing
takes the batch over and is charged one death. Deliveries are driven in process
through ``tasks.handle_inference_batch`` on a real Redis and S3 (moto); the model
run is replaced by ``delivery.run_message``, which here may be slow or cut off from S3.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import redis

from bucketvision.infra import keys
from bucketvision.infra.job_plans import read_plan
from bucketvision.infra.jobs import JobStore
from bucketvision.infra.outputs import parse_jsonl
from bucketvision.infra.queue import INFERENCE_QUEUE
from bucketvision.infra.s3 import StorageUnavailable, parse_s3_uri
from bucketvision.infra.settings import Settings
from bucketvision.models.family import ItemResult
from bucketvision.producer.submit import JobRequest, submit_job
from bucketvision.worker import delivery, finishing, tasks
from bucketvision.worker.reports import BatchReport, batch_finished
from bucketvision.worker.runtime import WorkerRuntime
from tests.helpers import manifest_lines, png_bytes

pytestmark = pytest.mark.integration

BUCKET = "it-owners"


@pytest.fixture
def runtime(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> WorkerRuntime:
    """A pool child's runtime with BV_MAX_ATTEMPTS=2, as in the issue."""
    built = WorkerRuntime(settings.with_overrides(max_attempts=2, outage_seconds=60))
    monkeypatch.setattr(tasks, "get_runtime", lambda: built)
    return built


@pytest.fixture
def jobs(settings: Settings) -> JobStore:
    return JobStore.from_url(settings.broker_url)


def _submit(
    s3_client: Any, fake_model: str, settings: Settings, producer_clients: Any, broker: Any
) -> tuple[str, dict[str, Any]]:
    """A job of 2 images in one batch; its task body, as a worker would receive it."""
    s3_client.create_bucket(Bucket=BUCKET)
    pixel = png_bytes(np.zeros((4, 4), dtype="uint8"))
    for index in range(2):
        s3_client.put_object(Bucket=BUCKET, Key=f"in/{index}.png", Body=pixel)
    request = JobRequest("classify", f"s3://{BUCKET}/in/", f"s3://{BUCKET}/out/", fake_model, 2)
    clients = producer_clients(settings)
    job_id = submit_job(request, **clients).job_id
    broker.delete(INFERENCE_QUEUE)  # the tests deliver the body themselves
    output = parse_s3_uri(f"s3://{BUCKET}/out/")
    plan = read_plan(clients["store"], clients["jobs"].redis, job_id, output, [0])
    return job_id, plan[0].to_json()


def _ok(message: Any, attempt: int) -> Any:
    from bucketvision.worker.pipeline import BatchOutcome

    lines = manifest_lines(message.keys, attempts=attempt, label="0")
    return BatchOutcome(lines, {"infer": 0.1})


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    return thread, result


def _manifest(s3_client: Any, job_id: str) -> list[dict[str, Any]]:
    """The lines of the job's manifest.jsonl, composed when it finished."""
    key = f"out/_jobs/{job_id}/manifest.jsonl"
    return parse_jsonl(s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode())


def _deaths(jobs: JobStore, job_id: str, s3_client: Any) -> int:
    """The deaths counted for batch 0: in the attempts hash while it runs; once the job
    has finished, in its manifest lines (an item's ``attempts`` is 1 + the deaths)."""
    attempt = jobs.redis.hget(keys.job_attempts(job_id), "0")
    if attempt is None and jobs.get(job_id)["state"] == "finished":
        return max(line["attempts"] for line in _manifest(s3_client, job_id)) - 1
    return int(attempt or 0) - 1


def test_a_second_delivery_while_the_owner_is_alive_counts_no_death_and_does_not_run(
    s3_client: Any,
    fake_model: str,
    settings: Settings,
    producer_clients: Any,
    broker: redis.Redis,
    runtime: WorkerRuntime,
    jobs: JobStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id, body = _submit(s3_client, fake_model, settings, producer_clients, broker)
    ran: list[int] = []
    running, go_on = threading.Event(), threading.Event()

    def run(_: Any, message: Any, attempt: int) -> Any:
        ran.append(attempt)
        if len(ran) == 1:  # the owner: busy with the batch until told to go on
            running.set()
            assert go_on.wait(60)
        return _ok(message, attempt)

    monkeypatch.setattr(delivery, "run_message", run)
    owner, owner_report = _in_thread(lambda: tasks.handle_inference_batch(body))
    assert running.wait(30)
    duplicate = tasks.handle_inference_batch(body)  # the broker's visibility-timeout redelivery
    assert ran == [1], "the batch ran a second time while its owner was alive"
    assert duplicate.items is None and not duplicate.recorded
    assert _deaths(jobs, job_id, s3_client) == 0
    go_on.set()
    owner.join(60)
    assert owner_report and owner_report[0].recorded and owner_report[0].attempt == 1
    record = jobs.get(job_id)
    assert record["state"] == "finished" and record["ok"] == 2 and record["error"] == 0
    assert [line["attempts"] for line in _manifest(s3_client, job_id)] == [1, 1]
    assert _deaths(jobs, job_id, s3_client) == 0
    assert not jobs.redis.hexists(keys.job_attempts(job_id), "owner:0")  # released on record


def test_a_delivery_after_the_owner_stopped_heartbeating_counts_exactly_one_death(
    s3_client: Any,
    fake_model: str,
    settings: Settings,
    producer_clients: Any,
    broker: redis.Redis,
    runtime: WorkerRuntime,
    jobs: JobStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id, body = _submit(s3_client, fake_model, settings, producer_clients, broker)
    # The first delivery took the batch, its begin_batch retried once (a lost reply), and
    # then its process was killed: no heartbeat renews its short lease any more.
    dead = "dead-host:1:feed"
    assert jobs.begin_batch(job_id, 0, owner=dead, lease_seconds=0.5).attempt == 1
    retried = jobs.begin_batch(job_id, 0, owner=dead, lease_seconds=0.5)
    assert retried.attempt == 1 and retried.worker_deaths == 0  # a retry is no death
    time.sleep(0.7)
    ran: list[int] = []

    def run(_: Any, message: Any, attempt: int) -> Any:
        ran.append(attempt)
        return _ok(message, attempt)

    monkeypatch.setattr(delivery, "run_message", run)
    report = tasks.handle_inference_batch(body)
    assert report.recorded and report.attempt == 2
    assert _deaths(jobs, job_id, s3_client) == 1
    assert ran == [2, 2]  # after a death the batch runs one image at a time
    again = tasks.handle_inference_batch(body)  # redelivered after it was recorded
    assert again.items is None and _deaths(jobs, job_id, s3_client) == 1
    record = jobs.get(job_id)
    assert record["ok"] == 2 and record["state"] == "finished"


def test_good_images_survive_an_s3_cut_longer_than_the_visibility_timeout(
    s3_client: Any,
    fake_model: str,
    settings: Settings,
    producer_clients: Any,
    broker: redis.Redis,
    runtime: WorkerRuntime,
    jobs: JobStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """BV_MAX_ATTEMPTS=2; the owner rides out an S3 cut while the batch comes back twice."""
    job_id, body = _submit(s3_client, fake_model, settings, producer_clients, broker)
    cut_until = time.monotonic() + 6.0  # the S3 cut, longer than the redeliveries below
    calls: list[int] = []

    def run(_: Any, message: Any, attempt: int) -> Any:
        calls.append(attempt)
        if time.monotonic() < cut_until:
            raise StorageUnavailable("S3 unreachable (cut)")
        return _ok(message, attempt)

    monkeypatch.setattr(delivery, "run_message", run)
    owner, owner_report = _in_thread(lambda: tasks.handle_inference_batch(body))
    deadline = time.monotonic() + 10
    while not calls:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # Two visibility-timeout redeliveries while the owner waits for S3.
    second, second_report = _in_thread(lambda: tasks.handle_inference_batch(body))
    time.sleep(0.5)
    third = tasks.handle_inference_batch(body)
    second.join(30)
    owner.join(60)
    assert not owner.is_alive() and not second.is_alive()
    assert third.dead_lettered_items == 0 and not third.recorded
    assert second_report and not second_report[0].recorded
    assert owner_report and owner_report[0].recorded
    lines = _manifest(s3_client, job_id)
    assert [line["status"] for line in lines] == ["ok", "ok"], lines
    record = jobs.get(job_id)
    assert record["state"] == "finished" and record["ok"] == 2 and record["error"] == 0
    assert _deaths(jobs, job_id, s3_client) == 0


def test_owner_leases_in_the_job_store(
    s3_client: Any,
    fake_model: str,
    settings: Settings,
    producer_clients: Any,
    broker: redis.Redis,
    jobs: JobStore,
) -> None:
    from bucketvision.infra.ownership import Heartbeat

    job_id, _ = _submit(s3_client, fake_model, settings, producer_clients, broker)
    first = jobs.begin_batch(job_id, 0, owner="a", lease_seconds=5)
    assert (first.attempt, first.death, first.owned_elsewhere) == (1, False, False)
    busy = jobs.begin_batch(job_id, 0, owner="b", lease_seconds=5)
    assert busy.owned_elsewhere and busy.attempt == 1  # a duplicate counts nothing
    beat = Heartbeat(jobs.leases, job_id, 0, "a", seconds=0.5).start()
    time.sleep(0.4)
    renewed = jobs.begin_batch(job_id, 0, owner="b")
    assert renewed.owned_elsewhere and renewed.owner_expiry_ms != busy.owner_expiry_ms
    beat.hand_back()  # "a" hands the batch back (Reject(requeue=True)): released
    after_release = jobs.begin_batch(job_id, 0, owner="b", lease_seconds=0.2)
    assert (after_release.attempt, after_release.death) == (1, False)
    time.sleep(0.3)  # "b" died
    taken = jobs.begin_batch(job_id, 0, owner="c")
    assert (taken.attempt, taken.death, taken.worker_deaths) == (2, True, 1)
    assert not jobs.leases.renew(job_id, 0, "b")  # the dead owner's token no longer holds it
    assert jobs.redis.ttl(keys.job_attempts(job_id)) > 0
    jobs.record_batch(job_id, 0, [], {})
    assert jobs.redis.hkeys(keys.job_attempts(job_id)) == []  # the owner and count went


class _Labeller:
    """A served classify model that calls every image "a" (``runtime.models.get``'s stand-in)."""

    task, mode, size, resize = "classify", "L", (28, 28), "stretch"
    preview_size, forward_batch, labels = None, 32, ("a", "b")

    def infer(self, pixels: np.ndarray) -> np.ndarray:
        return np.tile(np.array([0.9, 0.1], dtype=np.float32), (len(pixels), 1))

    def result(self, output: np.ndarray, image: Any) -> ItemResult:
        return ItemResult({"label": "a", "score": float(output[0])})


@pytest.fixture
def submitted(
    s3_client: Any, fake_model: str, settings: Settings, producer_clients: Any, broker: Any
) -> tuple[str, dict[str, Any]]:
    """A job of 2 images in one batch, and its task body."""
    return _submit(s3_client, fake_model, settings, producer_clients, broker)


@pytest.fixture
def finished_reports(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[BatchReport]]:
    """The reports a finisher sends to the task hooks, for the test to read."""
    reports: list[BatchReport] = []

    def receive(sender: object = None, report: BatchReport | None = None, **_: Any) -> None:
        reports.append(report)  # type: ignore[arg-type]

    monkeypatch.setattr(finishing, "_finisher", None)  # this test's own
    batch_finished.connect(receive, weak=False)
    yield reports
    batch_finished.disconnect(receive)


def test_a_batch_finished_behind_its_task_keeps_its_lease_until_it_is_recorded(
    submitted: tuple[str, dict[str, Any]],
    s3_client: Any,
    runtime: WorkerRuntime,
    jobs: JobStore,
    monkeypatch: pytest.MonkeyPatch,
    finished_reports: list[BatchReport],
) -> None:
    """The Celery task's way: the task returns after its forward pass, and the child's
    finisher records the batch. Until then the batch's owner lease is renewed, so a
    redelivery stands down and the job is not finished."""
    job_id, body = submitted
    monkeypatch.setattr(runtime.models, "get", lambda reference: _Labeller())
    recording, release = threading.Event(), threading.Event()
    real_record = finishing.record_outcome

    def held_record(*args: Any) -> Any:
        recording.set()
        assert release.wait(30)
        return real_record(*args)

    monkeypatch.setattr(finishing, "record_outcome", held_record)
    report = tasks.handle_inference_batch(body, finish_behind=True)
    assert report.finishing and report.items is None and not report.recorded
    assert recording.wait(30)
    time.sleep(2.5)  # past a renewal: the lease is kept by its heartbeat, not left to lapse
    duplicate = tasks.handle_inference_batch(body)  # a redelivery while it finishes
    assert duplicate.dropped and duplicate.items is None
    assert jobs.get(job_id)["state"] == "running"
    release.set()
    assert finishing.get_finisher().wait(30)
    final = finished_reports[-1]
    assert final.recorded and final.items == 2 and final.job_finished == "finished"
    assert jobs.get(job_id)["ok"] == 2 and _deaths(jobs, job_id, s3_client) == 0


def test_without_the_lost_batch_audit_a_batch_is_recorded_inside_its_task(
    submitted: tuple[str, dict[str, Any]],
    runtime: WorkerRuntime,
    jobs: JobStore,
    monkeypatch: pytest.MonkeyPatch,
    finished_reports: list[BatchReport],
) -> None:
    """With BV_LOST_BATCH_SECONDS=0 nothing would send again a batch whose finisher died."""
    monkeypatch.setattr(runtime, "settings", runtime.settings.with_overrides(lost_batch_seconds=0))
    job_id, body = submitted
    monkeypatch.setattr(runtime.models, "get", lambda reference: _Labeller())
    report = tasks.handle_inference_batch(body, finish_behind=True)
    assert not report.finishing and report.recorded and report.items == 2
    assert report.job_finished == "finished" and finished_reports == []
    assert jobs.get(job_id)["ok"] == 2
