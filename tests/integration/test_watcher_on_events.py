"""The watcher on bucket events (real Redis and S3, a scripted event source): repeats and stale
events are no-ops, dropped ones are found by reconciliation, and the record stays bounded."""

from __future__ import annotations

import json
import uuid
from typing import Any

import numpy as np
import redis

from bucketvision.infra.s3 import ObjectInfo, S3Uri
from bucketvision.infra.settings import Settings
from bucketvision.producer.watch import Watcher, WatchRequest
from bucketvision.producer.watch_claims import Claims
from bucketvision.producer.watch_events import BucketEvent, Received, open_event_source
from tests.helpers import png_bytes


class ScriptedEvents:
    """An event source that hands out what the test put in, and records acknowledgements."""

    def __init__(self) -> None:
        self.pending: list[Received] = []
        self.acknowledged: list[Received] = []

    def receive(self, wait_seconds: float) -> Received:
        return self.pending.pop(0) if self.pending else Received()

    def acknowledge(self, received: Received) -> None:
        self.acknowledged.append(received)


def _sent_keys(watcher: Watcher) -> list[str]:
    sent: list[str] = []
    send = watcher.app.send_task

    def record(*args: Any, **kwargs: Any) -> Any:
        sent.extend(kwargs["args"][0]["keys"])
        return send(*args, **kwargs)

    watcher.app.send_task = record  # type: ignore[method-assign]
    return sent


def test_events_are_claimed_once_and_dropped_ones_are_reconciled(
    settings: Settings, s3_client: Any, fake_model: str, producer_clients: Any
) -> None:
    bucket = f"watch-events-{uuid.uuid4().hex[:8]}"
    s3_client.create_bucket(Bucket=bucket)
    etags: dict[str, str] = {}
    for index in range(6):
        key = f"drop/{uuid.uuid4().hex}.png"
        body = png_bytes(np.full((4, 4), index * 40, dtype="uint8"))
        etags[key] = s3_client.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')
    s3_client.put_object(Bucket=bucket, Key="elsewhere/x.png", Body=b"x")
    keys = list(etags)
    source = ScriptedEvents()
    request = WatchRequest(
        f"s3://{bucket}/drop/", "classify", f"s3://{bucket}/out/", model=fake_model,
        rescan_seconds=3600,
    )  # fmt: skip
    watcher = Watcher(request, **producer_clients(settings), events=source)
    sent = _sent_keys(watcher)

    def announce(*chosen: str, etag: str | None = None) -> Received:
        events = [BucketEvent(bucket, key, etag or etags[key], 1, None) for key in chosen]
        return Received(events=events, receipts=[f"r{len(source.pending)}"], messages=1)

    # The first cycle reconciles too: an empty bucket record, so nothing yet is "seen".
    watcher.state.last_rescan = 1e18
    outside = Received(events=[BucketEvent(bucket, "elsewhere/x.png", "e", 1, None)])
    source.pending = [announce(keys[0], keys[1], keys[0]), announce(keys[1]), outside]
    for _ in range(3):
        watcher.cycle()
    assert sorted(sent) == sorted(keys[:2])  # each once, however often announced
    assert watcher.state.events.duplicate == 2 and len(source.acknowledged) == 3
    source.pending = [announce(keys[0], etag="an-older-version")]  # stale: HEAD disagrees
    watcher.cycle()
    assert sorted(sent) == sorted(keys[:2])
    watcher.cycle(full=True)  # keys 2..5 were never announced: reconciliation finds them
    assert sorted(sent) == sorted(keys) and watcher.state.events.reconciled == 4
    source.pending = [announce(keys[3])]  # a late repeat of a reconciled object: a no-op
    watcher.cycle()
    assert len(sent) == len(keys)


