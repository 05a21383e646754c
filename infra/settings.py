"""One settings object, built from the environment when a command starts.

Every tunable of the service lives here so that the worker, the producer and the
tests agree on names and defaults. Nothing reads the environment at import time:
call :meth:`Settings.from_env` where the process starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit, urlunsplit

from bucketvision.infra.errors import UserError
from bucketvision.infra.ownership import LEASE_SECONDS

LOG_FORMATS = ("text", "json")
S3_DATA_CLIENTS = ("obstore", "boto3")  # BV_S3_DATA_CLIENT: the worker's GETs and PUTs
MAX_PORT = 65535
# A redelivery waits up to an owner lease to tell a live owner from a dead one
# (infra.ownership): its own delivery must not come back meanwhile.
MIN_VISIBILITY_TIMEOUT = int(2 * LEASE_SECONDS)
RIDE_OUT_MARGIN_SECONDS = 60  # the rest of a batch's work around an outage ride-out
DEFAULT_MODELS = {
    "classify": "digits",
    "detect": "shapes-detector",
    "segment": "shapes-segmenter",
    "generate": "digits-gan",
}


class SettingsError(UserError):
    """An environment variable holds a value the service cannot use."""


def _integer(environ: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        raise SettingsError(
            f"{name}={raw!r} is not an integer; unset it or give a number"
        ) from None
    if value < minimum:
        raise SettingsError(f"{name}={value} is below the minimum of {minimum}")
    return value


def _optional_integer(environ: Mapping[str, str], name: str) -> int | None:
    if not environ.get(name, "").strip():
        return None
    return _integer(environ, name, 0, minimum=0)


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` so it can be logged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{user}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """``env[name]`` lower-cased, one of ``choices`` (the first when unset)."""
    value = (env.get(name) or choices[0]).strip().lower()
    if value not in choices:
        raise SettingsError(f"{name}={env.get(name)!r}: use {' or '.join(choices)}")
    return value


def _checked(settings: Settings) -> Settings:
    """``settings``, unless its visibility timeout is shorter than a batch may take.

    A batch's owner renews a lease while it runs (:mod:`bucketvision.infra.ownership`),
    so a redelivery of a batch still running is told from one whose worker died,
    within an owner lease. Without the lost-batch audit, a redelivery that stood down
    leaves the batch unguarded should its owner then die: so with the audit off, a
    batch riding out an outage must not be redelivered at all.
    """
    timeout = settings.visibility_timeout
    if timeout < MIN_VISIBILITY_TIMEOUT:
        raise SettingsError(
            f"BV_VISIBILITY_TIMEOUT={timeout} is too short: a redelivered batch waits up to "
            f"the {LEASE_SECONDS:.0f} s lease of the worker running it to tell whether that "
            "worker is alive, and its own message must not come back meanwhile; set "
            f"BV_VISIBILITY_TIMEOUT to at least {MIN_VISIBILITY_TIMEOUT}"
        )
    ride_out = settings.outage_seconds + RIDE_OUT_MARGIN_SECONDS
    if settings.lost_batch_seconds == 0 and timeout < ride_out:
        raise SettingsError(
            f"BV_VISIBILITY_TIMEOUT={timeout} is shorter than a batch may take riding out an "
            f"outage (BV_OUTAGE_SECONDS={settings.outage_seconds}, plus "
            f"{RIDE_OUT_MARGIN_SECONDS} s), and BV_LOST_BATCH_SECONDS=0 turns off the audit "
            "that sends a batch again if its worker dies after a redelivery stood down; set "
            f"BV_VISIBILITY_TIMEOUT to at least {ride_out}, or BV_LOST_BATCH_SECONDS above 0"
        )
    return settings


@dataclass(frozen=True)
class Settings:
    """Configuration of one bucketvision process (producer, worker, watcher or CLI)."""

    broker_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    s3_endpoint_url: str | None = None
    sqs_endpoint_url: str | None = None  # watch --events sqs://: a local stack's SQS
    watch_events: str | None = field(default=None, repr=False)  # --events's default (a secret)
    aws_region: str = "us-east-1"
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_session_token: str | None = field(default=None, repr=False)  # temporary credentials
    models_uri: str = "s3://bucketvision/models/"
    batch_size: int = 32
    job_window: int = 256  # batches of one job on the queue at a time (infra.job_plans)
    requested_forward_batch: int | None = None  # BV_FORWARD_BATCH; None: half a batch
    max_image_pixels: int = 40_000_000
    max_object_bytes: int = 50 * 1024 * 1024
    metrics_port: int | None = None
    visibility_timeout: int = 3600
    model_refresh_seconds: int = 30
    io_threads: int = 16
    max_attempts: int = 5
    outage_seconds: int = 600
    lost_batch_seconds: int = 600
    schedule_file: str | None = None
    log_format: str = "text"
    s3_data_client: str = "obstore"
    unsafe_models: frozenset[str] = frozenset()
    model_cache_dir: str = field(
        default_factory=lambda: os.path.join(os.path.expanduser("~"), ".cache", "bucketvision")
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default: ``os.environ``); raise SettingsError."""
        env = os.environ if environ is None else environ
        defaults = cls()
        models_uri = env.get("BV_MODELS_URI") or defaults.models_uri
        if not models_uri.startswith("s3://"):
            raise SettingsError(f"BV_MODELS_URI={models_uri!r} must be an s3:// URI")
        broker_url = env.get("BV_BROKER_URL") or defaults.broker_url
        if not broker_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(
                f"BV_BROKER_URL={redact_url(broker_url)!r} must be a redis:// or rediss:// URL"
            )
        metrics_port = _optional_integer(env, "BV_METRICS_PORT")
        if metrics_port is not None and metrics_port > MAX_PORT:
            raise SettingsError(f"BV_METRICS_PORT={metrics_port} is above {MAX_PORT}")
        return _checked(
            cls(
                broker_url=broker_url,
                s3_endpoint_url=env.get("BV_S3_ENDPOINT_URL") or None,
                sqs_endpoint_url=env.get("BV_SQS_ENDPOINT_URL") or None,
                watch_events=env.get("BV_WATCH_EVENTS") or None,
                aws_region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
                aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
                aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
                aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
                models_uri=models_uri if models_uri.endswith("/") else models_uri + "/",
                batch_size=_integer(env, "BV_BATCH_SIZE", defaults.batch_size),
                job_window=_integer(env, "BV_JOB_WINDOW", defaults.job_window),
                requested_forward_batch=_optional_integer(env, "BV_FORWARD_BATCH") or None,
                max_image_pixels=_integer(env, "BV_MAX_IMAGE_PIXELS", defaults.max_image_pixels),
                max_object_bytes=_integer(env, "BV_MAX_OBJECT_BYTES", defaults.max_object_bytes),
                metrics_port=metrics_port,
                visibility_timeout=_integer(
                    env, "BV_VISIBILITY_TIMEOUT", defaults.visibility_timeout
                ),
                model_refresh_seconds=_integer(
                    env, "BV_MODEL_REFRESH_SECONDS", defaults.model_refresh_seconds
                ),
                io_threads=_integer(env, "BV_IO_THREADS", defaults.io_threads),
                max_attempts=_integer(env, "BV_MAX_ATTEMPTS", defaults.max_attempts),
                outage_seconds=_integer(env, "BV_OUTAGE_SECONDS", defaults.outage_seconds),
                lost_batch_seconds=_integer(
                    env, "BV_LOST_BATCH_SECONDS", defaults.lost_batch_seconds, minimum=0
                ),
                schedule_file=env.get("BV_SCHEDULE_FILE") or None,
                log_format=_choice(env, "BV_LOG_FORMAT", LOG_FORMATS),
                s3_data_client=_choice(env, "BV_S3_DATA_CLIENT", S3_DATA_CLIENTS),
                unsafe_models=frozenset(
                    name.strip()
                    for name in env.get("BV_UNSAFE_MODELS", "").split(",")
                    if name.strip()
                ),
                model_cache_dir=env.get("BV_MODEL_CACHE_DIR") or defaults.model_cache_dir,
            )
        )

    @property
    def forward_batch(self) -> int:
        """Images per compiled forward pass: ``BV_FORWARD_BATCH``, else half a batch.

        Half a batch lets a child run the forward pass on the first half while the
        second half downloads, and upload the first while the second runs.
        """
        return self.requested_forward_batch or max(1, self.batch_size // 2)

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields changed (used by commands with flags)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def describe(self) -> dict[str, object]:
        """The settings as a dict that is safe to print or log: no secrets."""
        return {
            "broker_url": redact_url(self.broker_url),
            "s3_endpoint_url": redact_url(self.s3_endpoint_url)
            if self.s3_endpoint_url
            else "(AWS)",
            "sqs_endpoint_url": redact_url(self.sqs_endpoint_url)
            if self.sqs_endpoint_url
            else "(AWS)",
            "aws_region": self.aws_region,
            "aws_access_key_id": "set" if self.aws_access_key_id else "(default chain)",
            "models_uri": self.models_uri,
            "batch_size": self.batch_size,
            "job_window": self.job_window,
            "max_image_pixels": self.max_image_pixels,
            "max_object_bytes": self.max_object_bytes,
            "metrics_port": self.metrics_port,
            "log_format": self.log_format,
            "s3_data_client": self.s3_data_client,
            "visibility_timeout": self.visibility_timeout,
            "outage_seconds": self.outage_seconds,
            "lost_batch_seconds": self.lost_batch_seconds,
            "unsafe_models": sorted(self.unsafe_models),
        }
