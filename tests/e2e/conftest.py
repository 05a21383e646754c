"""End-to-end fixtures: a trained model in the registry and real worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.s3 import S3Store
from infra.settings import Settings
from tests.helpers import train_and_register_digits

ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """``bucketvision worker`` in a subprocess of its own session."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.log_path = log_path
        command = [sys.executable, "-m", "producer.cli", "worker", *args]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def children(self) -> list[int]:
        """PIDs of the prefork pool children."""
        path = f"/proc/{self.process.pid}/task/{self.process.pid}/children"
        try:
            with open(path) as handle:
                return [int(pid) for pid in handle.read().split()]
        except FileNotFoundError:
            return []

    def wait_for_children(self, count: int, timeout: float = 60) -> list[int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            found = self.children()
            if len(found) >= count:
                return found
            time.sleep(0.2)
        raise AssertionError(f"worker did not start {count} children\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture(scope="session")
def digits_model(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> str:
    store = S3Store.from_settings(settings)
    return train_and_register_digits(settings, store, "digits", str(tmp_path_factory.mktemp("m")))


@pytest.fixture
def start_worker(service_env: dict[str, str], tmp_path: Path) -> Iterator[object]:
    started: list[WorkerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(
            {**service_env, **(env or {})}, tmp_path / f"worker{len(started)}.log", *args
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
