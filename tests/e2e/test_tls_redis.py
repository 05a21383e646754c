"""Redis with a password and TLS (``rediss://``): a job end to end, and no secret in any output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import printed_job_id, read_job, run_cli, submit_cli, upload_digits
from tests.services import RestartableRedis
from tests.tls import make_tls_files

pytestmark = pytest.mark.e2e

PASSWORD = "tls-Pa55word-e2e"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    server = RestartableRedis(password=PASSWORD, tls=make_tls_files(tmp_path))
    yield server
    server.close()


def test_a_job_over_rediss_with_a_password(
    service_env: dict[str, str],
    tls_redis: RestartableRedis,
    s3_client: Any,
    digits_model: str,
    start_worker: Any,
) -> None:
    env = {**service_env, "BV_BROKER_URL": tls_redis.url}
    assert tls_redis.url.startswith("rediss://")
    plain = redis.Redis(port=tls_redis.port, password=PASSWORD, socket_timeout=2)
    with pytest.raises(redis.exceptions.ConnectionError):
        plain.ping()  # the port speaks TLS only: the job below cannot have gone in clear
    bucket = "e2e-tls"
    s3_client.create_bucket(Bucket=bucket)
    truth = upload_digits(s3_client, bucket, "in/", 48, seed=91)
    worker = start_worker("--cpu", "--concurrency", "1", env=env)
    worker.wait_for_children(1)
    done = submit_cli(
        env,
        f"s3://{bucket}/in/",
        f"s3://{bucket}/out/",
        "--wait",
    )
    assert done.returncode == 0, done.stderr + worker.log()
    job_id = printed_job_id(done)
    lines, summary = read_job(s3_client, bucket, "out/", job_id)
    assert summary["ok"] == len(truth) == len(lines)
    status = run_cli(env, "status", job_id)
    assert status.returncode == 0 and "finished" in status.stdout

    wrong = run_cli(
        {**env, "BV_BROKER_URL": tls_redis.url.replace(PASSWORD, "nope")}, "status", "x"
    )
    assert wrong.returncode == 2
    assert PASSWORD not in wrong.stderr and "nope" not in wrong.stderr

    written = [
        s3_client.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read().decode()
        for entry in s3_client.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]
    ]
    outputs = [worker.full_log(), done.stdout, done.stderr, status.stdout, *written]
    for text in outputs:
        assert PASSWORD not in text
        assert service_env["AWS_SECRET_ACCESS_KEY"] not in text
    assert "rediss://:**@" in worker.full_log() or ":***@" in worker.full_log()
