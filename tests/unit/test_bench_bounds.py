"""The bench's machine bound: per-image CPU from its runs, and out-of-reach targets."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from tests.perf import bench_bounds, bench_budget, bench_report


def _job(rate: float, wall: float, **cpu_seconds: float) -> dict[str, Any]:
    return {"images_per_second": rate, "cpu": {"wall_seconds": wall, "cpu_seconds": cpu_seconds}}


def _figures() -> dict[str, Any]:
    """A model whose forward costs 20 ms, and whose S3 work costs 10 + 5 ms per item.

    The tests add a decode of 5 ms per image.
    """
    return {
        # 100 img/s for 2 s = 200 images; 4 CPU seconds in the compute children: 20 ms each.
        "compute": {
            "images_per_second": 100.0,
            "jobs": [_job(100.0, 2.0, compute_2x1=4.0, s3_server=0.0)],
        },
        # 80 items/s for 1 s; the server used 0.8 s (10 ms), the client 0.4 s (5 ms).
        "get_put": {
            "images_per_second": 80.0,
            "jobs": [_job(80.0, 1.0, s3_server=0.8, bench_producer=0.4, redis=0.1)],
        },
        "get": {
            "images_per_second": 200.0,
            "jobs": [_job(200.0, 1.0, s3_server=0.8, bench_producer=0.4)],
        },
        "pipeline": {"images_per_second": 50.0},
        "naive_celery": {"images_per_second": 30.0},
    }


def test_per_image_cpu_and_the_bound_come_from_the_runs() -> None:
    limits = bench_bounds.bounds(_figures(), cores=2, decode_ms=5.0)
    assert limits["forward_ms"] == pytest.approx(20.0)
    assert limits["server_ms_get_put"] == pytest.approx(10.0)
    assert limits["client_ms_get_put"] == pytest.approx(5.0)
    assert limits["server_ms_get"] == pytest.approx(4.0)
    # 2 cores / (20 + 5 + 10 + 5) ms = 50 img/s, below 1 core / 10 ms = 100.
    assert limits["most_with_outputs"] == pytest.approx(50.0)
    # 2 cores / (20 + 5 + 4 + 2) ms = 64.5 img/s.
    assert limits["most_without_outputs"] == pytest.approx(2000.0 / 31.0)


def test_a_single_process_server_caps_the_bound_at_one_core() -> None:
    figures = _figures()
    figures["compute"]["jobs"] = [_job(100.0, 2.0, compute_2x1=0.02)]  # a tiny model
    limits = bench_bounds.bounds(figures, cores=8, decode_ms=0.01)
    assert limits["most_with_outputs"] == pytest.approx(100.0)  # 1 core / 10 ms


def test_without_cpu_records_there_is_no_bound() -> None:
    figures = {key: {"images_per_second": 1.0} for key in ("compute", "get_put", "get")}
    limits = bench_bounds.bounds(figures, cores=2, decode_ms=1.0)
    assert limits["most_with_outputs"] is None
    assert bench_bounds.lines(limits) == []
    assert bench_bounds.at_most(limits, figures, "pipeline", "compute") is None


def test_the_report_says_which_failed_targets_are_out_of_reach() -> None:
    figures = _figures()
    model = {
        "title": "m",
        "figures": figures,
        "ratios": bench_report.ratios(figures),
        "bounds": bench_bounds.bounds(figures, cores=2, decode_ms=5.0),
    }
    results = {"models": {"mobilenet": model}}
    results["targets"] = bench_report.targets(results)
    by_name = {item["name"]: item for item in results["targets"]}
    compute = by_name["mobilenet: pipeline / compute ceiling"]
    assert compute["status"] == "FAIL"  # 0.5 < 0.7
    assert compute["at_most"] == pytest.approx(0.5)  # 50 img/s of a 100 img/s ceiling
    naive = by_name["mobilenet: pipeline / naive Celery"]
    assert naive["status"] == "FAIL" and naive["at_most"] == pytest.approx(1.6667, abs=1e-4)
    text = bench_report.render(results)
    assert "most any contender can reach here" in text
    assert "out of reach here: at most 0.50" in text
    assert "out of reach here: at most 1.67" in text
    assert by_name["cnn: pipeline / naive Celery"]["status"] == "SKIP"


def test_a_feed_below_zero_is_not_a_pass() -> None:
    figures = _figures()
    # 50 img/s for 2 s = 100 images in 1.5 CPU seconds: 15 ms each, below the 20 ms forward.
    figures["pipeline"]["jobs"] = [_job(50.0, 2.0, bucketvision_worker=1.5)]
    model = {"title": "m", "figures": figures, "ratios": bench_report.ratios(figures)}
    model["bounds"] = bench_bounds.bounds(figures, cores=2, decode_ms=5.0)
    results = {"models": {"mobilenet": model}}
    results["targets"] = bench_report.targets(results)
    feed = {item["name"]: item for item in results["targets"]}[
        "mobilenet: feed CPU per image / before"
    ]
    assert feed["status"] == "SKIP" and feed["value"] is None
    assert "not measured: the worker's CPU per image is 5.00 ms below" in bench_report.render(
        results
    )
    figures["pipeline"]["jobs"] = [_job(50.0, 2.0, bucketvision_worker=5.0)]  # 50 ms: feed 30
    results["targets"] = bench_report.targets(results)
    feed = {item["name"]: item for item in results["targets"]}[
        "mobilenet: feed CPU per image / before"
    ]
    assert feed["status"] == "FAIL" and "note" not in feed  # 30 / 5.35 ms


def test_without_a_decode_figure_there_is_no_bound() -> None:
    assert bench_bounds.bounds(_figures(), cores=2, decode_ms=None)["most_with_outputs"] is None


def test_decode_cost_is_measured_with_the_service_decoder() -> None:
    blobs = []
    for shade in range(4):
        buffer = io.BytesIO()
        Image.new("RGB", (640, 480), (shade * 60, 90, 200)).save(buffer, "JPEG", quality=90)
        blobs.append(buffer.getvalue())
    split = bench_budget.decode_split_ms(blobs, (224, 224, 3), 40_000_000, min_seconds=0.05)
    assert split is not None
    decode, preprocess = split
    assert 0.0 < decode < 1000.0 and 0.0 <= preprocess < 1000.0
    assert bench_budget.decode_split_ms([], (28, 28, 1), 40_000_000) is None


def test_the_report_splits_a_pipeline_job_at_its_submission() -> None:
    figures = _figures()
    job = {"items": 3000, "seconds": 20.0, "submit_seconds": 1.25, "images_per_second": 150.0}
    figures["pipeline"]["jobs"] = [{**job, "seconds": 30.0}, job]  # the last run is shown
    (line,) = bench_report.phase_lines(figures)
    assert "submit (listing, plan) 1.25 s, batches and finalisation 18.75 s" in line
    assert line.endswith("160.0 img/s after the submission")
    assert bench_report.phase_lines({"pipeline": {"images_per_second": None}}) == []


def test_the_stand_in_feed_is_the_worker_cpu_of_the_job_on_the_stand_in() -> None:
    figures = _figures()
    # The difference reads below zero (15 ms of worker against a 20 ms forward pass), while
    # the same job on the stand-in model used 0.6 CPU seconds for 200 images: 3 ms each.
    figures["pipeline"]["jobs"] = [_job(50.0, 2.0, bucketvision_worker=1.5)]
    figures["pipeline_stand_in"] = {
        "images_per_second": 100.0,
        "jobs": [_job(100.0, 2.0, bucketvision_worker=0.6, s3_server=1.0)],
    }
    limits = bench_bounds.bounds(figures, cores=2, decode_ms=5.0)
    budget = bench_budget.budget(figures, limits, (4.0, 1.0), "obstore")
    assert budget["feed_ms"] == pytest.approx(-5.0)
    assert budget["feed_per_core"] is None  # no rate, and no projection, from a void feed
    assert budget["feed_ms_stand_in"] == pytest.approx(3.0)
    assert budget["feed_per_core_stand_in"] == pytest.approx(1000.0 / 3.0)
    text = "\n".join(bench_budget.lines({"mobilenet": {"budget": budget}}))
    assert "feed, stand-in model                 3.00" in text
    assert "images/s the stand-in feed allows: mobilenet 5,333;" in text
    assert "images/s the feed allows:\n" in text + "\n"
    del figures["pipeline_stand_in"]
    older = bench_budget.budget(figures, limits, (4.0, 1.0), "obstore")
    assert older["feed_ms_stand_in"] is None
    older.pop("feed_ms_stand_in")  # a result from before the stand-in: its rows read "-"
    text = "\n".join(bench_budget.lines({"mobilenet": {"budget": older}}))
    assert "feed, stand-in model                    -" in text
