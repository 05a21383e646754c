"""infra.settings: docs/settings.md defaults, BV_* parsing, errors that name the variable."""

from __future__ import annotations

import os

import pytest

from bucketvision.infra.settings import DEFAULT_MODELS, Settings, SettingsError, redact_url

SECRET_ENV = {
    "BV_BROKER_URL": "redis://:hunter2@host:6379/0",
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "topsecret",
}


def test_defaults_from_an_empty_environment_match_design() -> None:
    settings = Settings.from_env({})
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.models_uri == "s3://bucketvision/models/"
    assert settings.batch_size == 32
    assert settings.s3_endpoint_url is None  # unset means AWS
    assert settings.aws_region == "us-east-1"
    assert settings.aws_access_key_id is None
    assert settings.aws_secret_access_key is None
    assert settings.max_image_pixels == 40_000_000
    assert settings.max_object_bytes == 50 * 1024 * 1024
    assert settings.metrics_port is None


def test_from_env_does_not_read_os_environ_when_given_a_mapping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.startswith("BV_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BV_BATCH_SIZE", "7")
    monkeypatch.setenv("BV_BROKER_URL", "redis://elsewhere:1/2")
    assert Settings.from_env({}).batch_size == 32
    assert Settings.from_env().batch_size == 7
    assert Settings.from_env().broker_url == "redis://elsewhere:1/2"


def test_every_variable_is_parsed() -> None:
    settings = Settings.from_env(
        {
            "BV_BROKER_URL": "rediss://cache.example:6380/3",
            "BV_S3_ENDPOINT_URL": "http://127.0.0.1:5000",
            "AWS_REGION": "eu-west-3",
            "AWS_ACCESS_KEY_ID": "AKID",
            "AWS_SECRET_ACCESS_KEY": "SECRET",
            "BV_MODELS_URI": "s3://registry/models",
            "BV_BATCH_SIZE": "64",
            "BV_MAX_IMAGE_PIXELS": "1_000_000",
            "BV_MAX_OBJECT_BYTES": " 2048 ",
            "BV_METRICS_PORT": "9108",
            "BV_VISIBILITY_TIMEOUT": "7200",
            "BV_MODEL_REFRESH_SECONDS": "5",
            "BV_IO_THREADS": "4",
            "BV_MAX_ATTEMPTS": "3",
            "BV_MODEL_CACHE_DIR": "/var/cache/bv",
        }
    )
    assert settings.broker_url == "rediss://cache.example:6380/3"
    assert settings.s3_endpoint_url == "http://127.0.0.1:5000"
    assert settings.aws_region == "eu-west-3"
    assert settings.aws_access_key_id == "AKID"
    assert settings.aws_secret_access_key == "SECRET"
    assert settings.models_uri == "s3://registry/models/"  # a directory: trailing slash added
    assert settings.batch_size == 64
    assert settings.max_image_pixels == 1_000_000
    assert settings.max_object_bytes == 2048
    assert settings.metrics_port == 9108
    assert settings.visibility_timeout == 7200
    assert settings.model_refresh_seconds == 5
    assert settings.io_threads == 4
    assert settings.max_attempts == 3
    assert settings.model_cache_dir == "/var/cache/bv"


def test_region_falls_back_to_aws_default_region() -> None:
    assert Settings.from_env({"AWS_DEFAULT_REGION": "ap-south-1"}).aws_region == "ap-south-1"
    both = {"AWS_REGION": "eu-north-1", "AWS_DEFAULT_REGION": "ap-south-1"}
    assert Settings.from_env(both).aws_region == "eu-north-1"


def test_blank_values_mean_the_default() -> None:
    settings = Settings.from_env(
        {
            "BV_BATCH_SIZE": "  ",
            "BV_METRICS_PORT": "",
            "BV_S3_ENDPOINT_URL": "",
            "BV_MODELS_URI": "",
        }
    )
    assert settings.batch_size == 32
    assert settings.metrics_port is None
    assert settings.s3_endpoint_url is None
    assert settings.models_uri == "s3://bucketvision/models/"


@pytest.mark.parametrize(
    "name",
    [
        "BV_BATCH_SIZE",
        "BV_MAX_IMAGE_PIXELS",
        "BV_MAX_OBJECT_BYTES",
        "BV_METRICS_PORT",
        "BV_VISIBILITY_TIMEOUT",
        "BV_MODEL_REFRESH_SECONDS",
        "BV_IO_THREADS",
        "BV_MAX_ATTEMPTS",
    ],
)
@pytest.mark.parametrize("value", ["abc", "1.5", "12kb"])
def test_bad_integers_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize("value", ["0", "-3"])
def test_batch_size_below_one_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="BV_BATCH_SIZE"):
        Settings.from_env({"BV_BATCH_SIZE": value})


def test_metrics_port_zero_is_allowed_but_negative_is_not() -> None:
    assert Settings.from_env({"BV_METRICS_PORT": "0"}).metrics_port == 0
    with pytest.raises(SettingsError, match="BV_METRICS_PORT"):
        Settings.from_env({"BV_METRICS_PORT": "-1"})


@pytest.mark.parametrize(
    "uri", ["http://bucketvision/models/", "bucketvision/models/", "/models", "S3:/b/models"]
)
def test_models_uri_must_be_s3(uri: str) -> None:
    with pytest.raises(SettingsError, match="BV_MODELS_URI"):
        Settings.from_env({"BV_MODELS_URI": uri})


