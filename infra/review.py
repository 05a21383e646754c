"""The review policy a job carries: which items the model was unsure of go to review.

An inference job run with ``--review-below P`` routes the items the model is unsure
of to ``<output>/_review/<job_id>/`` when it completes (:mod:`worker.review_select`
picks them from the manifest lines, :mod:`worker.review_files` writes them), for a
person to correct and ``bucketvision review import`` to add to a dataset. The policy
travels on the job record as JSON, so the finaliser, whichever worker it is, applies
the one the job was submitted with. docs/review.md is the user's contract.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import asdict, dataclass
from typing import Any

from bucketvision.infra.errors import UserError
from bucketvision.infra.outputs import REVIEW_FOLDER
from bucketvision.infra.s3 import S3Uri

REVIEW_BY = ("top", "margin")  # classify: the top probability, or top-1 minus top-2
DEFAULT_REVIEW_MAX = 10_000  # a job's share of review, so the finaliser's memory is bounded
REVIEW_TASKS = ("classify", "detect", "segment")


class ReviewPolicyError(UserError):
    """A review option out of range; the message names the flag and what it takes."""


@dataclass(frozen=True)
class ReviewPolicy:
    """Route an item when its confidence is below ``below`` (see docs/review.md).

    ``by`` is how a classifier's confidence is read (``top`` probability or the
    ``margin`` of the top two); ``floor`` is the lowest box score that counts for a
    detector (boxes below it are taken for background); at most ``limit`` items are
    routed, the least confident first, spread across predicted classes if ``diverse``.
    ``labels`` are the pinned model's classes, from its card at submission: the review
    files offer them to the reviewer.
    """

    below: float
    by: str = "top"
    floor: float = 0.05
    limit: int = DEFAULT_REVIEW_MAX
    diverse: bool = False
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 < self.below <= 1.0:
            raise ReviewPolicyError(
                f"--review-below must be a probability in (0, 1], not {self.below}"
            )
        if self.by not in REVIEW_BY:
            raise ReviewPolicyError(
                f"--review-by must be one of {', '.join(REVIEW_BY)}, not {self.by!r}"
            )
        if not 0.0 <= self.floor < self.below:
            raise ReviewPolicyError(
                f"--review-floor must be at least 0 and below --review-below ({self.below}), "
                f"not {self.floor}"
            )
        if self.limit < 1:
            raise ReviewPolicyError(f"--review-max must be at least 1, not {self.limit}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes | None) -> ReviewPolicy | None:
        """The policy stored on a job record; None for a job without review."""
        if not text:
            return None
        raw: dict[str, Any] = json.loads(text)
        return cls(
            below=float(raw["below"]),
            by=str(raw.get("by", "top")),
            floor=float(raw.get("floor", 0.05)),
            limit=int(raw.get("limit", DEFAULT_REVIEW_MAX)),
            diverse=bool(raw.get("diverse", False)),
            labels=tuple(str(label) for label in raw.get("labels", ())),
        )


def review_prefix(output: S3Uri, job_id: str) -> S3Uri:
    """``<output>/_review/<job_id>/``: where a job's review items go."""
    return S3Uri(output.bucket, f"{output.prefix}{REVIEW_FOLDER}/{job_id}/")


def refuse_review_task(task: str) -> None:
    """Review needs a model with a confidence: not generate."""
    if task not in REVIEW_TASKS:
        raise ReviewPolicyError(
            f"--review-below applies to {', '.join(REVIEW_TASKS)} jobs, not {task}"
        )


def parse_review_items(text: str) -> dict[str, dict[str, Any]]:
    """A review folder's ``items.jsonl`` by file name (a reviewer moves files, never renames)."""
    rows = (json.loads(row) for row in text.splitlines() if row.strip())
    return {posixpath.basename(row["file"]): row for row in rows}
