"""The bench S3 server's ledger: each request's kind, its totals, and what the bench prints."""

from __future__ import annotations

import json
from typing import Any

from tests.perf.s3_requests import (
    KINDS,
    LEDGER_PATH,
    RequestLedger,
    ledger_difference,
    own_share,
    request_kind,
    server_lines,
)


def test_each_request_of_a_job_has_its_kind() -> None:
    assert request_kind("GET", "/bench/digits/3/00017.png", "") == "item GETs"
    assert request_kind("PUT", "/bench-out/out/digits/3/00017.png.json", "") == "item PUTs"
    assert request_kind("GET", "/bench", "list-type=2&prefix=digits%2F") == "listings"
    assert request_kind("GET", "/bench", "prefix=digits%2F&marker=x") == "listings"  # V1
    assert request_kind("GET", "/bench", "") == "listings"
    assert request_kind("GET", "/bench", "location") == "other"
    assert request_kind("GET", "/bench", "uploads&prefix=a") == "other"
    assert request_kind("PUT", "/bench-out/out/_jobs/j1/parts/00000007.jsonl", "") == "job files"
    assert request_kind("GET", "/bench-out/out/_jobs/j1/plan.jsonl", "") == "job files"
    assert request_kind("PUT", "/bench-out/out/manifest.jsonl", "partNumber=1&uploadId=u") == (
        "job files"
    )
    assert request_kind("GET", "/bench-models/models/bench/v1/card.json", "") == "registry"
    assert request_kind("POST", "/bench-out", "delete") == "deletes"
    assert request_kind("HEAD", "/bench", "") == "other"
    assert request_kind("HEAD", "/bench/digits/1.png", "") == "other"


def _answer(ledger: RequestLedger, method: str, path: str, query: str = "") -> bytes:
    statuses: list[str] = []
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query}
    body = ledger(environ, lambda status, headers: statuses.append(status))
    return b"".join(body)


def test_the_ledger_counts_what_it_passes_on_and_answers_its_totals() -> None:
    served: list[str] = []

    def application(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        served.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b"moto"]

    ledger = RequestLedger(application)
    before = json.loads(_answer(ledger, "GET", LEDGER_PATH))
    assert _answer(ledger, "GET", "/bench/a.png") == b"moto"
    _answer(ledger, "GET", "/bench", "list-type=2")
    _answer(ledger, "GET", "/bench/b.png")
    after = json.loads(_answer(ledger, "GET", LEDGER_PATH))
    assert served == ["/bench/a.png", "/bench", "/bench/b.png"]  # the ledger's own: not moto's
    work = ledger_difference(before, after)
    assert work is not None
    assert work["item GETs"]["requests"] == 2
    assert work["listings"]["requests"] == 1
    assert work["item PUTs"]["requests"] == 0
    assert all(kind["cpu_seconds"] >= 0 for kind in work.values())
    assert ledger_difference(None, after) is None  # a server without a ledger: no figure


def _work(**cpu: float) -> dict[str, dict[str, float]]:
    """A run's work by kind: ``item_GETs=2.0`` is 2 s over 3 requests; other kinds none."""
    work = {kind: {"requests": 0, "cpu_seconds": 0.0} for kind in KINDS}
    for name, seconds in cpu.items():
        work[name.replace("_", " ")] = {"requests": 3, "cpu_seconds": seconds}
    return work


def test_the_jobs_own_requests_are_a_share_of_its_items() -> None:
    work = _work(item_GETs=5.0, item_PUTs=5.0, listings=0.6, job_files=0.4, other=9.0)
    assert own_share(work) == 0.1  # HEADs and the like are neither
    assert own_share(_work()) is None


def test_the_bench_prints_the_servers_work_per_image_for_the_pipeline_and_its_ceiling() -> None:
    figures = {
        "get_put_obstore": {"jobs": [{"items": 1000, "s3_server": _work(item_GETs=2.0)}]},
        "pipeline": {
            "jobs": [
                {"items": 1000, "s3_server": _work(item_GETs=2.0, listings=0.2)},
                {"items": 1000, "s3_server": _work(item_GETs=2.0, listings=0.4)},
            ]
        },
        "pipeline_no_item_outputs": {"jobs": [{"items": 1000}]},  # no ledger: no line
    }
    labels = {"get_put_obstore": "GET+PUT, obstore (ceiling)", "pipeline": "pipeline"}
    lines = server_lines(figures, labels)
    assert len(lines) == 2
    assert "GET+PUT, obstore (ceiling): 2.00 ms (item GETs 2.00 (3 requests))" in lines[0]
    assert "pipeline: 2.30 ms" in lines[1]
    assert "listings 0.30 (3 requests)" in lines[1]
    for job in figures["pipeline"]["jobs"]:
        job["s3_server"]["deletes"]["requests"] = 1
    assert "deletes 0.00 (1 request)" in server_lines(figures, labels)[1]
    assert "the job's own requests: 15.0% of its items'" in lines[1]
    assert "at most 0.870 of the ceiling with moto as busy" in lines[1]  # 2.00 / 2.30
