"""infra.s3: URIs, and S3Store over in-process moto (listing, limits, errors, JSON)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from botocore.utils import parse_timestamp

from bucketvision.infra.s3 import (
    ObjectMissing,
    ObjectTooLarge,
    S3Store,
    S3Uri,
    StorageError,
    StorageUnavailable,
    make_client,
    parse_response_timestamp,
    parse_s3_uri,
)
from bucketvision.infra.s3_errors import storage_error
from bucketvision.infra.settings import Settings

BUCKET = "unit-bucket"

# --- URIs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "bucket", "prefix"),
    [
        ("s3://photos/2026/", "photos", "2026/"),
        ("s3://photos/2026", "photos", "2026/"),
        ("s3://photos/a/b/c", "photos", "a/b/c/"),
        ("s3://photos/", "photos", ""),
        ("s3://photos", "photos", ""),
    ],
)
def test_parse_s3_uri(uri: str, bucket: str, prefix: str) -> None:
    parsed = parse_s3_uri(uri)
    assert (parsed.bucket, parsed.prefix) == (bucket, prefix)


def test_parse_s3_uri_for_an_object_keeps_the_key() -> None:
    assert parse_s3_uri("s3://photos/a/cat.jpg", directory=False) == S3Uri("photos", "a/cat.jpg")


@pytest.mark.parametrize(
    "uri", ["photos/2026/", "http://photos/2026/", "S3://photos/", "/tmp/x", "", "s3:/photos/"]
)
def test_parse_s3_uri_refuses_non_s3(uri: str) -> None:
    with pytest.raises(ValueError, match="not an S3 URI"):
        parse_s3_uri(uri)


@pytest.mark.parametrize("uri", ["s3://", "s3:///prefix/"])
def test_parse_s3_uri_refuses_a_missing_bucket(uri: str) -> None:
    with pytest.raises(ValueError, match="no bucket"):
        parse_s3_uri(uri)


def test_s3_uri_str_round_trips() -> None:
    for text in ("s3://photos/2026/", "s3://photos/"):
        assert str(parse_s3_uri(text)) == text


def test_s3_uri_key_joins_under_the_prefix() -> None:
    assert S3Uri("b", "out/").key("_jobs", "J", "summary.json") == "out/_jobs/J/summary.json"
    assert S3Uri("b", "out").key("x") == "out/x"
    assert S3Uri("b", "").key("x", "y") == "x/y"
    assert S3Uri("b", "out/").key("/a/", "", "b") == "out/a/b"


# --- client ------------------------------------------------------------------------------------


def test_make_client_uses_the_settings(aws_env: None) -> None:
    settings = Settings(
        s3_endpoint_url="http://127.0.0.1:9000",
        aws_region="eu-west-3",
        aws_access_key_id="AKID",
        aws_secret_access_key="SECRET",
    )
    client = make_client(settings, pool_size=7)
    assert client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert client.meta.region_name == "eu-west-3"
    assert client.meta.config.max_pool_connections == 7
    assert client.meta.config.retries["mode"] == "standard"
    assert client.meta.config.s3 == {"addressing_style": "path"}


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-04T12:59:37.000Z",  # what S3 lists
        "2026-12-04T12:59:37Z",
        "2026-12-04T12:59:37.123456Z",
        "Fri, 04 Dec 2026 12:59:37 GMT",  # a Last-Modified header: botocore's parser
        "2026-12-04T13:59:37+01:00",
        1796388242,
        "1796388242",
    ],
)
def test_response_timestamps_are_the_instants_botocore_reads(value: object) -> None:
    ours = parse_response_timestamp(value)
    assert ours == parse_timestamp(value)  # the same instant
    assert ours.tzinfo is not None


def test_a_malformed_timestamp_is_refused_as_botocore_refuses_it() -> None:
    with pytest.raises(ValueError, match="Invalid timestamp"):
        parse_response_timestamp("2026-13-45T99:00:00Z")


def test_a_client_reads_listed_and_header_timestamps_with_the_fast_parser(
    aws_env: None,
) -> None:
    from moto import mock_aws

    settings = Settings(aws_access_key_id="AKID", aws_secret_access_key="SECRET")
    with mock_aws():
        client = make_client(settings)
        client.create_bucket(Bucket=BUCKET)
        client.put_object(Bucket=BUCKET, Key="a.png", Body=b"x")
        listed = client.list_objects_v2(Bucket=BUCKET)["Contents"][0]["LastModified"]
        head = client.head_object(Bucket=BUCKET, Key="a.png")["LastModified"]
    assert listed.tzinfo is not None and listed.utcoffset() == timedelta(0)
    assert type(listed.tzinfo).__module__ == "datetime"  # datetime.fromisoformat read it
    assert abs(listed - head) < timedelta(seconds=1)  # the header (RFC 822): botocore's


# --- the store over moto -----------------------------------------------------------------------


def test_bucket_exists(store: S3Store) -> None:
    assert store.bucket_exists(BUCKET)
    assert not store.bucket_exists("no-such-bucket")


def test_ensure_bucket_creates_once(store: S3Store) -> None:
    store.ensure_bucket("fresh-bucket")
    assert store.bucket_exists("fresh-bucket")
    store.ensure_bucket("fresh-bucket")  # idempotent
    store.ensure_bucket(BUCKET)


def test_list_objects_follows_pagination(store: S3Store, s3_client: Any) -> None:
    count = 1100  # one page of list_objects_v2 holds at most 1000 keys
    for index in range(count):
        s3_client.put_object(Bucket=BUCKET, Key=f"many/{index:05d}.png", Body=b"x")
    s3_client.put_object(Bucket=BUCKET, Key="other/elsewhere.png", Body=b"x")

    listed = list(store.list_objects(S3Uri(BUCKET, "many/")))

    assert len(listed) == count
    assert [info.key for info in listed] == [f"many/{index:05d}.png" for index in range(count)]
    assert all(info.size == 1 and info.etag and '"' not in info.etag for info in listed)
    after = list(store.list_objects(S3Uri(BUCKET, "many/"), start_after="many/01049.png"))
    assert [info.key for info in after] == [f"many/{index:05d}.png" for index in range(1050, count)]


def test_list_objects_of_an_empty_prefix_and_a_missing_bucket(store: S3Store) -> None:
    assert list(store.list_objects(S3Uri(BUCKET, "nothing/"))) == []
    with pytest.raises(ObjectMissing):
        list(store.list_objects(S3Uri("no-such-bucket", "")))


def test_list_objects_reports_size_and_etag(store: S3Store) -> None:
    store.put_bytes(BUCKET, "p/a.bin", b"12345")
    (info,) = store.list_objects(S3Uri(BUCKET, "p/"))
    assert (info.key, info.size) == ("p/a.bin", 5)
    assert info.etag == "827ccb0eea8a706c4c34a16891f84e7b"  # md5 of b"12345"


def test_get_bytes_round_trip_and_exact_limit(store: S3Store) -> None:
    store.put_bytes(BUCKET, "a.bin", b"\x00\x01" * 50)
    assert store.get_bytes(BUCKET, "a.bin") == b"\x00\x01" * 50
    assert store.get_bytes(BUCKET, "a.bin", max_bytes=100) == b"\x00\x01" * 50


def test_get_bytes_above_max_bytes_is_too_large(store: S3Store) -> None:
    store.put_bytes(BUCKET, "big.bin", b"x" * 101)
    with pytest.raises(ObjectTooLarge, match="BV_MAX_OBJECT_BYTES=100") as caught:
        store.get_bytes(BUCKET, "big.bin", max_bytes=100)
    assert isinstance(caught.value, StorageError)
    assert "s3://unit-bucket/big.bin" in str(caught.value)


def test_get_bytes_with_a_lying_content_length_still_stops_at_max_bytes(
    store: S3Store, s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read itself is bounded, not only the header check."""
    store.put_bytes(BUCKET, "liar.bin", b"y" * 500)
    real = s3_client.get_object

    reads: list[tuple[Any, ...]] = []

    def get_object(**kwargs: Any) -> dict[str, Any]:
        response = real(**kwargs)
        response["ContentLength"] = 10
        body = response["Body"]
        real_read = body.read

        def read(*args: Any) -> bytes:
            reads.append(args)
            return real_read(*args)

        body.read = read
        return response

    monkeypatch.setattr(s3_client, "get_object", get_object)
    with pytest.raises(ObjectTooLarge):
        store.get_bytes(BUCKET, "liar.bin", max_bytes=100)
    assert reads, "the body was never read"
    assert all(args and args[0] is not None and args[0] <= 101 for args in reads), reads


