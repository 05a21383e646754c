"""What every ``bucketvision`` subcommand shares: exit codes, errors, clients."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bucketvision.infra.errors import EXIT_FAILED, EXIT_USAGE, UserError
from bucketvision.infra.settings import Settings


class CommandError(UserError):
    """A command that cannot go on as asked, reported as ``error: ...`` with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def clients(settings: Settings) -> dict[str, Any]:
    """The S3 store, the Redis job store and the model registry for ``settings``."""
    from bucketvision.infra.jobs import JobStore
    from bucketvision.infra.s3 import S3Store
    from bucketvision.models.registry import ModelRegistry

    store = S3Store.from_settings(settings)
    return {
        "store": store,
        "jobs": JobStore.from_url(settings.broker_url),
        "registry": ModelRegistry(store, settings.models_uri),
    }


def report_job(found: dict[str, Any], job: Any, args: argparse.Namespace, what: str) -> int:
    """Print the job id (stdout) and ``what`` (stderr); with ``--wait`` follow it to the end."""
    from bucketvision.producer.follow import wait
    from bucketvision.producer.status import JOB_PATIENCE, followed_job, format_status

    print(job.job_id, flush=True)
    print(what, file=sys.stderr)
    if not args.wait:
        return 0
    followed = followed_job(found["jobs"], job.job_id)
    status = wait(followed, progress=not args.quiet, patience=JOB_PATIENCE)
    print(format_status(status), file=sys.stderr)
    return 0 if status["state"] == "finished" else EXIT_FAILED
