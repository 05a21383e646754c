"""One base class for user errors: the CLI reports those, and lets a bug be a bug."""

from __future__ import annotations

from typing import Any

import pytest

from bucketvision.infra.errors import EXIT_FAILED, EXIT_USAGE, UserError, WaitTimedOut
from bucketvision.infra.jobs import JobNotFound
from bucketvision.infra.local_services import ServiceError
from bucketvision.infra.s3 import StorageError, UriError, parse_s3_uri
from bucketvision.infra.schedule import ScheduleError
from bucketvision.infra.settings import SettingsError
from bucketvision.infra.training_runs import RunNotFound
from bucketvision.models.dataset_layouts import DatasetError
from bucketvision.models.decoding import DecodeError
from bucketvision.models.loading import ModelLoadError
from bucketvision.models.registry import ModelNotFound, RegistryError
from bucketvision.producer import cli
from bucketvision.producer.beat import BeatAlreadyRunning
from bucketvision.producer.cli_support import CommandError
from bucketvision.producer.submit import SubmitError


@pytest.mark.parametrize(
    "error",
    [
        CommandError,
        SubmitError,
        BeatAlreadyRunning,
        ModelNotFound,
        RegistryError,
        ModelLoadError,
        DatasetError,
        DecodeError,
        JobNotFound,
        RunNotFound,
        ScheduleError,
        SettingsError,
        StorageError,
        ServiceError,
        UriError,
        WaitTimedOut,
    ],
)
def test_every_error_a_user_can_cause_is_a_user_error(error: type[Exception]) -> None:
    assert issubclass(error, UserError)


def test_a_user_error_exits_with_its_code_and_one_line(monkeypatch: Any, capsys: Any) -> None:
    def refuse(*_: Any) -> int:
        raise RegistryError("no model named 'x'; register one with `bucketvision models register`")

    monkeypatch.setattr(cli, "cmd_doctor", refuse)
    assert cli.main(["doctor"]) == EXIT_USAGE
    assert capsys.readouterr().err == (
        "error: no model named 'x'; register one with `bucketvision models register`\n"
    )


def test_a_wait_that_runs_out_exits_1(monkeypatch: Any, capsys: Any) -> None:
    def wait(*_: Any) -> int:
        raise WaitTimedOut("job j did not finish within 5 s")

    monkeypatch.setattr(cli, "cmd_doctor", wait)
    assert cli.main(["doctor"]) == EXIT_FAILED
    assert "did not finish within 5 s" in capsys.readouterr().err


@pytest.mark.parametrize("bug", [ValueError("bad index"), TimeoutError("socket"), KeyError("k")])
def test_a_programming_bug_is_not_reported_as_a_bad_request(
    monkeypatch: Any, bug: Exception
) -> None:
    def broken(*_: Any) -> int:
        raise bug

    monkeypatch.setattr(cli, "cmd_doctor", broken)
    with pytest.raises(type(bug)):
        cli.main(["doctor"])


def test_a_bad_uri_is_a_user_error_and_a_value_error() -> None:
    with pytest.raises(UserError, match="write it as s3://BUCKET/PREFIX/"):
        parse_s3_uri("bucket/prefix")
    with pytest.raises(ValueError):
        parse_s3_uri("s3://")
