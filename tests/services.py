"""Services tests start and break on purpose: a Redis with AOF (optionally TLS and a
password) that can be restarted, and a memory cgroup the kernel's OOM killer enforces."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from bucketvision.infra.local_services import free_port, redis_answers, redis_server_binary


class RestartableRedis:
    """A private redis-server with the compose file's persistence (AOF, fsync every second)."""

    def __init__(self, password: str | None = None, tls: dict[str, Path] | None = None) -> None:
        self.port = free_port()
        self.password = password
        self.tls = tls
        self.workdir = tempfile.mkdtemp(prefix="bv-chaos-redis-")
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            query = f"ssl_cert_reqs=required&ssl_ca_certs={self.tls['ca']}"
            return f"rediss://{auth}127.0.0.1:{self.port}/0?{query}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        ports = ["--port", str(self.port)]
        if self.tls:  # TLS only: a plain connection to this port fails
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            ports += ["--tls-cert-file", str(self.tls["cert"]), "--tls-key-file"]
            ports += [str(self.tls["key"]), "--tls-ca-cert-file", str(self.tls["ca"])]
        command = [
            redis_server_binary(),
            *ports,
            "--bind",
            "127.0.0.1",
            "--dir",
            self.workdir,
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
        ]
        if self.password:
            command += ["--requirepass", self.password]
        log = open(Path(self.workdir) / "redis.log", "ab")  # noqa: SIM115 - lives with the server
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while not redis_answers(self.url, 0.2):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: Redis flushes its AOF and exits, as in a restart or a failover."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)

    def close(self) -> None:
        self.stop(signal.SIGKILL)
        shutil.rmtree(self.workdir, ignore_errors=True)


class MemoryCgroup:
    """A cgroup (v1 or v2) with a memory limit; processes put in it are OOM-killed above it."""

    def __init__(self, limit_bytes: int) -> None:
        self.path = _new_cgroup()
        version_2 = (self.path / "memory.max").exists()
        limit_file = "memory.max" if version_2 else "memory.limit_in_bytes"
        (self.path / limit_file).write_text(str(limit_bytes))
        swap = self.path / "memory.swap.max"
        if swap.exists():
            swap.write_text("0")

    def enter(self) -> None:
        """Move the calling process in (used between fork and exec)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def oom_kills(self) -> int:
        events = self.path / "memory.events"
        if events.exists():
            for line in events.read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return int(value)
            return 0
        control = (self.path / "memory.oom_control").read_text()
        for line in control.splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
        return int((self.path / "memory.failcnt").read_text())

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def _new_cgroup() -> Path:
    """A fresh child of this process's memory cgroup; OSError when none can be made."""
    bases = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, relative = line.split(":", 2)
        if "memory" in controllers.split(","):
            bases["v1"] = Path("/sys/fs/cgroup/memory") / relative.lstrip("/")
        elif controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            bases["v2"] = Path("/sys/fs/cgroup") / relative.lstrip("/")
    base = bases.get("v1") or bases.get("v2")
    if base is None:
        raise OSError("this process is in no memory cgroup")
    path = base / f"bv-chaos-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir()
    return path
