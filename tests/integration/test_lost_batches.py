"""The lost-batch audit on a real Redis: what it sends again, and what it leaves alone."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import numpy as np
import pytest
import redis
from kombu.transport.redis import Channel

from bucketvision.infra import keys
from bucketvision.infra.batches import LostBatchAudit, batch_of_task_id
from bucketvision.infra.job_plans import read_plan
from bucketvision.infra.jobs import JobStore
from bucketvision.infra.queue import INFERENCE_QUEUE
from bucketvision.infra.s3 import S3Store, parse_s3_uri
from bucketvision.infra.settings import Settings
from bucketvision.producer.submit import JobRequest, submit_job
from tests.helpers import png_bytes

pytestmark = pytest.mark.integration


def _queued(broker: redis.Redis) -> dict[int, bytes]:
    """Batch index -> raw message, for what waits in the queue."""
    found = {}
    for raw in broker.lrange(INFERENCE_QUEUE, 0, -1):
        batch = batch_of_task_id(json.loads(raw)["headers"]["id"])
        assert batch is not None, "a task id that does not name its job and batch"
        found[batch[1]] = raw
    return found


def _planned(store: S3Store, jobs: JobStore, job_id: str) -> set[int]:
    """The batches that can be read back from the job's plan (to be sent again)."""
    output = parse_s3_uri("s3://it-lost/out/")
    return set(read_plan(store, jobs.redis, job_id, output, range(10)))


def _submit(settings: Settings, s3_client: Any, fake_model: str, clients: dict) -> str:
    s3_client.create_bucket(Bucket="it-lost")
    pixel = png_bytes(np.zeros((4, 4), dtype="uint8"))
    for index in range(10):
        s3_client.put_object(Bucket="it-lost", Key=f"in/{index}.png", Body=pixel)
    request = JobRequest(
        "classify", "s3://it-lost/in/", "s3://it-lost/out/", fake_model, batch_size=2
    )
    return submit_job(request, **clients).job_id


def test_only_batches_in_no_queue_unacknowledged_or_recorded_are_sent_again(
    settings: Settings, s3_client: Any, fake_model: str, producer_clients: Any, broker: redis.Redis
) -> None:
    clients = producer_clients(settings)
    jobs, app, store = clients["jobs"], clients["app"], clients["store"]
    job_id = _submit(settings, s3_client, fake_model, clients)
    queued = _queued(broker)
    assert sorted(queued) == [0, 1, 2, 3, 4]
    assert _planned(store, jobs, job_id) == {0, 1, 2, 3, 4}  # stored before sending
    assert (jobs.get(job_id)["planned"], jobs.get(job_id)["sent"]) == (1, 5)
    for batch in (1, 2, 3, 4):  # 1 and 3 lost; 2 delivered, not acked; 4 done
        broker.lrem(INFERENCE_QUEUE, 1, queued[batch])
    unacked = json.dumps([json.loads(queued[2]), INFERENCE_QUEUE, INFERENCE_QUEUE])
    broker.hset(Channel.unacked_key, "tag-2", unacked)
    jobs.record_batch(job_id, 4, [{"key": "in/8.png", "status": "ok"}], {})

    assert (
        job_id not in LostBatchAudit(app, jobs, store, quiet_seconds=3600).run_once()
    )  # not quiet
    crowded = LostBatchAudit(app, jobs, store, quiet_seconds=0, scan_limit=1)
    assert crowded.run_once() == {}  # too many messages to look through: try later
    audit = LostBatchAudit(app, jobs, store, quiet_seconds=0)
    assert audit.run_once().get(job_id) == [1, 3]
    again = _queued(broker)
    assert sorted(again) == [0, 1, 3]
    body = json.loads(base64.b64decode(json.loads(again[3])["body"]))[0][0]
    assert body["keys"] == ["in/6.png", "in/7.png"] and body["job_id"] == job_id
    assert jobs.get(job_id)["resent_batches"] == 2
    assert job_id not in audit.run_once()  # what was sent again is held now: not twice

    later = time.time() + 1000
    patient = LostBatchAudit(app, jobs, store, quiet_seconds=100, clock=lambda: later)
    broker.delete(INFERENCE_QUEUE)  # batches 0, 1 and 3 lost this time
    assert patient.run_once().get(job_id) == [0, 1, 3]
    broker.delete(INFERENCE_QUEUE)
    assert job_id not in patient.run_once()  # looked at just now: not again for 100 s

    jobs.mark_finished(job_id, "finished", 0.0)
    assert job_id not in jobs.active_jobs() and _planned(store, jobs, job_id) == set()