def test_broker_url_must_be_redis_and_the_error_hides_its_password() -> None:
    with pytest.raises(SettingsError, match="BV_BROKER_URL") as caught:
        Settings.from_env({"BV_BROKER_URL": "amqp://user:hunter2@rabbit:5672//"})
    assert "hunter2" not in str(caught.value)


def test_with_overrides_returns_a_changed_copy() -> None:
    settings = Settings.from_env({})
    changed = settings.with_overrides(batch_size=8)
    assert changed.batch_size == 8
    assert settings.batch_size == 32


def test_describe_never_contains_secrets() -> None:
    described = Settings.from_env(SECRET_ENV).describe()
    text = str(described)
    assert "hunter2" not in text
    assert "topsecret" not in text
    assert "AKIDEXAMPLE" not in text
    assert described["broker_url"] == "redis://:***@host:6379/0"
    assert described["aws_access_key_id"] == "set"
    assert described["batch_size"] == 32


def test_repr_never_contains_the_secret_access_key() -> None:
    assert "topsecret" not in repr(Settings.from_env(SECRET_ENV))
    assert "topsecret" not in str(Settings.from_env(SECRET_ENV))


def test_repr_never_contains_the_redis_password() -> None:
    assert "hunter2" not in repr(Settings.from_env(SECRET_ENV))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:hunter2@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:hunter2@host:6379/0", "redis://user:***@host:6379/0"),
        (
            "rediss://default:hunter2@host/1?ssl_cert_reqs=none",
            "rediss://default:***@host/1?ssl_cert_reqs=none",
        ),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("redis://user@host:6379/0", "redis://user@host:6379/0"),
        ("redis://:p%40ss%3Aword@host:6379/0", "redis://:***@host:6379/0"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_url_keeps_an_ipv6_host_valid() -> None:
    assert redact_url("redis://:pw@[::1]:6379/0") == "redis://:***@[::1]:6379/0"


def test_default_models_cover_every_task() -> None:
    assert set(DEFAULT_MODELS) == {"classify", "detect", "segment", "generate"}
    assert DEFAULT_MODELS["classify"] == "digits"


def test_outage_and_unsafe_model_settings() -> None:
    settings = Settings.from_env({"BV_OUTAGE_SECONDS": "90", "BV_UNSAFE_MODELS": " a, b ,,"})
    assert settings.outage_seconds == 90
    assert settings.unsafe_models == frozenset({"a", "b"})
    assert Settings.from_env({}).unsafe_models == frozenset()


def test_describe_redacts_a_password_in_the_s3_endpoint() -> None:
    settings = Settings.from_env({"BV_S3_ENDPOINT_URL": "http://minio:s3cr3t@minio:9000"})
    described = str(settings.describe())
    assert "s3cr3t" not in described and "minio:***@minio:9000" in described


def test_log_format_is_text_or_json() -> None:
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"BV_LOG_FORMAT": " JSON "}).log_format == "json"
    assert Settings.from_env({"BV_LOG_FORMAT": ""}).log_format == "text"
    assert Settings.from_env({"BV_LOG_FORMAT": "json"}).describe()["log_format"] == "json"
    with pytest.raises(SettingsError, match="BV_LOG_FORMAT"):
        Settings.from_env({"BV_LOG_FORMAT": "yaml"})


def test_the_data_plane_client_is_obstore_unless_boto3_is_asked_for() -> None:
    assert Settings.from_env({}).s3_data_client == "obstore"
    assert Settings.from_env({"BV_S3_DATA_CLIENT": "Boto3"}).s3_data_client == "boto3"
    assert Settings.from_env({}).describe()["s3_data_client"] == "obstore"
    with pytest.raises(SettingsError, match=r"BV_S3_DATA_CLIENT='awscrt': use obstore or boto3"):
        Settings.from_env({"BV_S3_DATA_CLIENT": "awscrt"})


def test_metrics_port_above_65535_is_refused() -> None:
    assert Settings.from_env({"BV_METRICS_PORT": "65535"}).metrics_port == 65535
    with pytest.raises(SettingsError, match="BV_METRICS_PORT"):
        Settings.from_env({"BV_METRICS_PORT": "70000"})


def test_the_forward_pass_takes_half_a_batch_unless_told() -> None:
    assert Settings.from_env({}).forward_batch == 16
    assert Settings.from_env({"BV_BATCH_SIZE": "1"}).forward_batch == 1
    assert Settings.from_env({"BV_FORWARD_BATCH": "32"}).forward_batch == 32


@pytest.mark.parametrize(
    ("timeout", "sweep"), [(3600, 10), (60, 10), (20, 5), (8, 2), (2, 1), (1, 1)]
)
def test_messages_of_dead_workers_are_swept_within_a_quarter_of_the_visibility_timeout(
    timeout: int, sweep: int
) -> None:
    from bucketvision.infra.queue import make_celery

    options = make_celery(Settings(visibility_timeout=timeout)).conf.broker_transport_options
    assert options["visibility_timeout"] == timeout
    # The sweep period is interval x throttle: kombu's default is 10 x 10 = 100 s.
    assert options["unacked_restore_interval"] * options["unacked_restore_throttle"] == sweep
    assert options["unacked_mutex_expire"] <= 60
