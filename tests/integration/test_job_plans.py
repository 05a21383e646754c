"""A job's plan on a real Redis and S3 (moto): messages in S3, where each starts in Redis.

``write_plan`` streams every batch message of a job to ``_jobs/<id>/plan.jsonl``
and keeps 8 bytes a batch of offsets in ``bv:job:<id>:offsets``; ``read_plan``
reads back any batches, in ranged GETs of consecutive ones, and refuses a plan
whose line at an offset is not the batch it should be.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
import redis

from bucketvision.infra import job_plans, keys
from bucketvision.infra.job_plans import plan_key, read_plan, write_plan
from bucketvision.infra.messages import BatchMessage, MessageError
from bucketvision.infra.s3 import S3Store, S3Uri, parse_s3_uri
from bucketvision.infra.settings import Settings

pytestmark = pytest.mark.integration

BUCKET = "it-plans"
OUTPUT = parse_s3_uri(f"s3://{BUCKET}/out/")
TTL = 600


@pytest.fixture
def store(settings: Settings, s3_client: Any) -> S3Store:
    s3_client.create_bucket(Bucket=BUCKET)
    return S3Store.from_settings(settings)


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def _messages(job_id: str, batches: int, order: list[int] | None = None) -> list[BatchMessage]:
    """Batch messages of 3 keys each (keys of unequal lengths: lines of unequal lengths)."""
    return [
        BatchMessage(
            job_id,
            batch,
            "classify",
            tuple(f"in/{'é' * (batch % 4)}{batch}-{item}.png" for item in range(3)),
            S3Uri(BUCKET, "in/"),
            OUTPUT,
            "m@v1",
        )
        for batch in (order if order is not None else range(batches))
    ]


def _job_id() -> str:
    return "plan-" + secrets.token_hex(4)


def test_a_plan_reads_back_any_batches(
    store: S3Store, client: redis.Redis, s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _job_id()
    messages = _messages(job_id, 10)
    assert write_plan(store, client, job_id, OUTPUT, iter(messages), ttl_seconds=TTL) == 10
    offsets = client.get(keys.job_plan_offsets(job_id))
    assert offsets is not None and len(offsets) == 8 * 11  # a start per batch, and the end
    size = s3_client.head_object(Bucket=BUCKET, Key=plan_key(OUTPUT, job_id))["ContentLength"]
    assert int.from_bytes(offsets[:8], "big") == 0 and int.from_bytes(offsets[-8:], "big") == size
    assert 0 < client.ttl(keys.job_plan_offsets(job_id)) <= TTL

    wanted = [7, 1, 9, 2, 3, 2]  # out of order, repeated, in three runs: 1-3, 7, 9
    found = read_plan(store, client, job_id, OUTPUT, wanted)
    assert sorted(found) == [1, 2, 3, 7, 9]
    assert all(found[batch].to_json() == messages[batch].to_json() for batch in found)
    monkeypatch.setattr(job_plans, "_RUN_LIMIT", 2)  # a long run read in several GETs
    everything = read_plan(store, client, job_id, OUTPUT, range(10))
    assert [everything[b].to_json() for b in range(10)] == [m.to_json() for m in messages]


def test_batches_beyond_the_plan_or_of_an_ended_job_are_left_out(
    store: S3Store, client: redis.Redis
) -> None:
    job_id = _job_id()
    write_plan(store, client, job_id, OUTPUT, _messages(job_id, 3), ttl_seconds=TTL)
    assert sorted(read_plan(store, client, job_id, OUTPUT, [2, 3, 500])) == [2]
    assert read_plan(store, client, job_id, OUTPUT, []) == {}
    client.delete(keys.job_plan_offsets(job_id))  # the job ended: its offsets went
    assert read_plan(store, client, job_id, OUTPUT, [0, 1, 2]) == {}


def test_an_empty_plan_is_written_and_reads_nothing(store: S3Store, client: redis.Redis) -> None:
    job_id = _job_id()
    assert write_plan(store, client, job_id, OUTPUT, [], ttl_seconds=TTL) == 0
    assert store.exists(BUCKET, plan_key(OUTPUT, job_id))
    assert read_plan(store, client, job_id, OUTPUT, [0]) == {}


def test_a_plan_whose_line_is_another_batchs_is_refused(
    store: S3Store, client: redis.Redis
) -> None:
    job_id = _job_id()
    swapped = _messages(job_id, 3, order=[0, 2, 1])  # batch 2's line where batch 1's goes
    write_plan(store, client, job_id, OUTPUT, swapped, ttl_seconds=TTL)
    assert read_plan(store, client, job_id, OUTPUT, [0])[0].batch == 0
    with pytest.raises(MessageError, match=f"holds batch 2 of job {job_id} where batch 1"):
        read_plan(store, client, job_id, OUTPUT, [1])


def test_a_plan_of_another_job_is_refused(store: S3Store, client: redis.Redis) -> None:
    job_id, other = _job_id(), _job_id()
    write_plan(store, client, job_id, OUTPUT, _messages(job_id, 2), ttl_seconds=TTL)
    write_plan(store, client, other, OUTPUT, _messages(other, 2), ttl_seconds=TTL)
    body = store.get_bytes(BUCKET, plan_key(OUTPUT, other))
    store.put_bytes(BUCKET, plan_key(OUTPUT, job_id), body)  # same lengths: ids are alike
    with pytest.raises(MessageError, match=f"of job {other} where batch 0 should be"):
        read_plan(store, client, job_id, OUTPUT, [0])
