"""The job subcommands of ``bucketvision``: status, jobs, cancel, retry; flags submit shares.

Thin: each handler parses flags, calls a plain function (:mod:`producer.lifecycle`,
:mod:`producer.status`) and prints. Exit codes as everywhere (``infra/errors.py``): 2 for a
request that cannot run (unknown job, cancelling a job that ended, nothing to retry), 1
when a ``--wait`` sees the job fail or get cancelled, or its ``--timeout`` run out.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from bucketvision.infra.errors import UserError
from bucketvision.infra.settings import Settings
from bucketvision.infra.vocabulary import JOB_STATES
from bucketvision.producer.cli_support import (
    positive_number,
    report_job,
    wait_for_job,
    whole_number,
)


def add_key_filters(parser: argparse.ArgumentParser, default: str) -> None:
    """``--include GLOB`` and ``--exclude GLOB``, both repeatable."""
    parser.add_argument(
        "--include", action="append", metavar="GLOB", help=f"only keys matching GLOB ({default})"
    )
    parser.add_argument(
        "--exclude", action="append", metavar="GLOB", help="not keys matching GLOB (repeatable)"
    )


def add_wait_flags(
    parser: argparse.ArgumentParser, what: str = "the job", *, json_flag: bool = True
) -> None:
    """``--wait``, ``--quiet``, ``--timeout SECONDS`` and (``json_flag``) ``--json``."""
    if json_flag:
        parser.add_argument(
            "--json",
            action="store_true",
            help="print one JSON object on stdout instead of the id: the submission, or with"
            " --wait the final status",
        )
    parser.add_argument("--wait", action="store_true", help=f"follow {what} to its end")
    parser.add_argument("--quiet", action="store_true", help="no progress bar with --wait")
    parser.add_argument(
        "--timeout",
        type=positive_number,
        metavar="SECONDS",
        help="with --wait: exit 1 after this long",
    )


def check_wait_flags(args: argparse.Namespace) -> None:
    """A ``--timeout`` needs ``--wait`` and a positive number of seconds."""
    timeout = getattr(args, "timeout", None)
    if timeout is not None and not args.wait:
        raise UserError("--timeout applies to --wait; add --wait")
    if timeout is not None and timeout <= 0:
        raise UserError(f"--timeout must be above 0 seconds, not {timeout:g}")


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from bucketvision.producer.client import Client
    from bucketvision.producer.handles import Job
    from bucketvision.producer.status import format_status

    check_wait_flags(args)
    job = Job(args.job_id, Client.from_settings(settings))
    status = job.status()  # an unknown job: JobNotFound, with its advice
    if args.wait:
        return wait_for_job(job, args)
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def cmd_jobs(args: argparse.Namespace, settings: Settings) -> int:
    from bucketvision.producer.client import Client
    from bucketvision.producer.lifecycle import format_jobs

    rows = Client.from_settings(settings).jobs(state=args.state, limit=args.limit)
    print(json.dumps(rows, indent=2) if args.json else format_jobs(rows))
    return 0


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from bucketvision.producer.client import Client
    from bucketvision.producer.handles import Job

    print(Job(args.job_id, Client.from_settings(settings)).cancel())  # unknown: JobNotFound
    return 0


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    from bucketvision.producer.client import Client

    check_wait_flags(args)
    errors = [kind.strip() for kind in (args.errors or "").split(",") if kind.strip()]
    job = Client.from_settings(settings).retry(args.job_id, errors=errors, model=args.model)
    what = (
        f"retrying {job.submission.total} error lines of {args.job_id} with "
        f"{job.submission.model} as {job.id}"
    )
    return report_job(job, args, what)


def add_job_commands(sub: Any) -> None:
    """Register status, jobs, cancel and retry on the ``bucketvision`` subparsers."""
    status = sub.add_parser("status", help="state, counts, rate and ETA of a job")
    status.add_argument(
        "job_id", help="the job id that submit printed (e.g. 20261129T050102Z-1a2b3c4d)"
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    add_wait_flags(status, json_flag=False)
    status.set_defaults(handler=cmd_status)

    jobs = sub.add_parser("jobs", help="recent jobs, newest first")
    jobs.add_argument("--state", choices=JOB_STATES, help="only jobs in this state")
    jobs.add_argument(
        "--limit", type=whole_number(), default=20, help="at most this many (default 20)"
    )
    jobs.add_argument("--json", action="store_true", help="print the jobs as JSON")
    jobs.set_defaults(handler=cmd_jobs)

    cancel = sub.add_parser("cancel", help="stop a job: no new batch starts, running ones stop")
    cancel.add_argument(
        "job_id", help="the job id that submit printed (e.g. 20261129T050102Z-1a2b3c4d)"
    )
    cancel.set_defaults(handler=cmd_cancel)

    retry = sub.add_parser("retry", help="a new job over the error lines of a job")
    retry.add_argument(
        "job_id", help="the job id that submit printed (e.g. 20261129T050102Z-1a2b3c4d)"
    )
    retry.add_argument("--errors", metavar="TYPE[,TYPE]", help="only lines of these error types")
    retry.add_argument("--model", help="NAME[@VERSION] (default: the job's model)")
    add_wait_flags(retry, "the new job")
    retry.set_defaults(handler=cmd_retry)
