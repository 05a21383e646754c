"""The drop folder on bucket events, end to end: moto's S3 server notifies its SQS queue, the
watcher reads it (``--events sqs://...``). Drops under random names, a restart halfway, an
overwrite; then a faulty event source that repeats every event and loses a third."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest

from tests.drops import Watchers, check_each_once, drop_and_time
from tests.helpers import aws_client

pytestmark = pytest.mark.e2e


@pytest.fixture
def sqs(service_env: dict[str, str]) -> Any:
    return aws_client(service_env, "sqs")


def _queue(sqs: Any, name: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=f"{name}-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    return url, arn["QueueArn"]


def _notify(s3_client: Any, bucket: str, queue_arn: str) -> None:
    rules = [{"Name": "prefix", "Value": "incoming/"}]
    configuration = {"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}
    s3_client.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{**configuration, "Filter": {"Key": {"FilterRules": rules}}}]
        },
    )


def _events_uri(queue_url: str) -> str:
    return "sqs://" + queue_url.split("://", 1)[1]


def _sqs_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "BV_SQS_ENDPOINT_URL": env["BV_S3_ENDPOINT_URL"]}  # moto serves both


def _watch_args(bucket: str, queue_url: str, rescan: str) -> tuple[str, ...]:
    return (
        "--input", f"s3://{bucket}/incoming/", "--task", "classify",
        "--output", f"s3://{bucket}/results/", "--events", _events_uri(queue_url),
        "--interval", "1", "--rescan-seconds", rescan, "--full-listing-max", "0", "--json",
    )  # fmt: skip


def test_events_process_each_drop_once_through_a_restart_and_an_overwrite(
    service_env: dict[str, str],
    s3_client: Any,
    sqs: Any,
    digits_model: str,
    start_worker: Any,
    tmp_path: Path,
) -> None:
    bucket = f"e2e-events-{uuid.uuid4().hex[:6]}"
    s3_client.create_bucket(Bucket=bucket)
    queue_url, arn = _queue(sqs, "drops")
    _notify(s3_client, bucket, arn)
    worker = start_worker("--cpu", "--concurrency", "2")
    worker.wait_for_children(2)
    log = tmp_path / "watch.log"
    watchers = Watchers(_sqs_env(service_env), log, *_watch_args(bucket, queue_url, "600"))
    drops = drop_and_time(s3_client, bucket, restart=watchers.restart, seed=505)
    ends = watchers.stop()
    check_each_once(s3_client, bucket, drops, log)
    assert len(ends) == 2 and all(end["events"]["received"] > 0 for end in ends), ends
    print(drops.describe("bucket events (SQS), random names, a restart"), ends)


@pytest.fixture
def faulty_forwarder(sqs: Any) -> Iterator[tuple[str, str, dict[str, int], list[str]]]:
    """S3 notifies a raw queue; a thread forwards each message twice to the watcher's queue,
    and deletes every third one unread instead (a lossy, repeating event source)."""
    raw_url, raw_arn = _queue(sqs, "raw")
    watched_url, _ = _queue(sqs, "watched")
    tally = {"forwarded": 0, "dropped": 0}
    lost: list[str] = []
    stop = threading.Event()

    def forward() -> None:
        while not stop.is_set():
            answer = sqs.receive_message(
                QueueUrl=raw_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            for message in answer.get("Messages", []):
                records = json.loads(message["Body"]).get("Records", [])
                if records and (tally["forwarded"] + tally["dropped"]) % 3 == 2:
                    tally["dropped"] += 1
                    lost.extend(unquote_plus(r["s3"]["object"]["key"]) for r in records)
                elif records:
                    tally["forwarded"] += 1
                    for _ in range(2):
                        sqs.send_message(QueueUrl=watched_url, MessageBody=message["Body"])
                sqs.delete_message(QueueUrl=raw_url, ReceiptHandle=message["ReceiptHandle"])

    thread = threading.Thread(target=forward, daemon=True)
    thread.start()
    yield raw_arn, watched_url, tally, lost
    stop.set()
    thread.join(timeout=5)


def test_repeated_events_are_no_ops_and_dropped_ones_are_reconciled(
    service_env: dict[str, str],
    s3_client: Any,
    digits_model: str,
    start_worker: Any,
    faulty_forwarder: tuple[str, str, dict[str, int], list[str]],
    tmp_path: Path,
) -> None:
    raw_arn, watched_url, tally, lost = faulty_forwarder
    bucket = f"e2e-faults-{uuid.uuid4().hex[:6]}"
    s3_client.create_bucket(Bucket=bucket)
    _notify(s3_client, bucket, raw_arn)
    worker = start_worker("--cpu", "--concurrency", "2")
    worker.wait_for_children(2)
    log = tmp_path / "watch.log"
    watchers = Watchers(_sqs_env(service_env), log, *_watch_args(bucket, watched_url, "5"))
    drops = drop_and_time(s3_client, bucket, count=30, overwrite=False, seed=606)
    (end,) = watchers.stop()
    check_each_once(s3_client, bucket, drops, log)
    assert tally["dropped"] + tally["forwarded"] == 31 and tally["dropped"] == 10, tally
    events = end["events"]
    assert events["received"] == 2 * tally["forwarded"], (end, tally)  # each sent twice
    # The lost third is found by listing; an object a listing found before its event was
    # read is counted by both, so it is as much a duplicate as it is a reconciled one.
    assert events["reconciled"] >= tally["dropped"], (end, tally)
    found_first = events["reconciled"] - tally["dropped"]
    assert events["duplicate"] == tally["forwarded"] + found_first, (end, tally)
    late = drops.latencies([key for key in lost if key in drops.dropped])
    print(drops.describe("events repeated twice, a third lost, reconciliation every 5 s"))
    print(f"lost events: {len(late)} objects found by reconciliation, at most {late[-1]:.2f} s")
