"""What this machine allows, worked out from the bench's own CPU accounting.

On a small machine the S3 server, the model and the service share the cores, so
a target can be out of reach whatever the service does. Every timed run records
the CPU seconds of each process tree (``bench_cpu.CpuMeter``); from those, per
model:

- ``forward_ms``: CPU per image of the compute ceiling (its processes only);
- ``decode_ms``: CPU per image of the service's decoder (JPEG draft mode), on
  one thread of the bench over objects of the corpus (``bench_budget.decode_split_ms``,
  decode and preprocess together): the cheapest decode of the contenders (the peers
  decode in full);
- ``server_ms_*`` / ``client_ms_*``: CPU of the S3 server, and of the fastest
  data-plane client measured (the bench's own process, which does nothing else
  then), per item of the GET+PUT ceiling and per GET of the GETs-only ceiling;
- ``most_with_outputs`` / ``most_without_outputs``: the most images/s that any
  contender which GETs each image with that client (and PUTs its result) could reach
  here, ``min(cores / (forward + decode + server + client), SERVER_CORES /
  server)``: the forward pass, decoding and both ends of the S3 work share the
  cores, and a single-process Python server (moto, one GIL) uses at most one
  of them.

The bound leaves out queueing, Celery and Redis, and per-image figures divide by
the run's whole wall time, so it is generous: real figures stay below it. A
target whose ratio exceeds what the bound allows cannot be met on this machine
with this S3 server.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

SERVER = "s3_server"
CLIENT = "bench_producer"  # the storage ceilings' clients run in the bench's process
SERVER_CORES = 1.0


def cpu_ms_per_image(entry: dict[str, Any], counts: Callable[[str], bool]) -> float | None:
    """Median over a figure's runs of the CPU ms per image of the processes ``counts`` picks."""
    values = []
    for job in entry.get("jobs") or []:
        cpu, rate = job.get("cpu"), job.get("images_per_second")
        if not cpu or not rate or not cpu.get("wall_seconds"):
            continue
        seconds = sum(used for name, used in cpu["cpu_seconds"].items() if counts(name))
        values.append(1000.0 * seconds / (rate * cpu["wall_seconds"]))
    return statistics.median(values) if values else None


def _most(cores: int, per_image: Sequence[float | None], server_ms: float | None) -> float | None:
    if not server_ms or any(value is None for value in per_image):
        return None
    shared = 1000.0 * cores / (sum(value or 0.0 for value in per_image) + server_ms)
    return min(shared, 1000.0 * SERVER_CORES / server_ms)


def _fastest_client(figures: dict[str, Any], kind: str) -> float | None:
    """The least client CPU per item of a storage ceiling of ``kind`` over the clients run."""
    names = [name for name in figures if name == kind or name.startswith(f"{kind}_")]
    if kind == "get":
        names = [name for name in names if not name.startswith("get_put")]
    found = [cpu_ms_per_image(figures[name], lambda n: n == CLIENT) for name in names]
    return min((value for value in found if value is not None), default=None)


def bounds(figures: dict[str, Any], cores: int, decode_ms: float | None) -> dict[str, Any]:
    """The per-image CPU figures and the most this machine allows, for one model."""
    forward_ms = cpu_ms_per_image(figures.get("compute", {}), lambda n: n.startswith("compute_"))
    kinds = ("get_put", "get")
    server = {k: cpu_ms_per_image(figures.get(k, {}), lambda n: n == SERVER) for k in kinds}
    client = {k: _fastest_client(figures, k) for k in kinds}
    return {
        "cores": cores,
        "forward_ms": forward_ms,
        "decode_ms": decode_ms,
        **{f"server_ms_{kind}": server[kind] for kind in kinds},
        **{f"client_ms_{kind}": client[kind] for kind in kinds},
        "most_with_outputs": _most(
            cores, (forward_ms, decode_ms, client["get_put"]), server["get_put"]
        ),
        "most_without_outputs": _most(cores, (forward_ms, decode_ms, client["get"]), server["get"]),
    }


def at_most(
    limits: dict[str, Any], figures: dict[str, Any], key: str, against: str
) -> float | None:
    """The highest ratio ``key`` over ``against`` could reach here, or None if unknown."""
    most = limits.get(
        "most_without_outputs" if key == "pipeline_no_item_outputs" else "most_with_outputs"
    )
    other = figures.get(against, {}).get("images_per_second")
    return most / other if most and other else None


def lines(limits: dict[str, Any]) -> list[str]:
    """The bound as the report prints it under a model's table."""
    if limits.get("most_with_outputs") is None:
        return []
    text = (
        f"  CPU per image: forward {limits['forward_ms']:.2f} ms (compute ceiling); "
        f"decode {limits['decode_ms']:.2f} ms; "
        f"S3 server + fastest client {limits['server_ms_get_put']:.2f} + "
        f"{limits['client_ms_get_put']:.2f} ms per GET+PUT"
    )
    if limits.get("server_ms_get") and limits.get("client_ms_get") is not None:
        text += f", {limits['server_ms_get']:.2f} + {limits['client_ms_get']:.2f} ms per GET"
    return [
        text,
        f"  most any contender can reach here: min({limits['cores']} cores / (forward + "
        f"decode + server + client), {SERVER_CORES:g} core / server) = "
        f"{limits['most_with_outputs']:,.1f} img/s with item outputs"
        + (
            f", {limits['most_without_outputs']:,.1f} without"
            if limits.get("most_without_outputs")
            else ""
        ),
    ]
