"""``bucketvision report`` of a real classify job, rendered by headless Chromium.

A real worker runs a small classify job (digits plus a few hostile files), the
CLI writes the report to S3 and to a local file, and Debian's chromium renders
that file: the screenshot must be the window's size and not blank, and the DOM
must hold the summary's numbers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.helpers import bad_files, printed_job_id, run_cli, submit_cli, upload_digits

pytestmark = pytest.mark.e2e

BUCKET = "e2e-report"
WINDOW = (1280, 1600)


def chromium() -> str:
    """The headless browser; skipped without it, except in CI where it must be there."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "headless chromium is not installed (Debian: apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; .ci/run installs it, so CI must have it")
    pytest.skip(reason)


def run_chromium(*args: str) -> subprocess.CompletedProcess[str]:
    base = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=120, check=False)


def figure(dom: str, name: str) -> str:
    found = re.search(
        rf'data-name="{name}"><span class="n">[^<]*</span><span class="v">([^<]*)<', dom
    )
    assert found, f"no figure {name} in the DOM"
    return found.group(1)


@pytest.fixture
def finished_job(
    service_env: dict[str, str], s3_client: Any, digits_model: str, start_worker: Any
) -> str:
    s3_client.create_bucket(Bucket=BUCKET)
    upload_digits(s3_client, BUCKET, "in/", 60, seed=91)
    for name, (body, _) in bad_files().items():
        s3_client.put_object(Bucket=BUCKET, Key=f"in/bad/{name}", Body=body)
    worker = start_worker("--cpu", "--concurrency", "1")
    worker.wait_for_children(1)
    done = submit_cli(
        service_env,
        f"s3://{BUCKET}/in/",
        f"s3://{BUCKET}/out/",
        "--batch-size",
        "16",
        "--wait",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr + worker.log()
    return printed_job_id(done)


def test_report_renders_in_chromium(
    service_env: dict[str, str], s3_client: Any, finished_job: str, tmp_path: Path
) -> None:
    saved = tmp_path / "report.html"
    made = run_cli(service_env, "report", finished_job, "--save", str(saved))
    assert made.returncode == 0, made.stderr
    uri = f"s3://{BUCKET}/out/_jobs/{finished_job}/report.html"
    assert made.stdout.strip() == uri
    stored = s3_client.get_object(Bucket=BUCKET, Key=uri.split("/", 3)[3])
    assert stored["ContentType"].startswith("text/html")
    html = saved.read_text()
    assert stored["Body"].read().decode() == html
    assert "http://" not in html and "https://" not in html
    summary = json.loads(
        s3_client.get_object(Bucket=BUCKET, Key=f"out/_jobs/{finished_job}/summary.json")[
            "Body"
        ].read()
    )
    assert summary["ok"] == 60 and summary["error"] == len(bad_files())

    shot = tmp_path / "report.png"
    shown = run_chromium(
        f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", saved.as_uri()
    )
    assert shot.exists(), shown.stderr
    image = Image.open(shot).convert("RGB")
    assert image.size == WINDOW
    assert len(image.getcolors(maxcolors=1 << 20) or []) > 500  # text, charts, thumbnails
    grid = np.asarray(image.crop((0, WINDOW[1] - 500, WINDOW[0], WINDOW[1])), dtype=np.float32)
    assert grid.std() > 40, "the thumbnail grid region is uniform"
    assert (grid.max(axis=2) < 30).mean() > 0.05, "no dark digit tiles in the grid region"

    dom = run_chromium("--dump-dom", saved.as_uri())
    assert dom.returncode == 0, dom.stderr
    for name in ("total", "ok", "error", "skipped"):
        assert figure(dom.stdout, name) == f"{summary[name]:,}"
    assert figure(dom.stdout, "wall_seconds") == f"{summary['wall_seconds']:,.2f}"
    assert figure(dom.stdout, "images_per_second") == f"{summary['images_per_second']:,.2f}"
    assert figure(dom.stdout, "latency_p95") == f"{summary['latency_ms']['p95']:,.1f}"
    assert dom.stdout.count('class="thumb err"') == len(bad_files())
    assert dom.stdout.count("<img ") == 48 - len(bad_files())
    for error_type in {expected for _, expected in bad_files().values()}:
        assert f"<b>{error_type}</b>" in dom.stdout


def test_report_of_unknown_job_exits_2(service_env: dict[str, str]) -> None:
    made = run_cli(service_env, "report", "no-such-job")
    assert made.returncode == 2
    assert "no job 'no-such-job' in Redis" in made.stderr and "--output" in made.stderr
    assert made.stdout == ""
