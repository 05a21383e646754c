"""What a job report shows, gathered by :mod:`report` and drawn by :mod:`report_html`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bucketvision.producer.report_thumbs import Tile


@dataclass(frozen=True)
class ErrorGroup:
    """Error lines of one type: how many, and a few ``(key, message)`` examples."""

    type: str
    count: int
    examples: list[tuple[str, str]]


@dataclass
class ReportData:
    """Everything the page shows."""

    summary: dict[str, Any]
    lines: list[dict[str, Any]]
    errors: list[ErrorGroup]
    tiles: list[Tile]
    colours: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    uri: str = ""
