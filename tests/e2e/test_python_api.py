"""The README's Python API example, run as it is written against the real stack.

The example is the ```python block after the ``python-api-example`` marker in README.md;
it runs in a subprocess with the service's environment, over digits under
``s3://scans/incoming/``, and must print each ok line. Then the rest of the API: a job
found by id, the job list, a finished job that cannot be cancelled, a training run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bucketvision.infra.errors import UserError
from tests.helpers import ROOT, upload_digits

pytestmark = pytest.mark.e2e

MARKER = "<!-- python-api-example"


def readme_example() -> str:
    text = (Path(ROOT) / "README.md").read_text()
    after = text[text.index(MARKER) :]
    match = re.search(r"```python\n(.*?)```", after, re.S)
    assert match, "README.md: no python block after the example marker"
    return match.group(1)


def test_the_readme_example_runs_and_the_api_does_what_it_says(
    service_env: dict[str, str], s3_client: Any, digits_model: str, start_worker: Any
) -> None:
    s3_client.create_bucket(Bucket="scans")
    truth = upload_digits(s3_client, "scans", "incoming/", 40, seed=12)
    worker = start_worker("--cpu", "--concurrency", "1")
    worker.wait_for_children(1)
    ran = subprocess.run(
        [sys.executable, "-c", readme_example()],
        env={**os.environ, **service_env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr + worker.log()[-2000:]
    lines = ran.stdout.splitlines()
    job_id, counts = lines[0].split(": ", 1)
    assert counts == f"{len(truth)} of {len(truth)} ok"
    labelled = [line.split() for line in lines[1:] if line.startswith("incoming/")]
    assert len(labelled) == len(truth)
    right = sum(1 for key, label, _ in labelled if int(label) == truth[key])
    assert right >= 0.9 * len(truth)
    assert lines[-2].endswith("images/s") and "digits" in lines[-1]

    from bucketvision.infra.settings import Settings
    from bucketvision.producer import Client

    client = Client.from_settings(Settings.from_env(service_env))
    job = client.job(job_id)
    assert job.status()["state"] == "finished"
    assert job_id in {row["job_id"] for row in client.jobs(limit=50)}
    with pytest.raises(UserError, match="has already ended"):
        job.cancel()
    with pytest.raises(UserError, match="no job"):
        client.job("20990101T000000Z-00000000")
    assert client.models.show("digits")["task"] == "classify"
