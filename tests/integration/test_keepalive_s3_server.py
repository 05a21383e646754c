"""The bench's S3 server: moto's S3 through a server that keeps connections alive."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from urllib.parse import urlparse

import boto3
import pytest

from bucketvision.infra.local_services import ManagedProcess, start_moto

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def keepalive_moto() -> Iterator[ManagedProcess]:
    server = start_moto(server="tests.perf.s3_keepalive")
    yield server
    server.stop()


def test_it_serves_moto_s3_and_keeps_the_connection_alive(keepalive_moto: ManagedProcess) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=keepalive_moto.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing-secret",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="keepalive")
    client.put_object(Bucket="keepalive", Key="a/b.txt", Body=b"hello")
    assert client.get_object(Bucket="keepalive", Key="a/b.txt")["Body"].read() == b"hello"
    missing = client.exceptions.NoSuchKey
    with pytest.raises(missing):
        client.get_object(Bucket="keepalive", Key="a/none.txt")

    address = urlparse(keepalive_moto.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    peers = []
    for _ in range(3):  # three requests on one connection: none answers "Connection: close"
        connection.request("GET", "/moto-api/data.json")
        answer = connection.getresponse()
        answer.read()
        assert answer.status == 200
        assert (answer.getheader("Connection") or "").lower() != "close"
        peers.append(connection.sock.getsockname() if connection.sock else None)
    connection.close()
    assert peers[0] is not None and peers == [peers[0]] * 3


def test_moto_dev_server_closes_every_connection(s3_endpoint: str) -> None:
    """Why the bench does not use it: werkzeug answers each request with "Connection: close"."""
    address = urlparse(s3_endpoint)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    connection.request("GET", "/moto-api/data.json")
    answer = connection.getresponse()
    answer.read()
    assert (answer.getheader("Connection") or "").lower() == "close"
    connection.close()
