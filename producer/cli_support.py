"""What every ``bucketvision`` subcommand shares: exit codes, errors, clients."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from bucketvision.infra.errors import EXIT_FAILED, EXIT_USAGE, UserError
from bucketvision.infra.settings import Settings

if TYPE_CHECKING:
    from bucketvision.producer.handles import Job


class CommandError(UserError):
    """A command that cannot go on as asked, reported as ``error: ...`` with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def whole_number(minimum: int = 1) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum`` (``--batch-size 0`` is refused:
    it would otherwise fall back to the default, or wait forever as ``--max-in-flight 0``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    parse.__name__ = "whole number"
    return parse


def positive_number(text: str) -> float:
    """An argparse type: a number above 0 (seconds, minutes)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def clients(settings: Settings) -> dict[str, Any]:
    """The S3 store, the Redis job store and the model registry for ``settings``: the
    parts of the Python API's :class:`~producer.client.Client` the commands pass on."""
    from bucketvision.producer.client import Client

    client = Client.from_settings(settings)
    return {"store": client.store, "jobs": client.job_store, "registry": client.registry}


def report_job(job: Job, args: argparse.Namespace, what: str) -> int:
    """Print the job id (stdout) and ``what`` (stderr); with ``--wait`` follow it to the end.

    A job whose id was taken already (``submit --job-id``) is that job: nothing new was sent.
    """
    submitted = job.submission
    as_json = getattr(args, "json", False)
    if not as_json:
        print(job.id, flush=True)
    if submitted.existing:
        what = f"job {job.id} exists already: nothing new submitted"
    print(what, file=sys.stderr)
    if not args.wait:
        if as_json:
            print(json.dumps(asdict(submitted), indent=2))
        return 0
    return wait_for_job(job, args)


def wait_for_job(job: Job, args: argparse.Namespace) -> int:
    """Follow a job to its end (:meth:`Job.wait`): 0 finished; 1 failed or cancelled, or past
    ``args.timeout``."""
    from bucketvision.producer.handles import JobFailed
    from bucketvision.producer.status import format_status

    try:
        status = job.wait(getattr(args, "timeout", None), progress=not args.quiet)
    except JobFailed as failed:
        status = failed.status
    if getattr(args, "json", False):
        print(json.dumps(status, indent=2))
    print(format_status(status), file=sys.stderr)
    if status["state"] == "finished":
        return 0
    if status["state"] == "cancelled":
        done, total = status["done"], status["total"]
        print(f"job {job.id} was cancelled: {done} of {total} items ran", file=sys.stderr)
    return EXIT_FAILED
