"""Real ``bucketvision worker`` processes for end-to-end and chaos tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class WorkerProcess:
    """``bucketvision worker`` in a subprocess of its own session."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *args: str,
        module: str = "bucketvision.producer.cli",
        before_exec: Callable[[], None] | None = None,
    ) -> None:
        self.log_path = log_path
        command = [sys.executable, "-m", module, "worker", *args]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=before_exec,
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
        """The end of the log, for assertion messages."""
        return self.full_log()[-5000:]

    def full_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole worker (parent and children), as a host failure would."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
