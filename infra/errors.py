"""The one base class of every error a user can cause.

A bad flag, a missing bucket, an unknown model, a malformed schedule, a job
that did not finish in time: each derives from :class:`UserError`, whose
message says what to change, and the CLI reports it as ``error: ...`` with
``exit_code``. Anything else that escapes a command is a bug and comes out as
a traceback, never as "bad request".
"""

from __future__ import annotations

EXIT_USAGE = 2  # a request that cannot run as given
EXIT_FAILED = 1  # the work ran and failed, or a wait ran out
EXIT_UNAVAILABLE = 3  # a service (Redis, S3) did not answer: the same command may work later


class UserError(Exception):
    """An error a user can cause and fix; the message says how."""

    exit_code = EXIT_USAGE


class WaitTimedOut(UserError):
    """A job or training run did not end within the time a caller was willing to wait."""

    exit_code = EXIT_FAILED
