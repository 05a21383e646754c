"""Drop-folder claims on a real Redis: once per key+ETag, across watchers and restarts."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import redis

from bucketvision.infra.s3 import ObjectInfo, S3Uri
from bucketvision.producer.watch_claims import Claims


def _objects(count: int, etag: str = "e1") -> list[ObjectInfo]:
    return [ObjectInfo(f"in/{index:04d}.png", 10, etag) for index in range(count)]


def test_each_version_is_claimed_once_even_by_racing_watchers(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    prefix = S3Uri("claims-race", "in/")
    client.delete(Claims(client, prefix).key)
    watchers = [Claims(redis.Redis.from_url(redis_url), prefix) for _ in range(4)]
    objects = _objects(1000)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda claims: claims.claim(objects), watchers))
    claimed = [info.key for found in results for info in found]
    assert sorted(claimed) == sorted(info.key for info in objects)  # each exactly once
    restarted = Claims(redis.Redis.from_url(redis_url), prefix)  # a new process
    assert restarted.claim(objects) == []
    overwritten = [ObjectInfo("in/0007.png", 12, "e2")]
    assert restarted.claim(overwritten) == overwritten  # new content: claimed again
    assert watchers[0].claim(overwritten) == []
    restarted.forget(["in/0007.png"])  # moved away: the same bytes dropped again count
    assert restarted.claim(overwritten) == overwritten


def test_the_cursor_only_moves_forward(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    claims = Claims(client, S3Uri("claims-cursor", "in/"))
    client.delete(f"{claims.key}:cursor")
    assert claims.cursor() is None
    claims.advance("in/b.png")
    claims.advance("in/a.png")
    assert claims.cursor() == "in/b.png"


def test_a_claim_whose_job_was_never_enqueued_is_not_lost(redis_url: str) -> None:
    """Pending claims: released on a failed enqueue, reclaimable once stale, final on confirm."""
    client = redis.Redis.from_url(redis_url)
    prefix = S3Uri("claims-pending", "in/")
    client.delete(Claims(client, prefix).key)
    first, second = Claims(client, prefix), Claims(client, prefix, stale_seconds=0.2)
    objects = _objects(3)
    assert first.claim(objects) == objects
    assert second.claim(objects) == []  # pending and fresh: held by the first watcher
    first.release(objects[:1])  # its enqueue failed
    assert second.claim(objects) == objects[:1]
    time.sleep(0.3)  # the first watcher died before enqueuing the other two
    assert second.claim(objects) == objects  # stale pending claims are taken over
    second.confirm(objects)
    time.sleep(0.3)
    assert second.claim(objects) == [] and first.claim(objects) == []  # final: never again
    second.release(objects)  # releasing a final claim changes nothing
    assert first.claim(objects) == []
