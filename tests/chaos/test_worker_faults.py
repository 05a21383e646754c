"""Workers dying: a whole worker SIGKILLed (mid-batch, or while batches finish behind their
tasks), a batch that kills its worker, a child OOM-killed."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu.transport.redis import Channel

from bucketvision.infra.batches import batch_of_task_id
from bucketvision.infra.queue import INFERENCE_QUEUE, task_ids_of
from tests.chaos.conftest import assert_each_input_once, wait_until
from tests.chaos.faulty_worker import KILL_MARKER, OOM_MARKER, PAUSE_RECORD_ENV
from tests.helpers import printed_job_id, read_job, submit_cli, upload_digits
from tests.services import MemoryCgroup

pytestmark = pytest.mark.chaos


def _submit(env: dict[str, str], bucket: str, batch_size: int = 16) -> str:
    submitted = submit_cli(
        env,
        f"s3://{bucket}/in/",
        f"s3://{bucket}/out/",
        "--batch-size",
        str(batch_size),
    )
    assert submitted.returncode == 0, submitted.stderr
    return printed_job_id(submitted)


def _wait(env: dict[str, str], job_id: str, timeout: float, batches: int | None = None) -> None:
    """Until the job is final (or has ``batches`` recorded)."""
    jobs = redis.Redis.from_url(env["BV_BROKER_URL"])
    deadline = time.monotonic() + timeout
    while True:
        record = jobs.hgetall(f"bv:job:{job_id}")
        if batches is not None and int(record.get(b"done_batches", 0)) >= batches:
            return
        if batches is None and record.get(b"state") in (b"finished", b"failed"):
            return
        assert time.monotonic() < deadline, f"job {job_id} stuck: {record}"
        time.sleep(0.1)


def _wait_for_a_batch_in_flight(env: dict[str, str], job_id: str, timeout: float = 60) -> None:
    """Until a child holds a batch's owner lease, so the kill lands mid-batch.

    A batch of 16 digits takes well under 0.1 s, so a kill right after a recording can find
    both children between batches: then no batch comes back as a second attempt.
    """
    jobs = redis.Redis.from_url(env["BV_BROKER_URL"])
    deadline = time.monotonic() + timeout
    while not any(f.startswith(b"owner:") for f in jobs.hkeys(f"bv:job:{job_id}:attempts")):
        assert time.monotonic() < deadline, f"job {job_id}: no batch in flight"
        time.sleep(0.002)


def _kill_and_replace(
    first: Any, start: Any, env: dict[str, str], job: tuple[Any, str, str], truth: dict[str, int]
) -> tuple[list[dict], dict, float, Any]:
    """SIGKILL ``first`` (parent and children), ``start`` another worker, wait for the job.

    ``job`` is the S3 client, bucket and job id. Every input must be ``ok`` once. Returns
    the job's lines and summary, the seconds from the kill to its end, and the new worker.
    """
    s3_client, bucket, job_id = job
    first.kill()
    killed_at = time.monotonic()
    second = start(env, "--cpu", "--concurrency", "2")
    second.wait_for_children(2)
    _wait(env, job_id, 300)
    recovered = time.monotonic() - killed_at
    lines, summary = read_job(s3_client, bucket, "out/", job_id)
    assert_each_input_once(lines, summary, set(truth))
    assert summary["state"] == "finished" and summary["ok"] == len(truth), second.log()
    return lines, summary, recovered, second


def test_a_whole_worker_sigkilled_mid_job_is_replaced_and_nothing_is_lost(
    chaos_env: dict[str, str], s3_client: Any, digits_model: str, start_faulty_worker: Any
) -> None:
    bucket = "chaos-worker-kill"
    s3_client.create_bucket(Bucket=bucket)
    truth = upload_digits(s3_client, bucket, "in/", 480, seed=81)
    first = start_faulty_worker(chaos_env, "--cpu", "--concurrency", "2")
    first.wait_for_children(2)
    job_id = _submit(chaos_env, bucket)
    _wait(chaos_env, job_id, 180, batches=6)
    _wait_for_a_batch_in_flight(chaos_env, job_id)
    # parent and children at once: their reserved batches stay unacked in Redis
    job = (s3_client, bucket, job_id)
    lines, summary, recovered, _ = _kill_and_replace(
        first, start_faulty_worker, chaos_env, job, truth
    )
    redelivered = Counter(line["attempts"] for line in lines)
    assert max(redelivered) >= 2, "no batch came back after BV_VISIBILITY_TIMEOUT"
    assert summary["redelivered_items"] == sum(n for a, n in redelivered.items() if a > 1)
    print(
        f"\nworker SIGKILL: {len(truth)} images, finished {recovered:.1f} s after the kill "
        f"(visibility timeout 20 s); attempts per item {dict(sorted(redelivered.items()))}; "
        f"ok={summary['ok']} error={summary['error']} lost=0 duplicated=0"
    )


def _poisoned_job(
    env: dict[str, str], s3_client: Any, bucket: str, marker: bytes
) -> tuple[dict[str, int], str]:
    s3_client.create_bucket(Bucket=bucket)
    truth = upload_digits(s3_client, bucket, "in/", 64, seed=82)
    poison = f"in/4/{marker.decode().lower()}.png"  # sorts among the 4s: mid-batch
    s3_client.put_object(Bucket=bucket, Key=poison, Body=marker + b"\x00" * 64)
    return truth, poison


def _assert_dead_lettered(
    lines: list[dict], summary: dict, truth: dict[str, int], poison: str, batch_size: int
) -> None:
    by_key = {line["key"]: line for line in lines}
    assert_each_input_once(lines, summary, set(truth) | {poison})
    dead = [line["key"] for line in lines if line["status"] == "error"]
    assert dead == [poison], "only the image that kills its worker may be dead-lettered"
    keys = sorted(by_key)
    neighbours = keys[keys.index(poison) // batch_size * batch_size :][:batch_size]
    assert len(neighbours) == batch_size and poison in neighbours  # it shared its batch
    assert by_key[poison]["error"]["type"] == "DeadLetter"
    assert "died 2 times while processing this image" in by_key[poison]["error"]["message"]
    assert summary["ok"] == len(truth)  # its batch's other images all ran
    assert summary["errors_by_type"] == {"DeadLetter": 1}  # the summary says why
    assert summary["state"] == "finished"


def test_a_batch_that_keeps_killing_its_worker_is_dead_lettered(
    chaos_env: dict[str, str], s3_client: Any, digits_model: str, start_faulty_worker: Any
) -> None:
    bucket = "chaos-poison"
    truth, poison = _poisoned_job(chaos_env, s3_client, bucket, KILL_MARKER)
    worker = start_faulty_worker(chaos_env, "--cpu", "--concurrency", "2")
    worker.wait_for_children(2)
    started = time.monotonic()
    job_id = _submit(chaos_env, bucket, batch_size=8)
    _wait(chaos_env, job_id, 240)
    lines, summary = read_job(s3_client, bucket, "out/", job_id)
    _assert_dead_lettered(lines, summary, truth, poison, 8)
    assert "WorkerLostError" in worker.full_log()
    print(
        f"\npoison image: dead-lettered alone after 2 worker deaths in "
        f"{time.monotonic() - started:.1f} s; ok={summary['ok']} error={summary['error']}"
    )


def test_a_child_killed_for_memory_is_replaced_and_its_batch_dead_lettered(
    chaos_env: dict[str, str], s3_client: Any, digits_model: str, start_faulty_worker: Any
) -> None:
    try:
        cgroup = MemoryCgroup(limit_bytes=3 * 1024**3)
    except OSError as error:
        pytest.skip(f"no memory cgroup can be made here ({error}); the OOM killer is not testable")
    bucket = "chaos-oom"
    truth, poison = _poisoned_job(chaos_env, s3_client, bucket, OOM_MARKER)
    worker = start_faulty_worker(chaos_env, "--cpu", "--concurrency", "2", before_exec=cgroup.enter)
    try:
        worker.wait_for_children(2)
        job_id = _submit(chaos_env, bucket, batch_size=8)
        _wait(chaos_env, job_id, 300)
        lines, summary = read_job(s3_client, bucket, "out/", job_id)
        _assert_dead_lettered(lines, summary, truth, poison, 8)
        kills = cgroup.oom_kills()
        assert kills >= 2, f"the kernel OOM-killed {kills} processes, expected the child twice"
        assert worker.process.poll() is None, "the worker parent itself died"
        counts = f"ok={summary['ok']} error={summary['error']}"
        print(f"\nOOM: the kernel killed {kills} children; {counts}")
    finally:
        worker.kill()
        cgroup.remove()


def _held_by_broker(env: dict[str, str]) -> set[tuple[str, int] | None]:
    """The (job, batch) of every message waiting in the queue or unacknowledged."""
    broker = redis.Redis.from_url(env["BV_BROKER_URL"])
    queued = task_ids_of(broker.lrange(INFERENCE_QUEUE, 0, -1), unacked=False)
    unacked = task_ids_of(broker.hvals(Channel.unacked_key), unacked=True)
    return {batch_of_task_id(task_id) for task_id in [*queued, *unacked]}


def test_a_worker_killed_while_batches_finish_behind_their_tasks_loses_nothing(
    chaos_env: dict[str, str],
    s3_client: Any,
    digits_model: str,
    start_faulty_worker: Any,
    tmp_path: Path,
) -> None:
    """A child's task returns after its last forward pass; its finisher records the batch.

    The worker is killed while a finisher holds a batch whose message is acknowledged
    (worker.finishing): only the batch's owner lease guards it. Once that expires, the
    lost-batch audit sends the batch again and a new worker takes it over, one death.
    """
    bucket = "chaos-finishing-kill"
    s3_client.create_bucket(Bucket=bucket)
    truth = upload_digits(s3_client, bucket, "in/", 160, seed=83)
    paused = tmp_path / "recording"
    first = start_faulty_worker(
        {**chaos_env, PAUSE_RECORD_ENV: str(paused)}, "--cpu", "--concurrency", "2"
    )
    first.wait_for_children(2)
    job_id = _submit(chaos_env, bucket)
    deadline = time.monotonic() + 180
    wait_until(paused.exists, deadline, lambda: f"no finisher held a batch\n{first.log()}")
    pid, paused_job, batch = paused.read_text().split()
    assert paused_job == job_id and int(pid) in first.children()
    wait_until(  # the task's acknowledgement has landed
        lambda: (job_id, int(batch)) not in _held_by_broker(chaos_env),
        deadline,
        lambda: f"batch {batch}'s message was never acknowledged",
    )
    job = (s3_client, bucket, job_id)
    lines, _, recovered, second = _kill_and_replace(
        first, start_faulty_worker, chaos_env, job, truth
    )
    keys = sorted(truth)[int(batch) * 16 :][:16]
    attempts = {line["key"]: line["attempts"] for line in lines}
    assert {attempts[key] for key in keys} == {2}, "the held batch was not taken over"
    assert "their owner's lease expired" in second.full_log() + first.full_log()
    print(
        f"\nworker SIGKILL while batch {batch} finished behind its task: {len(truth)} images,"
        f" finished {recovered:.1f} s after the kill (lease 10 s, audit every 7.5 s)"
    )