def test_get_bytes_of_a_missing_key_or_bucket(store: S3Store) -> None:
    with pytest.raises(ObjectMissing, match="no such object"):
        store.get_bytes(BUCKET, "missing.png")
    with pytest.raises(ObjectMissing, match="bucket does not exist"):
        store.get_bytes("no-such-bucket", "missing.png")


def test_exists(store: S3Store) -> None:
    store.put_bytes(BUCKET, "here.txt", b"x")
    assert store.exists(BUCKET, "here.txt")
    assert not store.exists(BUCKET, "gone.txt")


def test_put_json_get_json_round_trip(store: S3Store, s3_client: Any) -> None:
    document = {"label": "chat noir 🐈", "score": 0.5, "top_k": [{"label": "été", "score": 1}]}
    store.put_json(BUCKET, "out/a.json", document)
    assert store.get_json(BUCKET, "out/a.json") == document
    head = s3_client.head_object(Bucket=BUCKET, Key="out/a.json")
    assert head["ContentType"] == "application/json"
    assert "é" in store.get_text(BUCKET, "out/a.json")  # UTF-8, not \\u escapes


def test_put_bytes_overwrites(store: S3Store) -> None:
    store.put_bytes(BUCKET, "k", b"first")
    store.put_bytes(BUCKET, "k", b"second")
    assert store.get_bytes(BUCKET, "k") == b"second"


