"""Scheduled retraining: beat with a 20 s schedule makes versions through the promotion gate."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import read_job, run_cli, start_cli, upload_digits

pytestmark = pytest.mark.e2e

BUCKET = "e2e-beat"
NAME = "beat-digits"


def test_beat_retrains_on_schedule_and_jobs_use_the_promoted_version(
    service_env: dict[str, str], s3_client: Any, start_worker: Any, tmp_path: Path
) -> None:
    s3_client.create_bucket(Bucket=BUCKET)
    made = run_cli(
        service_env,
        "datasets",
        "make",
        "--task",
        "classify",
        "--count",
        "120",
        "--output",
        f"s3://{BUCKET}/datasets/digits/",
    )
    assert made.returncode == 0, made.stderr
    upload_digits(s3_client, BUCKET, "incoming/", 40, seed=8)
    schedule = tmp_path / "schedule.toml"
    schedule.write_text(
        f'[[train]]\nname = "{NAME}"\ntask = "classify"\n'
        f'dataset = "s3://{BUCKET}/datasets/digits/"\nevery = "20s"\nepochs = 2\n'
    )
    env = {
        **service_env,
        "BV_SCHEDULE_FILE": str(schedule),
        "BV_MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "BV_MODEL_REFRESH_SECONDS": "2",
    }
    worker = start_worker("--queues", "inference,training", "--cpu", "--concurrency", "2", env=env)
    worker.wait_for_children(2)
    log = tmp_path / "beat.log"
    beat = start_cli(env, log, "beat")
    try:
        time.sleep(3)
        second = run_cli(env, "beat")
        assert second.returncode == 2 and "another beat is running" in second.stderr
        deadline = time.monotonic() + 240
        versions: list[str] = []
        while time.monotonic() < deadline:
            shown = run_cli(env, "models", "show", NAME, "--json")
            if shown.returncode == 0:
                versions = json.loads(shown.stdout)["versions"]
                if len(versions) >= 2:
                    break
            time.sleep(3)
        assert len(versions) >= 2, log.read_text()[-3000:] + worker.log()
    finally:
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(timeout=30)
    cards = [
        json.loads(run_cli(env, "models", "show", f"{NAME}@{v}", "--json").stdout)
        for v in versions[:2]
    ]
    for card in cards:
        assert card["trained_at"] and 0 <= card["metrics"]["accuracy"] <= 1
        assert card["status"] in ("promoted", "rejected", "candidate")
    current = cards[0]["current"]
    print(
        f"beat made {len(versions)} versions; CURRENT {current}; decisions: "
        + "; ".join(card["decision"] for card in cards)
    )
    done = run_cli(
        env,
        "submit",
        "--task",
        "classify",
        "--model",
        NAME,
        "--input",
        f"s3://{BUCKET}/incoming/",
        "--output",
        f"s3://{BUCKET}/out/",
        "--wait",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    lines, summary = read_job(s3_client, BUCKET, "out/", done.stdout.split()[0])
    assert summary["model"] == f"{NAME}@{current}" and summary["ok"] == 40
    assert {line["model"] for line in lines} == {f"{NAME}@{current}"}
    promoted = json.loads(run_cli(env, "models", "show", f"{NAME}@{current}", "--json").stdout)
    assert promoted["status"] == "promoted"
