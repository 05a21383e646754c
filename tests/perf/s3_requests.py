"""The bench's S3 server's work by kind of request: what a job asks of S3 besides its items.

moto serves every request on one interpreter, so its CPU is what every contender
shares; a job's own requests (its listing, its manifest parts and plan, its summary)
take from what is left for the items' GETs and PUTs, and the storage ceilings make
none of them. The server (:mod:`tests.perf.s3_keepalive`) wraps moto's application in
a :class:`RequestLedger`: each request's kind, and the CPU its thread spent in moto's
application (``time.thread_time``: not the time it waited for the GIL, nor cheroot's
own parsing and sockets). ``GET /_bench/requests`` answers the totals as JSON, and
:func:`read_ledger` reads them, so the bench takes the difference over each run.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

LEDGER_PATH = "/_bench/requests"
JOB_FILES = "/_jobs/"  # a job's plan, manifest parts, manifest and summary (infra.outputs)
REGISTRY = "models/"  # the bench's model registry (bench.MODELS_URI): cards and model files
KINDS = ("item GETs", "item PUTs", "listings", "job files", "registry", "deletes", "other")
OWN_KINDS = ("listings", "job files", "registry", "deletes")  # a job's own, beside its items'
# The query of a ListObjects (V1 or V2); any other bucket GET (?location, ?uploads) is "other".
LISTING_PARAMETERS = {
    *("list-type", "prefix", "delimiter", "encoding-type", "max-keys"),
    *("marker", "continuation-token", "start-after", "fetch-owner"),
}

StartResponse = Callable[..., Any]
Application = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def request_kind(method: str, path: str, query: str) -> str:
    """The kind of an S3 request from its method, path (``/bucket/key``) and query."""
    bucket, _, key = path.lstrip("/").partition("/")
    if not key:
        names = {part.partition("=")[0] for part in query.split("&") if part}
        if method == "GET" and bucket and names <= LISTING_PARAMETERS:
            return "listings"
        return "deletes" if method == "POST" and "delete" in query else "other"
    if JOB_FILES in f"/{key}" or "uploadId" in query or "uploads" in query:
        return "job files"
    if key.startswith(REGISTRY):
        return "registry"
    if method == "GET":
        return "item GETs"
    return "item PUTs" if method == "PUT" else "other"


class RequestLedger:
    """A WSGI middleware counting requests and their application CPU by kind."""

    def __init__(self, application: Application) -> None:
        self.application = application
        self.totals = {kind: [0, 0.0] for kind in KINDS}
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == LEDGER_PATH:
            with self.lock:
                body = json.dumps(self.totals).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        kind = request_kind(environ["REQUEST_METHOD"], path, environ.get("QUERY_STRING", ""))
        started = time.thread_time()
        try:
            return self.application(environ, start_response)
        finally:
            spent = time.thread_time() - started
            with self.lock:
                self.totals[kind][0] += 1
                self.totals[kind][1] += spent


def read_ledger(endpoint: str) -> dict[str, list[float]] | None:
    """The server's totals by kind; None for a server without a ledger (``--s3`` elsewhere)."""
    try:
        with urllib.request.urlopen(endpoint.rstrip("/") + LEDGER_PATH, timeout=5) as answer:  # nosec B310: the bench's own http server
            return json.loads(answer.read())
    except (OSError, ValueError):
        return None


def ledger_difference(
    before: dict[str, list[float]] | None, after: dict[str, list[float]] | None
) -> dict[str, dict[str, float]] | None:
    """Requests and CPU seconds by kind between two readings (None without both)."""
    if before is None or after is None:
        return None
    return {
        kind: {
            "requests": int(after[kind][0] - before[kind][0]),
            "cpu_seconds": round(after[kind][1] - before[kind][1], 3),
        }
        for kind in KINDS
        if kind in after and kind in before
    }


def own_share(work: dict[str, dict[str, float]]) -> float | None:
    """The CPU of a run's own requests as a share of its items' GETs and PUTs."""
    items = work["item GETs"]["cpu_seconds"] + work["item PUTs"]["cpu_seconds"]
    own = sum(work[kind]["cpu_seconds"] for kind in OWN_KINDS)
    return own / items if items > 0 else None


def _mean_work(jobs: list[dict[str, Any]]) -> dict[str, dict[str, float]] | None:
    """The mean of the runs' server work by kind (runs without a ledger left out)."""
    works = [job["s3_server"] for job in jobs if job.get("s3_server")]
    if not works:
        return None
    return {
        kind: {
            name: sum(work[kind][name] for work in works) / len(works)
            for name in ("requests", "cpu_seconds")
        }
        for kind in works[0]
    }


def _requests(kind: dict[str, float]) -> str:
    """``"3 requests"``: a kind's mean count of requests per run, rounded."""
    text = f"{kind['requests']:,.0f}"
    return f"{text} request" if text == "1" else f"{text} requests"


def server_lines(figures: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """The S3 server's application CPU per image by kind of request, for the GET+PUT ceiling
    and the pipeline judged against it (means over the runs), and what that bounds: with
    moto as busy as in the ceiling, the pipeline reaches at most the ratio of their work."""
    lines, ceiling = [], None
    for key in ("get_put_obstore", "pipeline"):
        jobs = [job for job in (figures.get(key) or {}).get("jobs") or [] if job.get("items")]
        work = _mean_work(jobs)
        if work is None:
            continue
        count = statistics.mean(job["items"] for job in jobs)
        per_image = sum(kind["cpu_seconds"] for kind in work.values()) * 1e3 / count
        parts = ", ".join(
            f"{kind} {work[kind]['cpu_seconds'] * 1e3 / count:.2f} ({_requests(work[kind])})"
            for kind in KINDS
            if work.get(kind, {}).get("requests")
        )
        line = f"  S3 server CPU in moto per image, {labels[key]}: {per_image:.2f} ms ({parts})"
        share = own_share(work)
        if key == "get_put_obstore":
            ceiling = per_image
        elif share is not None:
            line += f"; the job's own requests: {share:.1%} of its items'"
            if ceiling:
                line += f"; at most {ceiling / per_image:.3f} of the ceiling with moto as busy"
        lines.append(line)
    return lines
