"""Which keys a job takes: the include and exclude globs, key lists, job ids.

Globs (``--include``, ``--exclude``, both repeatable) are matched case-insensitively
against the key relative to the input prefix: a key is taken when it matches an
include and no exclude.

A key list (``submit --keys-from``) is read from a local file, an S3 object
(``s3://B/key``) or stdin (``-``). It holds one full object key per line, as S3
lists them and as ``manifest.jsonl`` has them (so under the input prefix); blank
lines are ignored and only the line ending is stripped (a key may end in a space).
A list whose first non-blank line is a JSON object is read as a manifest of an
earlier job: each line's ``key``. A key listed twice is taken once.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from fnmatch import fnmatchcase
from typing import TextIO

from bucketvision.infra.errors import UserError
from bucketvision.infra.s3 import S3Store, S3Uri, parse_s3_uri

# A job id chosen with ``submit --job-id``: it names a Redis key and an S3 folder.
JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class KeyListError(UserError):
    """A key list that cannot be read or used; the message says which line and why."""


def matches(relative_key: str, patterns: Sequence[str]) -> bool:
    """Case-insensitive glob match of a key (relative to the input prefix)."""
    lowered = relative_key.lower()
    return any(fnmatchcase(lowered, pattern.lower()) for pattern in patterns)


def selected(relative_key: str, includes: Sequence[str], excludes: Sequence[str] = ()) -> bool:
    """Taken: the key matches an include glob and no exclude glob."""
    return matches(relative_key, includes) and not matches(relative_key, excludes)


def select_keys(
    keys: Iterable[str],
    input_uri: S3Uri,
    exclude: S3Uri | None,
    patterns: Sequence[str],
    excludes: Sequence[str] = (),
) -> Iterator[str]:
    """Keys under the input that are ``selected``, skipping folders and our own outputs."""
    for key in keys:
        if key.endswith("/"):
            continue
        if (
            exclude is not None
            and exclude.bucket == input_uri.bucket
            and exclude.prefix
            and key.startswith(exclude.prefix)
        ):
            continue
        if selected(key[len(input_uri.prefix) :], patterns, excludes):
            yield key


def parse_key_list(text: str, source: str = "the key list") -> list[str]:
    """The keys of a key list or a manifest (see the module docstring), in order, once each."""
    lines = [line.rstrip("\r") for line in text.split("\n")]
    filled = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    manifest = bool(filled) and filled[0][1].lstrip().startswith("{")
    found: dict[str, None] = {}
    for number, line in filled:
        key = _manifest_key(line, number, source) if manifest else line
        found.setdefault(key, None)
    return list(found)


def _manifest_key(line: str, number: int, source: str) -> str:
    try:
        entry = json.loads(line)
    except ValueError as error:
        raise KeyListError(f"{source} line {number}: not a JSON manifest line ({error})") from None
    key = entry.get("key") if isinstance(entry, dict) else None
    if not isinstance(key, str) or not key:
        raise KeyListError(f"{source} line {number}: a manifest line needs a string 'key'")
    return key


def read_key_list(source: str, store: S3Store, stdin: TextIO | None = None) -> list[str]:
    """The keys listed at ``source``: a local path, ``s3://B/key`` or ``-`` (stdin)."""
    if source == "-":
        text = (stdin or sys.stdin).read()
    elif source.startswith("s3://"):
        where = parse_s3_uri(source, directory=False)
        text = store.get_text(where.bucket, where.prefix)
    else:
        try:
            with open(source, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as error:
            raise KeyListError(f"--keys-from {source}: {error.strerror or error}") from None
    return parse_key_list(text, f"--keys-from {source}")


def check_listed_keys(keys: Sequence[str], input_uri: S3Uri, source: str) -> None:
    """Refuse an empty list, and keys outside the input prefix (relative keys, say)."""
    if not keys:
        raise KeyListError(f"{source} lists no keys; nothing to submit")
    outside = [key for key in keys if not key.startswith(input_uri.prefix)]
    if outside:
        shown = ", ".join(repr(key) for key in outside[:3])
        raise KeyListError(
            f"{len(outside)} keys of {source} are not under the input prefix "
            f"{input_uri.prefix!r} (e.g. {shown}); a key list holds full object keys, "
            f"as S3 lists them and manifest.jsonl has them"
        )


def check_job_id(job_id: str) -> str:
    """A job id of letters, digits, '.', '_' and '-' (at most 64, first a letter or digit)."""
    if not JOB_ID_PATTERN.fullmatch(job_id):
        raise UserError(
            f"--job-id {job_id!r}: use letters, digits, '.', '_' and '-' "
            "(at most 64, starting with a letter or digit)"
        )
    return job_id
