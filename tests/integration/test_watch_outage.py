"""The drop-folder watcher when Redis goes away in the middle of a cycle.

A TCP proxy stands between the watcher and the real Redis; cutting it at the
worst moments (while batches are sent, and just after) must neither strand a
claim until its lease lapses nor enqueue an object twice.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest
import redis

from bucketvision.infra.outages import OUTAGE_ERRORS
from bucketvision.infra.settings import Settings
from bucketvision.producer.watch import Watcher, WatchRequest
from tests.helpers import png_bytes
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(settings: Settings) -> Iterator[TcpProxy]:
    target = urlsplit(settings.broker_url)
    proxy = TcpProxy(str(target.hostname), int(target.port or 6379))
    yield proxy
    proxy.close()


@pytest.fixture
def watched(
    settings: Settings, s3_client: Any, fake_model: str, producer_clients: Any, proxy: TcpProxy
) -> Iterator[tuple[Watcher, set[str]]]:
    """A watcher whose Redis connections go through ``proxy``, and the 5 keys dropped for it."""
    bucket = f"watch-outage-{uuid.uuid4().hex[:8]}"
    s3_client.create_bucket(Bucket=bucket)
    pixel = png_bytes(np.zeros((4, 4), dtype="uint8"))
    keys = {f"drop/{index:02d}.png" for index in range(5)}
    for key in keys:
        s3_client.put_object(Bucket=bucket, Key=key, Body=pixel)
    broker = urlsplit(settings.broker_url)
    netloc = broker.netloc.rsplit("@", 1)[0] + "@" if "@" in broker.netloc else ""
    proxied = urlunsplit(broker._replace(netloc=f"{netloc}127.0.0.1:{proxy.port}"))
    clients = producer_clients(dataclasses.replace(settings, broker_url=proxied))
    request = WatchRequest(
        f"s3://{bucket}/drop/", "classify", f"s3://{bucket}/out/", model=fake_model
    )
    yield Watcher(request, **clients, report=lambda _line: None), keys
    redis.Redis.from_url(settings.broker_url).delete("inference")


def _claims(settings: Settings, watcher: Watcher) -> dict[str, str]:
    """The claim hash read past the proxy: key -> ``ETAG`` or ``ETAG pending EXPIRES TOKEN JOB``."""
    raw = redis.Redis.from_url(settings.broker_url).hgetall(watcher.claims.key)
    return {key.decode(): value.decode() for key, value in raw.items()}


def test_a_cut_while_sending_releases_the_claims_as_soon_as_redis_is_back(
    settings: Settings, proxy: TcpProxy, watched: tuple[Watcher, set[str]]
) -> None:
    watcher, keys = watched
    watcher.claims.lease_seconds = 3600  # recovery must not wait for the leases to lapse
    send = watcher.app.send_task
    half_sent: list[str] = []

    def cut_then_send(*args: Any, **kwargs: Any) -> Any:
        half_sent.append(kwargs["args"][0]["job_id"])
        proxy.down()  # the job record is written; its batch never reaches Redis
        return send(*args, **kwargs)

    watcher.app.send_task = cut_then_send  # type: ignore[method-assign]
    with pytest.raises(OUTAGE_ERRORS):
        watcher.cycle()
    pending = _claims(settings, watcher)
    assert set(pending) == keys and all(" pending " in value for value in pending.values())
    assert len(watcher.state.unsettled) == 2  # abandon the job, release the claims

    watcher.app.send_task = send  # type: ignore[method-assign]
    proxy.up()
    job_id = watcher.cycle()
    assert job_id is not None and not watcher.state.unsettled
    assert watcher.jobs.get(job_id)["total"] == len(keys)  # every dropped object, at once
    final = _claims(settings, watcher)
    assert set(final) == keys and not any(" pending " in value for value in final.values())
    abandoned = watcher.jobs.get(half_sent[0])
    assert abandoned["state"] == "failed" and "enqueued again" in abandoned["failure"]
    assert watcher.cycle() is None  # nothing new, nothing twice


def test_a_cut_after_sending_confirms_the_claims_once_redis_is_back(
    settings: Settings, proxy: TcpProxy, watched: tuple[Watcher, set[str]]
) -> None:
    watcher, keys = watched
    watcher.claims.lease_seconds = 0.2
    send = watcher.app.send_task

    def send_then_cut(*args: Any, **kwargs: Any) -> Any:
        sent = send(*args, **kwargs)
        proxy.down()  # the batch is queued; confirming its claims fails
        return sent

    watcher.app.send_task = send_then_cut  # type: ignore[method-assign]
    job_id = watcher.cycle()
    assert job_id is not None and len(watcher.state.unsettled) == 2  # confirm, move the cursor
    watcher.app.send_task = send  # type: ignore[method-assign]
    proxy.up()
    time.sleep(0.3)  # the leases have lapsed: only their confirmation settles them
    assert watcher.cycle() is None  # the confirmation landed first: nothing is enqueued twice
    final = _claims(settings, watcher)
    assert set(final) == keys and not any(" pending " in value for value in final.values())
