"""Fixtures for the unit tests: in-memory images and an in-process moto S3."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from PIL import Image

from bucketvision.infra.s3 import S3Store

BUCKET = "unit-bucket"


def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture
def encode() -> Callable[..., bytes]:
    """``encode(image, fmt, **options)``: a Pillow image saved into bytes."""
    return _encode


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials so boto3 never reaches a real account or endpoint."""
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "BV_S3_ENDPOINT_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")


@pytest.fixture
def s3_client(aws_env: None) -> Iterator[Any]:
    """A boto3 S3 client served by moto in this process."""
    from moto import mock_aws

    with mock_aws():
        yield boto3.client("s3", region_name="us-east-1")


@pytest.fixture
def store(s3_client: Any) -> S3Store:
    """An S3Store over moto with the bucket ``BUCKET`` created."""
    s3_client.create_bucket(Bucket=BUCKET)
    return S3Store(s3_client)


@pytest.fixture(scope="module")
def module_s3() -> Iterator[tuple[Any, Any]]:
    """One moto mock and client for a whole module (building a client per test is slow)."""
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "BV_S3_ENDPOINT_URL"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        with mock_aws() as mock:
            yield mock, boto3.client("s3", region_name="us-east-1")


@pytest.fixture
def shared_store(module_s3: tuple[Any, Any]) -> S3Store:
    """Like ``store``, on the module's moto mock: reset, with ``BUCKET``, for every test."""
    mock, client = module_s3
    mock.reset()
    client.create_bucket(Bucket=BUCKET)
    return S3Store(client)