def test_an_abandoned_job_is_not_audited(
    settings: Settings, s3_client: Any, fake_model: str, producer_clients: Any, broker: redis.Redis
) -> None:
    clients = producer_clients(settings)
    jobs, store = clients["jobs"], clients["store"]
    job_id = _submit(settings, s3_client, fake_model, clients)
    broker.delete(INFERENCE_QUEUE)
    assert jobs.abandon(job_id, "the watcher enqueued its objects again")
    assert job_id not in jobs.active_jobs() and _planned(store, jobs, job_id) == set()
    assert job_id not in LostBatchAudit(clients["app"], jobs, store, quiet_seconds=0).run_once()


def test_a_batch_whose_owner_died_after_acknowledging_it_is_sent_again_without_waiting(
    settings: Settings, s3_client: Any, fake_model: str, producer_clients: Any, broker: redis.Redis
) -> None:
    """A pool child's finisher holds a batch whose message is acknowledged (worker.finishing).

    Its owner lease is all that guards it: once that expires unrecorded and the broker
    holds no message for it, the audit sends it again at its next look, however recently
    the job made progress. A live lease, a message the broker holds and a recorded batch
    are left alone.
    """
    clients = producer_clients(settings)
    jobs, app, store = clients["jobs"], clients["app"], clients["store"]
    job_id = _submit(settings, s3_client, fake_model, clients)
    queued = _queued(broker)
    for batch in (1, 2, 3, 4):  # each delivered and taken by an owner
        broker.lrem(INFERENCE_QUEUE, 1, queued[batch])
        jobs.begin_batch(job_id, batch, owner=f"pid-{batch}:tok", lease_seconds=0.2)
    jobs.begin_batch(job_id, 2, owner="pid-2:tok", lease_seconds=3600)  # 2: its owner lives
    unacked = json.dumps([json.loads(queued[3]), INFERENCE_QUEUE, INFERENCE_QUEUE])
    broker.hset(Channel.unacked_key, "tag-3", unacked)  # 3: its worker died before the ack
    jobs.record_batch(job_id, 4, [{"key": "in/8.png", "status": "ok"}], {})
    broker.hset(keys.job_attempts(job_id), "owner:4", "pid-4:tok 1")  # 4: recorded
    time.sleep(0.3)  # the leases of 1, 3 and 4 expire

    not_quiet = LostBatchAudit(app, jobs, store, quiet_seconds=3600)
    assert not_quiet.run_once().get(job_id) == [1]
    assert sorted(_queued(broker)) == [0, 1]
    assert jobs.get(job_id)["resent_batches"] == 1
    assert job_id not in not_quiet.run_once()  # held by the broker now: not twice

    taken = jobs.begin_batch(job_id, 1, owner="pid-9:tok")  # the delivery that takes it over
    assert taken.death and not taken.owned_elsewhere
    broker.delete(INFERENCE_QUEUE)
    assert job_id not in not_quiet.run_once()  # its new owner lives
    off = LostBatchAudit(app, jobs, store, quiet_seconds=3600, resend_lost=False)
    broker.hset(keys.job_attempts(job_id), "owner:1", "pid-9:tok 1")
    assert job_id not in off.run_once()  # BV_LOST_BATCH_SECONDS=0: batches finish in their task
