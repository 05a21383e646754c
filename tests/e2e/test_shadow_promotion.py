"""Shadow before promotion, on the real stack: a worse candidate is held back, a good one promoted.

A classifier trained on 20 digits a class is CURRENT. A candidate trained for one short
epoch passes the metric gate only because of ``--tolerance 1``; with ``--shadow-jobs 1
--shadow-agreement A`` it first runs in CURRENT's shadow on the next job, agrees on
few items and is rejected. A well-trained candidate, put in the shadow by hand
(``models shadow NAME@v3``), agrees and is promoted by ``auto``. The shadowed jobs'
outputs are CURRENT's alone: every manifest line names CURRENT, and no shadow part is
left under the output prefix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import classify_loop_stack, printed_job_id, read_job, run_cli, submit_cli

pytestmark = pytest.mark.e2e

BUCKET = "e2e-shadow"
NAME = "shadow-digits"
DATASET = f"s3://{BUCKET}/datasets/digits/"
AGREEMENT = 0.85


def _card(env: dict[str, str], version: str) -> dict[str, Any]:
    shown = run_cli(env, "models", "show", f"{NAME}@{version}", "--json")
    assert shown.returncode == 0, shown.stderr
    card: dict[str, Any] = json.loads(shown.stdout)
    return card


def _train(env: dict[str, str], *flags: str) -> None:
    trained = run_cli(
        env, "train", NAME, "--task", "classify", "--dataset", DATASET, *flags, "--wait",
        "--quiet", timeout=600,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr


def _shadowed_job(env: dict[str, str], s3_client: Any, worker: Any) -> list[dict[str, Any]]:
    done = submit_cli(
        env, f"s3://{BUCKET}/incoming/", f"s3://{BUCKET}/out/", "--model", NAME, "--wait",
        "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + worker.log()[-3000:]
    job_id = printed_job_id(done)
    lines, _ = read_job(s3_client, BUCKET, "out/", job_id)
    left = s3_client.list_objects_v2(Bucket=BUCKET, Prefix=f"out/_jobs/{job_id}/shadow/")
    assert left.get("KeyCount", 0) == 0, "the shadow parts are deleted with the job's parts"
    return lines


def test_a_worse_candidate_is_held_back_and_a_good_one_promoted(
    service_env: dict[str, str], s3_client: Any, start_worker: Any, tmp_path: Path
) -> None:
    env, worker, _ = classify_loop_stack(
        service_env, s3_client, start_worker, tmp_path / "cache", bucket=BUCKET, dataset=DATASET,
        seed=41,
    )  # fmt: skip
    _train(env, "--epochs", "40")

    _train(
        env, "--epochs", "1", "--steps-per-epoch", "3", "--tolerance", "1", "--shadow-jobs", "1",
        "--shadow-agreement", str(AGREEMENT),
    )  # fmt: skip
    worse = _card(env, "v2")
    assert worse["status"] == "shadow" and worse["decision"].startswith("shadowing:")
    lines = _shadowed_job(env, s3_client, worker)
    assert {line["model"] for line in lines} == {f"{NAME}@v1"}
    worse = _card(env, "v2")
    results = worse["shadow"]["results"]
    print(f"worse candidate: {results}")
    assert results["items"] == len(lines) == 300
    assert results["agreement"] < AGREEMENT and worse["status"] == "rejected"
    assert worse["decision"].startswith("rejected: shadow agreement")
    assert _card(env, "v1")["status"] == "promoted"  # CURRENT stays

    _train(env, "--epochs", "40", "--seed", "7", "--promote", "never")
    started = run_cli(
        env, "models", "shadow", f"{NAME}@v3", "--jobs", "1", "--min-agreement", str(AGREEMENT)
    )
    assert started.returncode == 0, started.stderr
    running = run_cli(env, "models", "shadow", NAME)
    assert running.returncode == 0 and "still running" in running.stdout, running.stdout
    shown = json.loads(run_cli(env, "models", "shadow", NAME, "--json").stdout)
    assert shown["plan"]["version"] == "v3" and shown["jobs_seen"] == 0
    _shadowed_job(env, s3_client, worker)
    good = _card(env, "v3")
    print(f"good candidate: {good['shadow']['results']}")
    assert good["shadow"]["results"]["agreement"] >= AGREEMENT
    assert good["status"] == "promoted", good["decision"]
    assert good["shadow"]["results"]["agreement"] > results["agreement"]
    ended = run_cli(env, "models", "shadow", NAME)
    assert ended.returncode != 0 and "no shadow is running" in ended.stderr
