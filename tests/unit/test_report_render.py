"""``bucketvision report`` over synthetic jobs in an in-process moto S3, one per task."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bucketvision.infra.jobs import JobNotFound
from bucketvision.infra.s3 import S3Store
from bucketvision.infra.settings import Settings
from bucketvision.models.digits import make_digits
from bucketvision.models.scenes import make_scenes
from bucketvision.producer.cli import main
from bucketvision.producer.cli_support import CommandError
from bucketvision.producer.report import gather, locate_output, pick_items, publish
from bucketvision.producer.report_html import render_report
from bucketvision.producer.report_thumbs import TILE, colour
from tests.helpers import png_bytes
from tests.unit.conftest import BUCKET

SETTINGS = Settings(io_threads=4)
IMG_RE = re.compile(r'<img src="data:image/(?:png|jpeg);base64,([A-Za-z0-9+/=]+)"')


def _line(key: str, result: dict[str, Any] | None, error: tuple[str, str] | None = None) -> dict:
    return {
        "key": key,
        "status": "error" if error else "ok",
        "output": None if error else f"s3://{BUCKET}/out/{key}.json",
        "result": result,
        "error": {"type": error[0], "message": error[1]} if error else None,
        "model": "m@v1",
        "latency_ms": 10.0 + len(key) % 7,
        "attempts": 1,
    }


def write_job(
    store: S3Store, job_id: str, task: str, lines: list[dict], source: str = f"s3://{BUCKET}/in/"
) -> dict[str, Any]:
    """Put ``summary.json`` and ``manifest.jsonl`` of a finished job under ``out/``."""
    counts = {status: sum(x["status"] == status for x in lines) for status in ("ok", "error")}
    summary = {
        "job_id": job_id,
        "task": task,
        "model": "m@v1",
        "input": source,
        "output": f"s3://{BUCKET}/out/",
        "state": "finished",
        "total": len(lines),
        **counts,
        "skipped": 0,
        "submitted_at": "2026-01-02T03:04:05.000+00:00",
        "started_at": "2026-01-02T03:04:05.500+00:00",
        "finished_at": "2026-01-02T03:04:09.000+00:00",
        "wall_seconds": 4.321,
        "images_per_second": 12.34,
        "latency_ms": {"p50": 11.5, "p95": 15.25, "p99": 16.75}
        if lines
        else dict.fromkeys(("p50", "p95", "p99")),
        "stage_seconds": {"download": 0.5, "decode": 0.25, "infer": 2.0, "upload": 0.75},
    }
    store.put_json(BUCKET, f"out/_jobs/{job_id}/summary.json", summary)
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    store.put_bytes(BUCKET, f"out/_jobs/{job_id}/manifest.jsonl", body)
    return summary


def thumbnails(html: str) -> list[np.ndarray]:
    return [
        np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
        for data in IMG_RE.findall(html)
    ]


def build(store: S3Store, job_id: str, limit: int = 48) -> tuple[Any, str]:
    data = gather(job_id, store=store, jobs=None, output=f"s3://{BUCKET}/out/", settings=SETTINGS)
    if limit != 48:
        data = gather(
            job_id,
            store=store,
            jobs=None,
            output=f"s3://{BUCKET}/out/",
            settings=SETTINGS,
            limit=limit,
        )
    return data, render_report(data)


def assert_self_contained(html: str) -> None:
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<link" not in html and "<script" not in html and "@import" not in html
    assert "url(" not in html


def test_classify_report(shared_store: S3Store) -> None:
    images, labels = make_digits(6, seed=3)
    lines = []
    for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        key = f"in/{label}/{index:03d}.png"
        shared_store.put_bytes(BUCKET, key, png_bytes(pixels), "image/png")
        top = [{"label": str(label), "score": 0.9871}]
        lines.append(_line(key, {"label": str(label), "score": 0.9871, "top_k": top}))
    lines.append(_line("in/bad/notes.jpg", None, ("UnsupportedFormat", "looks like <text>")))
    lines.append(_line("in/bad/empty.png", None, ("EmptyObject", "the object is empty")))
    lines.append(_line("in/bad/empty2.png", None, ("EmptyObject", "the object is empty")))
    write_job(shared_store, "job-c", "classify", lines)

    data, html = build(shared_store, "job-c")
    assert_self_contained(html)
    assert [group.type for group in data.errors] == ["EmptyObject", "UnsupportedFormat"]
    assert data.errors[0].count == 2 and data.errors[0].examples[0][0] == "in/bad/empty.png"
    assert "looks like &lt;text&gt;" in html and "<text>" not in html  # escaped
    assert len(data.tiles) == 9 and len(thumbnails(html)) == 6
    assert html.count('class="thumb err"') == 3
    for name, value in {"total": "9", "ok": "6", "error": "3", "wall_seconds": "4.32"}.items():
        assert f'data-name="{name}"><span class="n">' in html
        assert re.search(rf'data-name="{name}">.*?<span class="v">{re.escape(value)}</span>', html)
    assert "15.2" in html and "16.8" in html  # p95, p99 (ms, one decimal)
    assert f"<b>{labels[0]}</b>" in html and "score 0.987" in html
    assert "<svg" in html and html.count("<rect") == 24
    assert all(tile.shape[:2] == (TILE, TILE) for tile in thumbnails(html))


def test_the_report_shows_review_and_confidence_beside_the_cards(
    shared_store: S3Store,
) -> None:
    images, labels = make_digits(3, seed=4)
    lines = []
    for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        key = f"in/{label}/{index:03d}.png"
        shared_store.put_bytes(BUCKET, key, png_bytes(pixels), "image/png")
        lines.append(_line(key, {"label": str(label), "score": 0.5, "top_k": []}))
    summary = write_job(shared_store, "job-r", "classify", lines)
    summary["review"] = {"routed": 3, "candidates": 3, "below": 0.9, "folder": "s3://b/x/"}
    summary["confidence"] = {
        "histogram": [0, 0, 0, 0, 0, 3, 0, 0, 0, 0],
        "reference": [0, 0, 0, 0, 0, 0, 0, 0, 10, 90],
        "psi": 4.71,
        "drift": True,
    }
    shared_store.put_json(BUCKET, "out/_jobs/job-r/summary.json", summary)
    _, html = build(shared_store, "job-r")
    assert re.search(r'data-name="review">.*?<span class="v">3</span> <small>below 0.9', html)
    panel = html[html.index('id="confidence"') :]
    assert "PSI 4.71 · drift" in panel
    assert "job: 100.0% of items at 0.5–0.6" in panel and "card: 90.0% of items at 0.9–1.0" in panel
    assert panel[: panel.index("</svg>")].count("<rect") == 20  # two bars a bin
    write_job(shared_store, "job-o", "classify", lines)  # an older job: neither
    _, plain = build(shared_store, "job-o")
    assert 'id="confidence"' not in plain and 'data-name="review"' not in plain


def test_detect_report_draws_scaled_boxes(shared_store: S3Store) -> None:
    scenes = make_scenes(3, seed=4, width=256, height=192)
    lines = []
    for index, pixels in enumerate(scenes.images):
        key = f"in/scene{index}.png"
        shared_store.put_bytes(BUCKET, key, png_bytes(pixels), "image/png")
        found = [
            {"label": scenes.labels[int(c)], "score": 0.9, "box": [float(v) for v in box]}
            for box, c in zip(scenes.boxes[index], scenes.classes[index], strict=True)
        ]
        lines.append(_line(key, {"detections": found}))
    # one hand-made box to check the scaling: 256x192 -> 176x132 (scale 0.6875)
    flat = np.full((192, 256, 3), 128, np.uint8)
    shared_store.put_bytes(BUCKET, "in/flat.png", png_bytes(flat), "image/png")
    box = {"label": "square", "score": 0.5, "box": [64.0, 96.0, 192.0, 160.0]}
    lines.append(_line("in/flat.png", {"detections": [box]}))
    write_job(shared_store, "job-d", "detect", lines)

    data, html = build(shared_store, "job-d")
    assert_self_contained(html)
    drawn = thumbnails(html)
    assert len(drawn) == 4 and drawn[3].shape == (132, 176, 3)
    rgb = data.colours["square"]
    left_edge = drawn[3][100, 44]  # x 64 * 0.6875 = 44, inside the box's y range
    assert tuple(left_edge) == rgb
    assert tuple(drawn[3][100, 88]) == (128, 128, 128)  # the inside is untouched
    assert "1 detection" in html and "legend" in html and "square" in html


def test_segment_report_overlays_the_mask(shared_store: S3Store) -> None:
    scenes = make_scenes(2, seed=5, width=128, height=128)
    labels = scenes.mask_labels
    lines = []
    for index, pixels in enumerate(scenes.images):
        key = f"in/s{index}.png"
        shared_store.put_bytes(BUCKET, key, png_bytes(pixels), "image/png")
        mask_key = f"out/s{index}.png.mask.png"
        shared_store.put_bytes(BUCKET, mask_key, png_bytes(scenes.masks[index]), "image/png")
        counts = np.bincount(scenes.masks[index].ravel(), minlength=len(labels))
        fraction = {name: float(c / counts.sum()) for name, c in zip(labels, counts, strict=True)}
        result = {"mask": mask_key, "classes": labels, "pixel_fraction": fraction}
        lines.append(_line(key, result))
    grey = np.zeros((64, 64, 3), np.uint8)
    shared_store.put_bytes(BUCKET, "in/black.png", png_bytes(grey), "image/png")
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = 2  # right half: class id 2 ("square")
    shared_store.put_bytes(BUCKET, "out/black.png.mask.png", png_bytes(mask), "image/png")
    fractions = {"background": 0.5, "circle": 0.0, "square": 0.5, "triangle": 0.0}
    lines.append(
        _line(
            "in/black.png",
            {"mask": "out/black.png.mask.png", "classes": labels, "pixel_fraction": fractions},
        )
    )
    write_job(shared_store, "job-s", "segment", lines)

    _, html = build(shared_store, "job-s")
    assert_self_contained(html)
    drawn = thumbnails(html)
    assert len(drawn) == 3
    half = tuple(round(0.5 * v) for v in colour(1))  # id 2 -> colour(1), 50 % over black
    assert tuple(drawn[2][88, 150]) == half
    assert tuple(drawn[2][88, 20]) == (0, 0, 0)  # background stays clear
    assert "square 50%" in html
    assert f"background:rgb{colour(1)}" in html  # the legend matches


def test_generate_report_shows_the_generated_images(shared_store: S3Store) -> None:
    images, _ = make_digits(5, seed=6)
    lines = []
    for index, pixels in enumerate(images):
        key = f"out/generated/job-g/{index:06d}-seed{100 + index}.png"
        shared_store.put_bytes(BUCKET, key, png_bytes(pixels), "image/png")
        lines.append(_line(key, {"image": key, "seed": 100 + index, "label": str(index)}))
    write_job(shared_store, "job-g", "generate", lines, source="seed 100")

    _, html = build(shared_store, "job-g")
    assert_self_contained(html)
    assert len(thumbnails(html)) == 5
    assert "seed 104" in html and "class 3" in html


def test_error_only_job(shared_store: S3Store) -> None:
    lines = [_line(f"in/{i}.jpg", None, ("CorruptImage", f"bad {i}")) for i in range(7)]
    write_job(shared_store, "job-e", "classify", lines)
    data, html = build(shared_store, "job-e")
    assert_self_contained(html)
    assert len(data.errors) == 1 and data.errors[0].count == 7
    assert len(data.errors[0].examples) == 3
    assert html.count('class="thumb err"') == 7 and not thumbnails(html)


def test_failed_job_shows_why(shared_store: S3Store) -> None:
    lines = [_line("in/a.png", None, ("ModelLoadError", "model m@v1 could not be loaded"))]
    summary = write_job(shared_store, "job-f", "classify", lines)
    summary.update(state="failed", failure="model m@v1 could not be loaded: <boom>")
    shared_store.put_json(BUCKET, "out/_jobs/job-f/summary.json", summary)
    _, html = build(shared_store, "job-f")
    assert '<span class="chip failed">failed</span>' in html
    assert "Job failed: model m@v1 could not be loaded: &lt;boom&gt;" in html


def test_empty_job(shared_store: S3Store) -> None:
    write_job(shared_store, "job-0", "classify", [])
    data, html = build(shared_store, "job-0")
    assert_self_contained(html)
    assert data.tiles == [] and "No items to show." in html and "No errors." in html
    assert "No items, no latencies." in html and 'class="v">–</span>' in html


def test_missing_input_and_limit(shared_store: S3Store) -> None:
    lines = [_line(f"in/gone{i}.png", {"label": "1", "score": 0.5}) for i in range(10)]
    lines += [_line(f"in/bad{i}.png", None, ("CorruptImage", "x")) for i in range(10)]
    write_job(shared_store, "job-m", "classify", lines)
    data, html = build(shared_store, "job-m", limit=8)
    assert len(data.tiles) == 8
    assert sum(tile.status == "error" for tile in data.tiles) == 2  # a quarter of the grid
    assert "cannot read the image: ObjectMissing" in html


def test_pick_items_fills_with_errors_when_few_others() -> None:
    lines = [{"status": "error"}] * 5 + [{"status": "ok"}]
    assert len(pick_items(lines, 4)) == 4
    assert len(pick_items(lines, 0)) == 0


def test_publish_writes_html_to_s3_and_disk(shared_store: S3Store, tmp_path: Any) -> None:
    write_job(shared_store, "job-p", "classify", [])
    data, html = build(shared_store, "job-p")
    saved = tmp_path / "sub" / "r.html"
    uri = publish(shared_store, data, html, str(saved))
    assert uri == f"s3://{BUCKET}/out/_jobs/job-p/report.html"
    stored = shared_store.client.get_object(Bucket=BUCKET, Key="out/_jobs/job-p/report.html")
    assert stored["ContentType"].startswith("text/html")
    assert stored["Body"].read().decode() == html == saved.read_text()


class _Jobs:
    def __init__(self, records: dict[str, dict[str, Any]]) -> None:
        self.records = records

    def get(self, job_id: str) -> dict[str, Any]:
        if job_id not in self.records:
            raise JobNotFound(job_id)
        return self.records[job_id]


def test_locate_output_from_the_job_record() -> None:
    jobs = _Jobs(
        {
            "a": {"state": "finished", "output": "s3://b/out/"},
            "r": {"state": "running", "output": "s3://b/out/", "done_batches": 1, "batches": 3},
        }
    )
    assert str(locate_output("a", jobs=jobs, output=None)) == "s3://b/out/"
    assert str(locate_output("zz", jobs=jobs, output="s3://c/x")) == "s3://c/x/"
    with pytest.raises(CommandError, match=r"no job 'zz' in Redis.*--output") as unknown:
        locate_output("zz", jobs=jobs, output=None)
    assert unknown.value.exit_code == 2
    with pytest.raises(CommandError, match=r"is running \(1/3 batches"):
        locate_output("r", jobs=jobs, output=None)


def test_cli_without_job_files_exits_2(shared_store: S3Store, capsys: Any) -> None:
    code = main(["report", "nope", "--output", f"s3://{BUCKET}/out/"])
    assert code == 2
    assert "no job files for nope under s3://unit-bucket/out/_jobs/nope/" in capsys.readouterr().err


def test_cli_prints_the_uri(shared_store: S3Store, capsys: Any, tmp_path: Any) -> None:
    write_job(shared_store, "job-cli", "classify", [])
    saved = tmp_path / "r.html"
    code = main(["report", "job-cli", "--output", f"s3://{BUCKET}/out/", "--save", str(saved)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out.strip() == f"s3://{BUCKET}/out/_jobs/job-cli/report.html"
    assert saved.read_text().startswith("<!DOCTYPE html>")


def test_cli_refuses_a_negative_limit(capsys: Any) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["report", "j", "--limit", "-1", "--output", "s3://b/out/"])
    assert exited.value.code == 2
    assert "argument --limit: must be at least 0, not -1" in capsys.readouterr().err


def test_cli_s3_unreachable(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("BV_S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    code = main(["report", "j", "--output", "s3://b/out/"])
    assert code == 3  # unavailable: the same command may work later
    assert "cannot reach the S3 endpoint" in capsys.readouterr().err


def test_report_modules_never_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "import bucketvision.producer.report\n"
        "import bucketvision.producer.report_html\n"
        "import bucketvision.producer.report_thumbs\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))\n"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


def test_a_48_megapixel_photo_and_its_mask_show_at_the_default_pixel_cap(
    shared_store: S3Store,
) -> None:
    """The report reads a phone photo as the worker did: drafted, not refused."""
    from bucketvision.producer.report_thumbs import make_tile

    photo = Image.new("RGB", (8000, 6000), (200, 30, 30))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=70)
    shared_store.put_bytes(BUCKET, "in/big.jpg", buffer.getvalue(), "image/jpeg")
    mask = np.zeros((6000, 8000), np.uint8)
    mask[:, 4000:] = 1
    shared_store.put_bytes(BUCKET, "out/big.jpg.mask.png", png_bytes(mask), "image/png")
    result = {
        "mask": "out/big.jpg.mask.png",
        "classes": ["background", "thing"],
        "pixel_fraction": {"background": 0.5, "thing": 0.5},
        "image_size": [8000, 6000],
    }
    tile = make_tile(
        {"key": "in/big.jpg", "status": "ok", "result": result},
        task="segment",
        input_bucket=BUCKET,
        output_bucket=BUCKET,
        fetch=shared_store.get_bytes,
        max_pixels=40_000_000,
    )
    assert "cannot" not in tile.detail, tile.detail
    assert tile.image is not None
    drawn = np.asarray(Image.open(io.BytesIO(tile.image)).convert("RGB"))
    assert drawn.shape[1] == TILE and drawn.shape[0] == TILE * 6000 // 8000