def test_claims_of_deleted_objects_are_pruned_after_two_listings(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    prefix = S3Uri(f"claims-prune-{uuid.uuid4().hex[:8]}", "in/")
    claims = Claims(client, prefix)
    objects = [ObjectInfo(f"in/{index}.png", 1, "e") for index in range(4)]
    claims.confirm(claims.claim(objects))
    leased = claims.claim([ObjectInfo("in/leased.png", 1, "e")])
    existing = {"in/0.png", "in/1.png"}
    assert claims.prune(existing) == 0  # gone once: maybe claimed after the listing began
    assert claims.etags(["in/2.png", "in/leased.png", "in/9.png"]) == {
        "in/2.png": "e",
        "in/leased.png": "e",
    }
    claims.confirm(claims.claim([ObjectInfo("in/3.png", 1, "e2")]))  # changed since: kept
    assert claims.prune(existing) == 1  # in/2.png: gone twice and unchanged
    assert sorted(field.decode() for field in client.hkeys(claims.key)) == [
        "in/0.png",
        "in/1.png",
        "in/3.png",
        "in/leased.png",
    ]
    assert leased and claims.prune(existing) == 1  # in/3.png now; a lease never


def test_a_minio_redis_list_feeds_the_watcher(
    settings: Settings, s3_client: Any, fake_model: str, producer_clients: Any, redis_url: str
) -> None:
    """MinIO's Redis target (access format) on a real Redis, read through ``--events``'s URI:
    each entry popped once, its object claimed; a repeated entry is a no-op."""
    bucket = f"watch-minio-{uuid.uuid4().hex[:8]}"
    s3_client.create_bucket(Bucket=bucket)
    key = f"drop/{uuid.uuid4().hex}.png"
    body = png_bytes(np.zeros((4, 4), dtype="uint8"))
    etag = s3_client.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')
    record = {
        "eventName": "s3:ObjectCreated:Put",
        "eventTime": "2026-12-03T10:00:00.000Z",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "eTag": etag, "size": 1}},
    }
    entry = json.dumps([{"Event": [record], "EventTime": "2026-12-03T10:00:00.000Z"}])
    list_key = f"bv-drop-events-{uuid.uuid4().hex[:6]}"
    client = redis.Redis.from_url(redis_url)
    client.rpush(list_key, entry, entry)
    source = open_event_source(f"{redis_url}/{list_key}", settings)
    request = WatchRequest(
        f"s3://{bucket}/drop/", "classify", f"s3://{bucket}/out/", model=fake_model,
        rescan_seconds=3600, interval=0.2,
    )  # fmt: skip
    watcher = Watcher(request, **producer_clients(settings), events=source)
    watcher.state.last_rescan = 1e18  # events only: no listing
    sent = _sent_keys(watcher)
    watcher.cycle()
    assert sent == [key] and client.llen(list_key) == 0
    assert watcher.state.events.received == 2 and watcher.state.events.duplicate == 1
    watcher.cycle()  # nothing left: waits up to the interval and returns
    assert sent == [key]


def test_a_long_listing_stops_enqueueing_at_max_in_flight(
    settings: Settings,
    s3_client: Any,
    fake_model: str,
    producer_clients: Any,
    monkeypatch: Any,
) -> None:
    """Pages are claimed as they are listed, and the watcher checks what is in flight after
    each: a first scan of a full prefix does not enqueue it all at once."""
    import time

    import bucketvision.producer.watch as watch_module

    monkeypatch.setattr(watch_module, "LISTING_PAGE", 2)
    bucket = f"watch-pages-{uuid.uuid4().hex[:8]}"
    s3_client.create_bucket(Bucket=bucket)
    for index in range(5):
        s3_client.put_object(Bucket=bucket, Key=f"drop/{index}.png", Body=b"x")
    request = WatchRequest(
        f"s3://{bucket}/drop/", "classify", f"s3://{bucket}/out/", model=fake_model,
        max_in_flight=2,
    )  # fmt: skip
    watcher = Watcher(request, **producer_clients(settings), report=lambda _line: None)
    sent = _sent_keys(watcher)
    watcher.cycle()
    assert sent == ["drop/0.png", "drop/1.png"] and watcher.state.throttled
    assert watcher.cycle() is None and len(sent) == 2  # still 2 in flight: nothing more
    for job_id in watcher.state.jobs:
        watcher.jobs.mark_finished(job_id, "finished", time.time())
    watcher.cycle()
    assert sent == [f"drop/{index}.png" for index in range(4)]