def test_put_bytes_into_a_missing_bucket_is_a_storage_error(store: S3Store) -> None:
    with pytest.raises(StorageError, match="writing s3://no-such-bucket/k"):
        store.put_bytes("no-such-bucket", "k", b"x")


def test_upload_and_download_file(store: S3Store, tmp_path: Path) -> None:
    source = tmp_path / "model.keras"
    source.write_bytes(b"PK\x03\x04 fake model")
    store.upload_file(str(source), BUCKET, "models/m/v1/model.keras")
    target = tmp_path / "copy.keras"
    store.download_file(BUCKET, "models/m/v1/model.keras", str(target))
    assert target.read_bytes() == source.read_bytes()
    with pytest.raises(ObjectMissing):
        store.download_file(BUCKET, "models/m/v9/model.keras", str(tmp_path / "none"))


def _client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "GetObject")


@pytest.mark.parametrize(
    ("error", "kind", "words"),
    [
        (_client_error("AccessDenied"), StorageError, "AWS_* credentials"),
        (_client_error("InvalidAccessKeyId"), StorageError, "access denied"),
        (_client_error("NoSuchKey"), ObjectMissing, "no such object"),
        (_client_error("NoSuchBucket"), ObjectMissing, "bucket does not exist"),
        (_client_error("SlowDown"), StorageUnavailable, "SlowDown"),
        (_client_error("InternalError"), StorageUnavailable, "InternalError"),
        (
            EndpointConnectionError(endpoint_url="http://nowhere:9"),
            StorageUnavailable,
            "BV_S3_ENDPOINT",
        ),
        (ReadTimeoutError(endpoint_url="http://s3.test/b/k"), StorageUnavailable, "unavailable"),
    ],
)
def test_errors_are_explained(error: Exception, kind: type, words: str) -> None:
    explained = S3Store(client=None).explain(error, "s3://b/k")
    assert type(explained) is kind
    assert words in str(explained)
    assert str(explained).startswith("s3://b/k")


