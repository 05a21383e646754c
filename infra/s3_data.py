"""The data plane: the GETs and PUTs of a batch's images, results and plan, through obstore.

A worker spends most of its CPU outside the model on the S3 requests of each image:
boto3 builds, signs and parses every request in Python (about 1.4 ms of CPU per GET or
PUT on the development machine), where obstore (the Rust ``object_store`` crate) does
the same in native code with the GIL released (about 0.45 ms); ``make bench`` measures
both side by side. The control plane (listings, the registry, multipart manifests,
copies) stays on boto3 in :mod:`infra.s3`.

What stays the same as boto3's:

- **credentials**: botocore resolves them, so the default chain (environment,
  ``AWS_PROFILE`` and the shared files, container and instance roles, SSO) and
  session tokens work as they do for boto3, refreshed as they expire;
- **endpoint and TLS**: ``BV_S3_ENDPOINT_URL`` with path-style requests (virtual-hosted
  on AWS), and botocore's CA bundle (``AWS_CA_BUNDLE``) for a private certificate;
- **retries**: 5xx answers, throttling and connection errors are retried with exponential
  backoff and jitter, about as many times as boto3's standard mode (``RETRIES``);
- **errors**: the store's vocabulary (:class:`ObjectMissing`, :class:`StorageUnavailable`,
  an access-denied :class:`StorageError`), with the same messages.

``BV_S3_DATA_CLIENT=boto3`` turns it off: then boto3 does these requests too.
"""

from __future__ import annotations

import re
import threading
from datetime import timedelta
from typing import Any

import botocore.session

try:
    import obstore
    from obstore.auth.boto3 import Boto3CredentialProvider
    from obstore.store import S3Store as ObjectStore
except ImportError:  # a producer-only install: the worker extra brings obstore
    obstore = None

from bucketvision.infra.s3_errors import ObjectTooLarge, StorageError, storage_error
from bucketvision.infra.settings import Settings

RETRIES = {
    "max_retries": 7,
    "retry_timeout": timedelta(seconds=60),
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=20)},
}
_STATUS = re.compile(r"status code: (\d{3})")
_CODE = re.compile(r"<Code>([^<]+)</Code>")


def _explain(error: Exception, what: str) -> StorageError:
    """The store's error for what obstore raised (its text names the status and S3's code)."""
    text = str(error)
    status_found, code_found = _STATUS.search(text), _CODE.search(text)
    status = int(status_found.group(1)) if status_found else 0
    code = code_found.group(1) if code_found else ""
    name = type(error).__name__
    if isinstance(error, FileNotFoundError) and not code:
        code = "NoSuchKey"
    if name in ("PermissionDeniedError", "UnauthenticatedError") and not (code or status):
        status = 403 if name == "PermissionDeniedError" else 401
    transport = not status and name == "GenericError"  # refused, reset, timed out
    detail = text.split("\n\n", 1)[0].strip()
    return storage_error(what, code=code, status=status, transport=transport, detail=detail)


class ObstoreDataPlane:
    """GET and PUT of whole objects through one obstore client per bucket (thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        session = botocore.session.get_session()
        if settings.aws_access_key_id:
            session.set_credentials(
                settings.aws_access_key_id,
                settings.aws_secret_access_key,
                settings.aws_session_token,
            )
        self.settings = settings
        self._session = session
        self._credentials: Any = None
        self._stores: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _store(self, bucket: str) -> Any:
        store = self._stores.get(bucket)
        if store is not None:
            return store
        with self._lock:
            if bucket not in self._stores:
                if self._credentials is None:
                    if self._session.get_credentials() is None:
                        raise StorageError(
                            "no AWS credentials found: set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or give the worker a role"
                        )
                    self._credentials = Boto3CredentialProvider(self._session)
                endpoint = self.settings.s3_endpoint_url
                options: dict[str, Any] = {"connect_timeout": "5s", "timeout": "60s"}
                if endpoint and endpoint.startswith("http://"):
                    options["allow_http"] = True
                ca_bundle = self._session.get_config_variable("ca_bundle")
                if ca_bundle:
                    with open(ca_bundle, "rb") as handle:
                        options["root_certificate"] = handle.read()
                self._stores[bucket] = ObjectStore(
                    bucket,
                    endpoint=endpoint,
                    region=self.settings.aws_region,
                    virtual_hosted_style_request=endpoint is None,
                    credential_provider=self._credentials,
                    client_options=options,
                    retry_config=RETRIES,
                )
            return self._stores[bucket]

    def get_bytes(self, bucket: str, key: str, *, max_bytes: int | None = None) -> bytes:
        """Read a whole object, refusing one larger than ``max_bytes`` before reading it."""
        what = f"s3://{bucket}/{key}"
        try:
            result = obstore.get(self._store(bucket), key)
            size = int(result.meta["size"])
            if max_bytes is not None and size > max_bytes:
                raise ObjectTooLarge(
                    f"{what} is {size} bytes, above BV_MAX_OBJECT_BYTES={max_bytes}"
                )
            return bytes(result.bytes())
        except StorageError:
            raise
        except Exception as error:
            raise _explain(error, what) from error

    def get_range(self, bucket: str, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of an object (a slice of a job's plan); fewer at its end."""
        what = f"s3://{bucket}/{key} bytes {start}-{end - 1}"
        try:
            return bytes(obstore.get_range(self._store(bucket), key, start=start, end=end))
        except StorageError:
            raise
        except Exception as error:
            raise _explain(error, what) from error

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        try:
            obstore.put(self._store(bucket), key, data, attributes={"Content-Type": content_type})
        except StorageError:
            raise
        except Exception as error:
            raise _explain(error, f"writing s3://{bucket}/{key}") from error


def open_data_plane(settings: Settings) -> ObstoreDataPlane | None:
    """The data plane ``BV_S3_DATA_CLIENT`` names; None: boto3 does the data requests too."""
    if settings.s3_data_client == "boto3":
        return None
    if obstore is None:
        raise StorageError(
            "BV_S3_DATA_CLIENT=obstore but obstore is not installed: install the worker "
            "extra (pip install 'bucketvision[worker]') or set BV_S3_DATA_CLIENT=boto3"
        )
    return ObstoreDataPlane(settings)
