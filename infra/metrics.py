"""Serving Prometheus metrics on ``BV_METRICS_PORT``: what every process shares.

Nothing here imports ``prometheus_client`` at import time: a process without
``BV_METRICS_PORT`` never loads it. A single process (watcher, beat) serves the
default registry with :func:`start_exporter`. The worker is a Celery prefork
pool, so it uses the client's multiprocess mode (:func:`start_multiprocess_exporter`):
the parent points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the
client is imported and before the pool forks, every child writes its values to
files there, and the parent serves their sum. A child that exits marks its live
gauges dead; the parent drops those of children that were killed before a scrape.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bucketvision.infra.settings import SettingsError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def require_client() -> None:
    """Raise a SettingsError naming the fix when prometheus-client is not installed."""
    if importlib.util.find_spec("prometheus_client") is None:  # found, not imported
        raise SettingsError(
            "BV_METRICS_PORT is set but prometheus-client is not installed; install the "
            "worker or ops extra (pip install 'bucketvision[ops]') or unset BV_METRICS_PORT"
        )


def prepare_multiprocess_dir() -> tuple[str, bool]:
    """Point ``PROMETHEUS_MULTIPROC_DIR`` at an empty directory; returns (path, created).

    Must run before ``prometheus_client`` is imported (it picks its value class at
    import) and before the pool forks. A directory given in the environment is
    emptied of the files of a previous run; otherwise a fresh one is created.
    """
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess directory")
    given = os.environ.get(MULTIPROC_ENV, "").strip()
    if given:
        os.makedirs(given, exist_ok=True)
        for stale in glob.glob(os.path.join(given, "*.db")):
            os.remove(stale)
        return given, False
    path = tempfile.mkdtemp(prefix="bucketvision-metrics-")
    os.environ[MULTIPROC_ENV] = path
    return path, True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_dead(pid: int, path: str | None = None) -> None:
    """Drop the live gauges of process ``pid`` (its counters stay in the sums)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)


class LiveProcessesCollector:
    """The multiprocess collector, after dropping live gauges of processes that are gone.

    A pool child killed with SIGKILL never runs its exit hook, so without this its
    ``bv_model_info`` would be reported until the worker restarts.
    """

    def __init__(self, path: str) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self.path = path
        self._inner = MultiProcessCollector(None, path)

    def collect(self) -> Iterable[Metric]:
        for file in glob.glob(os.path.join(self.path, "gauge_live*_*.db")):
            pid = os.path.basename(file)[: -len(".db")].rpartition("_")[2]
            if pid.isdigit() and not _alive(int(pid)):
                mark_dead(int(pid), self.path)
        return self._inner.collect()


@dataclass
class Exporter:
    """A running ``/metrics`` endpoint."""

    server: Any  # wsgiref's WSGIServer, from prometheus_client.start_http_server
    directory: str | None = None
    owns_directory: bool = False

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close_in_child(self) -> None:
        """In a forked child: close the inherited listening socket (the parent serves)."""
        self.server.socket.close()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.owns_directory and self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)


def _serve(port: int, registry: CollectorRegistry) -> Any:
    from prometheus_client import start_http_server

    try:
        server, _thread = start_http_server(port, registry=registry)
    except OSError as error:
        raise SettingsError(
            f"BV_METRICS_PORT={port}: cannot serve metrics ({error}); every process on a "
            "host needs a port of its own"
        ) from None
    return server


def start_exporter(port: int, registry: CollectorRegistry | None = None) -> Exporter:
    """Serve ``registry`` (default: the client's global one) on ``port`` in a thread."""
    require_client()
    from prometheus_client import REGISTRY

    return Exporter(_serve(port, registry or REGISTRY))


def start_multiprocess_exporter(port: int) -> Exporter:
    """Prepare the multiprocess directory, then serve the sum of every process's files."""
    require_client()
    path, created = prepare_multiprocess_dir()
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=True)
    registry.register(LiveProcessesCollector(path))  # type: ignore[arg-type]
    try:
        server = _serve(port, registry)
    except SettingsError:
        if created:
            shutil.rmtree(path, ignore_errors=True)
        raise
    return Exporter(server, path, created)
