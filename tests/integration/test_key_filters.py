"""Which keys a job takes (issue 14): ``--exclude`` beside ``--include`` on submit and
watch, and key lists instead of a listing, on real Redis and the moto S3 server."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest
import redis

from bucketvision.infra.settings import Settings
from bucketvision.producer.key_lists import KeyListError
from bucketvision.producer.submit import JobRequest, SubmitError, submit_job
from bucketvision.producer.watch import Watcher, WatchRequest
from tests.helpers import png_bytes

pytestmark = pytest.mark.integration

KEYS = ("in/a.png", "in/b.JPG", "in/tmp/c.png", "in/tmp/keep.png", "in/notes.txt")


@pytest.fixture
def bucket(s3_client: Any, settings: Settings) -> Any:
    name = f"it-filters-{uuid.uuid4().hex[:8]}"
    s3_client.create_bucket(Bucket=name)
    pixel = png_bytes(np.zeros((4, 4), dtype="uint8"))
    for key in KEYS:
        s3_client.put_object(Bucket=name, Key=key, Body=pixel)
    yield name
    redis.Redis.from_url(settings.broker_url).delete("inference")


def test_the_watcher_takes_include_and_exclude_globs(
    settings: Settings, bucket: str, fake_model: str, producer_clients: Any
) -> None:
    request = WatchRequest(
        f"s3://{bucket}/in/", "classify", f"s3://{bucket}/out/", model=fake_model,
        excludes=("tmp/*",),
    )  # fmt: skip
    watcher = Watcher(request, **producer_clients(settings), report=lambda _line: None)
    listed = [
        info
        for page, _ in watcher._pages(whole=True, prune=False)
        for info in watcher._selected(page)
    ]
    assert sorted(info.key for info in listed) == ["in/a.png", "in/b.JPG"]
    narrower = WatchRequest(
        f"s3://{bucket}/in/", "classify", f"s3://{bucket}/out/", model=fake_model,
        includes=("*.png",), excludes=("*/c.png",),
    )  # fmt: skip
    watcher = Watcher(narrower, **producer_clients(settings), report=lambda _line: None)
    listed = [
        info
        for page, _ in watcher._pages(whole=True, prune=False)
        for info in watcher._selected(page)
    ]
    assert sorted(info.key for info in listed) == ["in/a.png", "in/tmp/keep.png"]


def test_submit_takes_exclude_globs_and_key_lists(
    settings: Settings, bucket: str, fake_model: str, producer_clients: Any
) -> None:
    clients = producer_clients(settings)
    base = {"input": f"s3://{bucket}/in/", "output": f"s3://{bucket}/out/", "model": fake_model}
    job = submit_job(JobRequest("classify", **base, excludes=["tmp/*"]), **clients)
    assert job.total == 2
    with pytest.raises(SubmitError, match=r"match .* and not \*"):
        submit_job(JobRequest("classify", **base, excludes=["*"]), **clients)
    listed = ["in/tmp/c.png", "in/notes.txt", "in/missing.png", "in/tmp/c.png"]
    job = submit_job(JobRequest("classify", **base, keys=listed, excludes=["*.txt"]), **clients)
    record = clients["jobs"].get(job.job_id)
    assert record["total"] == 2  # each listed key once (none checked to exist), not excluded
    with pytest.raises(KeyListError, match="lists no keys"):
        submit_job(JobRequest("classify", **base, keys=[], keys_source="--keys-from -"), **clients)
