"""The store's error vocabulary, and S3's answers mapped to it whichever client got them.

One base class for storage errors a user sees (:class:`StorageError`), one for "try later"
(:class:`StorageUnavailable`, ridden out by batches), and :func:`storage_error`, the one
mapping of S3's codes and statuses to them with the one set of messages: boto3's errors
through :func:`explain`, obstore's through ``infra.s3_data``.
"""

from __future__ import annotations

from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from bucketvision.infra.errors import EXIT_UNAVAILABLE, UserError


class StorageError(UserError):
    """An S3 operation failed in a way the caller should report to the user."""


class StorageUnavailable(StorageError):
    """S3 did not answer, or said "try later" (5xx, throttling), after the client's retries.

    The object may be fine: retry the whole unit of work later, rather than report the
    object as failed. A command ends with exit code 3."""

    exit_code = EXIT_UNAVAILABLE


class ObjectTooLarge(StorageError):
    """The object is larger than BV_MAX_OBJECT_BYTES."""


class ObjectMissing(StorageError):
    """The object or bucket does not exist."""


def error_code(error: ClientError) -> str:
    """S3's error code in a botocore ClientError ("NoSuchKey", "SlowDown", "404")."""
    return str(error.response.get("Error", {}).get("Code", ""))


TRY_LATER_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "ServiceUnavailable"}
    | {"InternalError", "503", "500", "502", "504"}
)
_TRANSPORT_ERRORS = (BotoConnectionError, HTTPClientError, IncompleteReadError, ConnectionError)


def is_transient(error: BaseException) -> bool:
    """True for failures that say nothing about the object: network, timeouts, 5xx, throttling."""
    if isinstance(error, ClientError):
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return status >= 500 or error_code(error) in TRY_LATER_CODES
    return isinstance(error, _TRANSPORT_ERRORS)


ACCESS_DENIED_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"})


def storage_error(
    what: str, *, code: str = "", status: int = 0, transport: bool = False, detail: str = ""
) -> StorageError:
    """The store's error for what S3 answered (``code``, HTTP ``status``) or for a request
    that got no answer (``transport``), whichever client made it: the one vocabulary and
    the one set of messages of boto3's control plane and obstore's data plane."""
    if code == "NoSuchBucket":
        return ObjectMissing(f"{what}: the bucket does not exist ({code})")
    if code in ("NoSuchKey", "404", "NotFound") or (not code and status == 404):
        return ObjectMissing(f"{what}: no such object")
    if transport or status >= 500 or status == 429 or code in TRY_LATER_CODES:
        return StorageUnavailable(f"{what}: S3 is unavailable ({detail})")
    if code in ACCESS_DENIED_CODES or (not code and status in (401, 403)):
        code = code or ("AccessDenied" if status == 403 else "Unauthenticated")
        return StorageError(f"{what}: access denied ({code}); check the AWS_* credentials")
    return StorageError(f"{what}: {code or status or detail}")


def explain(error: Exception, what: str) -> StorageError:
    """The store's error for what boto3 or botocore raised while doing ``what``."""
    if isinstance(error, StorageError):
        return error
    if isinstance(error, EndpointConnectionError):
        return StorageUnavailable(
            f"{what}: cannot reach the S3 endpoint ({error}); is BV_S3_ENDPOINT_URL right?"
        )
    if isinstance(error, ClientError):
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        detail = f"{type(error).__name__}: {error}"
        return storage_error(what, code=error_code(error), status=status, detail=detail)
    if is_transient(error):
        detail = f"{type(error).__name__}: {error}"
        return storage_error(what, transport=True, detail=detail)
    return StorageError(f"{what}: {type(error).__name__}: {error}")
