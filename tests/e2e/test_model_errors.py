"""Model errors a user can cause: wrong names and versions, missing files, unsafe models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import printed_job_id, read_job, run_cli, submit_cli, upload_digits

pytestmark = pytest.mark.e2e

LABELS = ",".join(str(digit) for digit in range(10))


def _lambda_model(path: Path) -> str:
    """A digits-shaped classifier with a Lambda layer: Python code inside the file."""
    import keras

    inputs = keras.Input((28, 28, 1))
    scaled = keras.layers.Lambda(lambda x: x * 1.0)(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(scaled))
    keras.Model(inputs, outputs).save(path)
    return str(path)


def _submit(env: dict[str, str], bucket: str, model: str, out: str) -> Any:
    return submit_cli(
        env,
        f"s3://{bucket}/in/",
        f"s3://{bucket}/{out}/",
        "--model",
        model,
        "--wait",
    )


def test_wrong_models_are_refused_at_submission(
    service_env: dict[str, str], s3_client: Any, digits_model: str
) -> None:
    bucket = "e2e-model-errors"
    s3_client.create_bucket(Bucket=bucket)
    upload_digits(s3_client, bucket, "in/", 4, seed=92)
    name = digits_model.split("@")[0]
    wrong_version = _submit(service_env, bucket, f"{name}@v99", "o1")
    assert wrong_version.returncode == 2
    assert (
        f"{name}@v99 is not in" in wrong_version.stderr and "versions: v1" in wrong_version.stderr
    )
    wrong_name = _submit(service_env, bucket, "no-such-model", "o2")
    assert wrong_name.returncode == 2 and "no model named 'no-such-model'" in wrong_name.stderr
    missing_prefix = run_cli(
        service_env, "submit", "--task", "classify", "--input", f"s3://{bucket}/nothing-here/"
    )
    assert missing_prefix.returncode == 2 and "no objects under" in missing_prefix.stderr


def test_a_model_file_gone_from_the_registry_is_refused_at_submission(
    service_env: dict[str, str], s3_client: Any, tmp_path: Path
) -> None:
    bucket = "e2e-model-gone"
    s3_client.create_bucket(Bucket=bucket)
    upload_digits(s3_client, bucket, "in/", 4, seed=93)
    path = _lambda_model(tmp_path / "gone.keras")
    registered = run_cli(
        service_env,
        "models",
        "register",
        "gone",
        "--task",
        "classify",
        "--file",
        path,
        "--labels",
        LABELS,
        "--promote",
        "--allow-unsafe",
    )
    assert registered.returncode == 0, registered.stderr
    models = service_env["BV_MODELS_URI"][len("s3://") :].split("/", 1)
    s3_client.delete_object(Bucket=models[0], Key=f"{models[1]}gone/v1/model.keras")
    refused = _submit(service_env, bucket, "gone", "out")
    assert refused.returncode == 2 and "no model.keras" in refused.stderr


def test_a_lambda_model_is_refused_unless_the_operator_allows_it(
    service_env: dict[str, str], s3_client: Any, start_worker: Any, tmp_path: Path
) -> None:
    bucket = "e2e-unsafe"
    s3_client.create_bucket(Bucket=bucket)
    truth = upload_digits(s3_client, bucket, "in/", 8, seed=94)
    path = _lambda_model(tmp_path / "lam.keras")
    register = ["models", "register", "lam", "--task", "classify", "--file", path]
    register += ["--labels", LABELS, "--promote"]
    refused = run_cli(service_env, *register)
    assert refused.returncode == 2, refused.stdout
    assert "safe mode" in refused.stderr and "BV_UNSAFE_MODELS=lam" in refused.stderr
    accepted = run_cli(service_env, *register, "--allow-unsafe")
    assert accepted.returncode == 0, accepted.stderr

    safe_worker = start_worker("--cpu", "--concurrency", "1")
    safe_worker.wait_for_children(1)
    job = _submit(service_env, bucket, "lam", "safe")
    assert job.returncode == 1, job.stderr + safe_worker.log()  # the job could not run
    assert "failed" in job.stderr and "BV_UNSAFE_MODELS=lam" in job.stderr
    lines, summary = read_job(s3_client, bucket, "safe/", printed_job_id(job))
    assert summary["error"] == len(truth) == len(lines) and summary["ok"] == 0
    for line in lines:
        assert line["error"]["type"] == "ModelLoadError"
        assert "safe mode" in line["error"]["message"]
        assert "BV_UNSAFE_MODELS=lam" in line["error"]["message"]
    safe_worker.stop()

    trusting_worker = start_worker("--cpu", "--concurrency", "1", env={"BV_UNSAFE_MODELS": "lam"})
    trusting_worker.wait_for_children(1)
    job = _submit(service_env, bucket, "lam", "trusted")
    assert job.returncode == 0, job.stderr + trusting_worker.log()
    lines, summary = read_job(s3_client, bucket, "trusted/", printed_job_id(job))
    assert summary["ok"] == len(truth) == len(lines)
    assert "safe mode OFF" in trusting_worker.full_log()