@pytest.mark.parametrize(
    ("answer", "kind", "words"),
    [
        ({"code": "NoSuchKey", "status": 404}, ObjectMissing, "no such object"),
        ({"status": 404}, ObjectMissing, "no such object"),
        ({"code": "NoSuchBucket", "status": 404}, ObjectMissing, "bucket does not exist"),
        ({"status": 403}, StorageError, "access denied (AccessDenied)"),
        ({"status": 401}, StorageError, "access denied (Unauthenticated)"),
        ({"code": "SignatureDoesNotMatch", "status": 403}, StorageError, "AWS_* credentials"),
        ({"code": "RequestTimeTooSkewed", "status": 403}, StorageError, "RequestTimeTooSkewed"),
        ({"status": 429, "detail": "too many"}, StorageUnavailable, "unavailable (too many)"),
        ({"code": "SlowDown", "status": 503}, StorageUnavailable, "unavailable"),
        ({"transport": True, "detail": "refused"}, StorageUnavailable, "unavailable (refused)"),
        ({"code": "InvalidArgument", "status": 400}, StorageError, "InvalidArgument"),
    ],
)
def test_one_mapping_serves_both_clients(answer: dict[str, Any], kind: type, words: str) -> None:
    """boto3's errors (``explain``) and obstore's (``s3_data``) both go through storage_error."""
    mapped = storage_error("s3://b/k", **answer)
    assert type(mapped) is kind
    assert str(mapped).startswith("s3://b/k: ") and words in str(mapped)
    refused = answer.get("status") in (401, 403) and answer.get("code") != "RequestTimeTooSkewed"
    assert ("access denied" in str(mapped)) == refused


class _BrokenBody:
    def read(self, *args: Any) -> bytes:
        from botocore.exceptions import ReadTimeoutError

        raise ReadTimeoutError(endpoint_url="http://s3.test/unit-bucket/a.bin")

    def close(self) -> None:
        pass


def test_a_body_read_error_is_an_outage_not_a_bad_object(
    store: S3Store, s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put_bytes(BUCKET, "a.bin", b"data")
    real = s3_client.get_object

    def get_object(**kwargs: Any) -> dict[str, Any]:
        response = real(**kwargs)
        response["Body"].close()
        response["Body"] = _BrokenBody()
        return response

    monkeypatch.setattr(s3_client, "get_object", get_object)
    with pytest.raises(StorageUnavailable):
        store.get_bytes(BUCKET, "a.bin", max_bytes=100)


def test_temporary_credentials_keep_their_session_token() -> None:
    """STS/SSO credentials are three values: the token must reach the signer (it was dropped)."""
    from bucketvision.infra.s3 import make_client
    from bucketvision.infra.settings import Settings

    environ = {"AWS_ACCESS_KEY_ID": "ASIAX", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t"}
    credentials = make_client(Settings.from_env(environ))._request_signer._credentials
    assert (credentials.access_key, credentials.token) == ("ASIAX", "t")


def test_without_keys_the_default_chain_reads_a_profile(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bucketvision.infra.s3 import make_client
    from bucketvision.infra.settings import Settings

    shared = tmp_path / "credentials"
    shared.write_text("[team]\naws_access_key_id = AKIATEAM\naws_secret_access_key = x\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
    monkeypatch.setenv("AWS_PROFILE", "team")
    credentials = make_client(Settings.from_env({}))._request_signer._credentials
    assert credentials.access_key == "AKIATEAM"
