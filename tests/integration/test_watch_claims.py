"""Drop-folder claims on a real Redis: once per key+ETag, across watchers and restarts."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest
import redis

from bucketvision.infra.s3 import ObjectInfo, S3Uri
from bucketvision.infra.settings import Settings
from bucketvision.producer.watch import Watcher, WatchRequest
from bucketvision.producer.watch_claims import Claims
from tests.helpers import png_bytes
from tests.tcp_proxy import TcpProxy


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
    """Pending claims: released on a failed enqueue, taken over once their lease lapses,
    final on confirm."""
    client = redis.Redis.from_url(redis_url)
    prefix = S3Uri("claims-pending", "in/")
    client.delete(Claims(client, prefix).key)
    first, second = Claims(client, prefix, lease_seconds=0.2), Claims(client, prefix)
    objects = _objects(3)
    assert first.claim(objects) == objects
    assert second.claim(objects) == []  # pending and leased: held by the first watcher
    first.release(objects[:1])  # its enqueue failed
    assert second.claim(objects) == objects[:1]
    time.sleep(0.3)  # the first watcher died before enqueuing the other two
    assert second.claim(objects) == objects[1:]  # lapsed leases are taken over
    assert second.confirm(objects) == objects
    time.sleep(0.3)
    assert second.claim(objects) == [] and first.claim(objects) == []  # final: never again
    second.release(objects)  # releasing a final claim changes nothing
    assert first.claim(objects) == []


# --- leases and fencing (issue 14) --------------------------------------------------------------

LEASE = 2.0  # seconds: short, so that a stall "longer than the lease" fits in a test


def test_a_lapsed_lease_is_taken_over_and_its_old_holder_can_no_longer_settle(
    redis_url: str,
) -> None:
    """A dead watcher's claims go to the next one; its late confirm or release changes nothing."""
    client = redis.Redis.from_url(redis_url)
    prefix = S3Uri("claims-fenced", "in/")
    client.delete(Claims(client, prefix).key)
    first, second = Claims(client, prefix, lease_seconds=0.5), Claims(client, prefix)
    objects = _objects(3)
    assert first.claim(objects) == objects
    assert second.claim(objects) == []  # the lease runs
    time.sleep(0.7)  # the first watcher died: nothing renews its lease
    assert second.claim(objects) == objects  # taken over
    late_confirm = first.confirm(objects)  # the first one wakes up: refused
    late_release = first.release(objects)
    assert first.renew(objects) == []  # nor can it extend what it lost
    assert Claims(client, prefix).claim(objects) == []  # still the second watcher's
    second.release(objects[:1])  # the second one still holds all three
    assert Claims(client, prefix).claim(objects) == objects[:1]
    assert second.confirm(objects[1:]) == objects[1:]
    assert late_confirm == [] and late_release == []


@pytest.fixture
def drop(
    settings: Settings, s3_client: Any, fake_model: str, producer_clients: Any
) -> Iterator[tuple[Callable[..., Watcher], set[str]]]:
    """``make(settings=...)``: a watcher on a fresh drop folder with a 2 s lease; its 5 keys."""
    bucket = f"watch-lease-{uuid.uuid4().hex[:8]}"
    s3_client.create_bucket(Bucket=bucket)
    pixel = png_bytes(np.zeros((4, 4), dtype="uint8"))
    keys = {f"drop/{index:02d}.png" for index in range(5)}
    for key in keys:
        s3_client.put_object(Bucket=bucket, Key=key, Body=pixel)

    def make(through: Settings = settings) -> Watcher:
        request = WatchRequest(
            f"s3://{bucket}/drop/", "classify", f"s3://{bucket}/out/", model=fake_model
        )
        watcher = Watcher(request, **producer_clients(through), report=lambda _line: None)
        watcher.claims = Claims(watcher.jobs.redis, watcher.input, lease_seconds=LEASE)
        return watcher

    yield make, keys
    redis.Redis.from_url(settings.broker_url).delete("inference")


def _record_sends(watcher: Watcher, sent: list[str]) -> None:
    """Append the keys of every batch ``watcher`` sends to ``sent``."""
    send = watcher.app.send_task

    def record(*args: Any, **kwargs: Any) -> Any:
        sent.extend(kwargs["args"][0]["keys"])
        return send(*args, **kwargs)

    watcher.app.send_task = record  # type: ignore[method-assign]


