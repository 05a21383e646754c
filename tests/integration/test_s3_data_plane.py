"""infra.s3_data: the worker's obstore GETs and PUTs over real HTTP, and their errors.

Against moto's server for what S3 does, and a stub server for what moto cannot be made to
answer (access denied, "slow down" until the retries run out); the errors must be the
store's own, with the messages boto3's path gives.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bucketvision.infra.s3 import (
    ObjectMissing,
    ObjectTooLarge,
    S3Store,
    StorageError,
    StorageUnavailable,
)
from bucketvision.infra.s3_data import ObstoreDataPlane, open_data_plane
from bucketvision.infra.s3_streams import get_range
from bucketvision.infra.settings import Settings

BUCKET = "data-plane"


@pytest.fixture(scope="module")
def store(settings: Settings) -> S3Store:
    made = S3Store.from_settings(settings, data=open_data_plane(settings))
    made.ensure_bucket(BUCKET)
    return made


def test_the_data_plane_is_obstore_by_default_and_boto3_on_request(settings: Settings) -> None:
    assert isinstance(open_data_plane(settings), ObstoreDataPlane)
    assert open_data_plane(settings.with_overrides(s3_data_client="boto3")) is None


def test_what_obstore_writes_boto3_reads_with_its_content_type(store: S3Store) -> None:
    store.put_bytes(BUCKET, "a/result.json", b'{"label": "7"}', "application/json")
    head = store.client.head_object(Bucket=BUCKET, Key="a/result.json")
    assert head["ContentType"] == "application/json"
    assert store.get_bytes(BUCKET, "a/result.json") == b'{"label": "7"}'
    assert store.get_json(BUCKET, "a/result.json") == {"label": "7"}


def test_a_missing_object_or_bucket_and_a_large_object_are_the_stores_errors(
    store: S3Store,
) -> None:
    with pytest.raises(ObjectMissing, match="no such object"):
        store.get_bytes(BUCKET, "never/written.png")
    with pytest.raises(ObjectMissing, match="the bucket does not exist"):
        store.get_bytes("no-such-bucket-here", "a.png")
    with pytest.raises(ObjectMissing, match="the bucket does not exist"):
        store.put_bytes("no-such-bucket-here", "a.json", b"{}", "application/json")
    store.put_bytes(BUCKET, "big.bin", b"x" * 2048, "application/octet-stream")
    with pytest.raises(ObjectTooLarge, match="2048 bytes, above BV_MAX_OBJECT_BYTES=1024"):
        store.get_bytes(BUCKET, "big.bin", max_bytes=1024)
    assert len(store.get_bytes(BUCKET, "big.bin", max_bytes=2048)) == 2048


def test_a_plans_range_is_read_through_the_data_plane_exactly(store: S3Store) -> None:
    """A batch's slice of its job's plan is a GET on the hot path: obstore's, not boto3's."""
    store.put_bytes(BUCKET, "plan.jsonl", b"0123456789", "application/x-ndjson")
    data_only = S3Store(client=None, data=store.data)  # boto3 used: AttributeError
    assert get_range(data_only, BUCKET, "plan.jsonl", 2, 5) == b"234"
    assert get_range(data_only, BUCKET, "plan.jsonl", 0, 10) == b"0123456789"
    with pytest.raises(StorageError, match="bytes 8-11") as short:
        get_range(data_only, BUCKET, "plan.jsonl", 8, 12)  # past the end: fewer bytes
    with pytest.raises(StorageError, match="bytes 12-15") as beyond:
        get_range(data_only, BUCKET, "plan.jsonl", 12, 16)  # starts past the end
    for raised in (short, beyond):  # a corrupt plan, not an outage to wait out
        assert not isinstance(raised.value, StorageUnavailable)
    with pytest.raises(ObjectMissing, match="no such object"):
        get_range(data_only, BUCKET, "never/planned.jsonl", 0, 3)


def test_an_endpoint_that_refuses_connections_is_an_outage(settings: Settings) -> None:
    plane = ObstoreDataPlane(settings.with_overrides(s3_endpoint_url="http://127.0.0.1:9"))
    with pytest.raises(StorageUnavailable, match="S3 is unavailable"):
        plane.get_bytes(BUCKET, "a.png")


class _Answers(BaseHTTPRequestHandler):
    """Every request gets the same S3 error (``server.answer``); requests are counted."""

    def _answer(self) -> None:
        self.server.requests += 1  # type: ignore[attr-defined]
        status, code = self.server.answer  # type: ignore[attr-defined]
        body = f"<Error><Code>{code}</Code><Message>stub</Message></Error>".encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    server.requests = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def _plane(settings: Settings, server: ThreadingHTTPServer) -> ObstoreDataPlane:
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    return ObstoreDataPlane(settings.with_overrides(s3_endpoint_url=endpoint))


def test_access_denied_names_the_credentials_and_is_not_retried(
    settings: Settings, stub: ThreadingHTTPServer
) -> None:
    stub.answer = (403, "AccessDenied")  # type: ignore[attr-defined]
    with pytest.raises(StorageError, match=r"access denied \(AccessDenied\); check the AWS_"):
        _plane(settings, stub).get_bytes(BUCKET, "a.png")
    with pytest.raises(StorageError, match="access denied") as raised:
        _plane(settings, stub).put_bytes(BUCKET, "a.json", b"{}", "application/json")
    assert not isinstance(raised.value, StorageUnavailable)
    assert stub.requests == 2  # type: ignore[attr-defined]


def test_slow_down_is_retried_then_an_outage(
    settings: Settings, stub: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from bucketvision.infra import s3_data

    quick = {"max_retries": 2, "backoff": {"init_backoff": timedelta(milliseconds=10)}}
    monkeypatch.setattr(s3_data, "RETRIES", quick)
    stub.answer = (503, "SlowDown")  # type: ignore[attr-defined]
    with pytest.raises(StorageUnavailable, match="S3 is unavailable"):
        _plane(settings, stub).get_bytes(BUCKET, "a.png")
    assert stub.requests == 3  # type: ignore[attr-defined]


def test_a_client_error_of_another_kind_names_its_code(
    settings: Settings, stub: ThreadingHTTPServer
) -> None:
    stub.answer = (400, "InvalidRequest")  # type: ignore[attr-defined]
    with pytest.raises(StorageError, match="InvalidRequest") as raised:
        _plane(settings, stub).put_bytes(BUCKET, "a.json", b"{}", "application/json")
    assert not isinstance(raised.value, StorageUnavailable)
