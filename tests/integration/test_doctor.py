"""``bucketvision doctor``: exit 0 when all is well, non-zero with what to fix otherwise."""

from __future__ import annotations

from bucketvision.infra.local_services import free_port
from tests.helpers import run_cli


def test_doctor_is_happy_when_redis_and_s3_answer(service_env: dict[str, str]) -> None:
    result = run_cli(service_env, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok    redis" in result.stdout and "all good" in result.stderr


def test_doctor_exits_non_zero_when_redis_is_down(service_env: dict[str, str]) -> None:
    down = f"redis://:secret-pw@127.0.0.1:{free_port()}/0"
    result = run_cli({**service_env, "BV_BROKER_URL": down}, "doctor")
    assert result.returncode == 1
    assert "FAIL  redis" in result.stdout and "start Redis or set BV_BROKER_URL" in result.stdout
    assert "secret-pw" not in result.stdout + result.stderr
    assert "1 problem(s)" in result.stderr


def test_doctor_exits_non_zero_when_s3_is_down(service_env: dict[str, str]) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    result = run_cli({**service_env, "BV_S3_ENDPOINT_URL": down}, "doctor", timeout=180)
    assert result.returncode == 1
    assert "FAIL  s3" in result.stdout and "BV_S3_ENDPOINT_URL" in result.stdout