def test_a_watcher_whose_enqueue_outlasts_the_lease_keeps_its_claims(
    drop: tuple[Callable[..., Watcher], set[str]],
) -> None:
    """Sending blocks for 2.5 leases (as a send blocking past the old 300 s bound would):
    the holder renews its leases meanwhile, so the other watcher takes nothing."""
    make, keys = drop
    first, second = make(), make()
    sent: list[str] = []
    _record_sends(first, sent)
    _record_sends(second, sent)
    send, sending = first.app.send_task, threading.Event()

    def slow_send(*args: Any, **kwargs: Any) -> Any:
        sending.set()
        time.sleep(LEASE * 2.5)
        return send(*args, **kwargs)

    first.app.send_task = slow_send  # type: ignore[method-assign]
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(first.cycle)
        assert sending.wait(30)
        tries = 0
        while not running.done():
            assert second.cycle(full=True) is None  # every claim is the first watcher's
            tries += 1
            time.sleep(0.25)
        assert running.result() is not None
    assert tries >= 10
    assert second.cycle(full=True) is None and first.cycle(full=True) is None
    assert sorted(sent) == sorted(keys)  # each object enqueued once


@pytest.fixture
def proxy(settings: Settings) -> Iterator[TcpProxy]:
    target = urlsplit(settings.broker_url)
    proxy = TcpProxy(str(target.hostname), int(target.port or 6379))
    yield proxy
    proxy.close()


def _through(settings: Settings, proxy: TcpProxy) -> Settings:
    broker = urlsplit(settings.broker_url)
    netloc = broker.netloc.rsplit("@", 1)[0] + "@" if "@" in broker.netloc else ""
    proxied = urlunsplit(broker._replace(netloc=f"{netloc}127.0.0.1:{proxy.port}"))
    return dataclasses.replace(settings, broker_url=proxied)


def test_a_watcher_cut_off_past_its_lease_enqueues_nothing(
    settings: Settings, proxy: TcpProxy, drop: tuple[Callable[..., Watcher], set[str]]
) -> None:
    """The holder loses Redis after claiming, for longer than its lease; another watcher takes
    the objects over and enqueues them. Back, the first must not enqueue them again."""
    make, keys = drop
    first, second = make(_through(settings, proxy)), make()
    sent: list[str] = []
    _record_sends(first, sent)
    _record_sends(second, sent)
    resolve, taken_over = first.registry.resolve, []

    def cut_off_resolve(*args: Any, **kwargs: Any) -> Any:
        proxy.down()  # the first watcher can no longer renew its leases
        time.sleep(LEASE + 0.5)
        taken_over.append(second.cycle(full=True))  # the second one takes over
        proxy.up()
        return resolve(*args, **kwargs)

    first.registry.resolve = cut_off_resolve  # type: ignore[method-assign]
    assert first.cycle(full=True) is None  # fenced: its claims are no longer its own
    assert taken_over[0] is not None
    assert sorted(sent) == sorted(keys)  # each object enqueued once, by the second watcher
    raw = redis.Redis.from_url(settings.broker_url).hgetall(second.claims.key)
    assert {key.decode() for key in raw} == keys
    assert not any(b" pending " in value for value in raw.values())


def test_a_job_enqueued_by_a_watcher_that_lost_its_confirm_is_not_enqueued_again(
    drop: tuple[Callable[..., Watcher], set[str]],
) -> None:
    """The holder enqueued its job, then its confirmation was lost (restarted while Redis was
    down: deferred writes die with the process). Once its lease lapses, the next watcher sees
    the claims' job exists and settles them instead of enqueuing the objects a second time."""
    make, keys = drop
    first, second = make(), make()
    sent: list[str] = []
    _record_sends(first, sent)
    _record_sends(second, sent)
    first.claims.confirm = lambda objects: []  # type: ignore[method-assign]
    assert first.cycle(full=True) is not None
    time.sleep(LEASE + 0.5)  # the first watcher is gone; its leases lapse
    assert second.cycle(full=True) is None
    assert sorted(sent) == sorted(keys)  # each object enqueued once
    raw = second.claims.redis.hgetall(second.claims.key)
    assert {key.decode() for key in raw} == keys
    assert not any(b" pending " in value for value in raw.values())
    assert second.cycle(full=True) is None


def test_a_claim_written_before_leases_lapses_after_the_old_300_s(redis_url: str) -> None:
    """``ETAG pending TIME`` (no token) from an older watcher: held for 300 s, then taken."""
    client = redis.Redis.from_url(redis_url)
    claims = Claims(client, S3Uri("claims-legacy", "in/"))
    client.delete(claims.key)
    fresh, old = _objects(2)
    now = float(client.time()[0])
    client.hset(
        claims.key, mapping={fresh.key: f"e1 pending {now}", old.key: f"e1 pending {now - 301}"}
    )
    assert claims.claim([fresh, old]) == [old]
    assert claims.confirm([fresh, old]) == [old]  # the older watcher's claim is not ours
