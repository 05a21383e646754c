"""Choosing a job's items for review from its manifest lines, as the finaliser streams them.

An item is a candidate when its confidence is below the policy's ``below``
(:class:`infra.review.ReviewPolicy`):

- classify: the top probability (``score``), or with ``by="margin"`` the top
  probability minus the second;
- detect: the item has a box scored in ``[floor, below)``; its confidence is its least
  confident such box (boxes under ``floor`` are taken for background);
- segment: the mean top per-pixel probability (the result's ``confidence``).

At most ``limit`` candidates are kept, the least confident first; ``diverse`` keeps the
``limit`` least confident of each predicted class and then takes them in turns across
classes, so a job dominated by one class still routes the others. Memory is bounded by
``limit`` (per class with ``diverse``), whatever the job's size. Ties are broken by key,
so a finaliser run again picks the same items.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Any

from bucketvision.infra.confidence import top_confidence
from bucketvision.infra.review import ReviewPolicy


@dataclass(frozen=True, order=True)
class ReviewItem:
    """One item routed to review: ordered by confidence, then key."""

    confidence: float
    key: str
    predicted: str  # the predicted class (classify label; detect/segment: the main one)
    result: dict[str, Any]


def item_confidence(task: str, policy: ReviewPolicy, result: dict[str, Any]) -> float | None:
    """The confidence review compares, or None when the item has none (no box in range)."""
    if task == "detect":
        banded = [
            float(box["score"])
            for box in result.get("detections", [])
            if float(box["score"]) >= policy.floor
        ]
        return min(banded) if banded else None
    top = top_confidence(task, result)  # classify: the top probability; segment: pixels' mean
    if task == "classify" and top is not None and policy.by == "margin":
        scores = [float(entry["score"]) for entry in result.get("top_k", [])[:2]]
        return scores[0] - scores[1] if len(scores) == 2 else top
    return top


def predicted_class(task: str, policy: ReviewPolicy, result: dict[str, Any]) -> str:
    """The class an item is counted under for ``diverse``."""
    if task == "classify":
        return str(result["label"])
    if task == "detect":
        banded = [box for box in result.get("detections", []) if box["score"] >= policy.floor]
        return str(min(banded, key=lambda box: box["score"])["label"]) if banded else ""
    fractions = result.get("pixel_fraction", {})
    foreground = list(fractions.items())[1:]  # the first class is the background
    return max(foreground, key=lambda pair: pair[1])[0] if foreground else ""


class ReviewSelector:
    """Keeps the least confident candidates of a stream of manifest lines."""

    def __init__(self, task: str, policy: ReviewPolicy) -> None:
        self.task, self.policy = task, policy
        self.candidates = 0  # every line below the threshold, kept or not
        self._heaps: dict[str, list[tuple[float, str, ReviewItem]]] = {}

    def add(self, line: dict[str, Any]) -> None:
        """Consider one manifest line (errors and skipped lines never go to review)."""
        if line.get("status") != "ok" or not line.get("result"):
            return
        result = line["result"]
        confidence = item_confidence(self.task, self.policy, result)
        if confidence is None or confidence >= self.policy.below:
            return
        self.candidates += 1
        predicted = predicted_class(self.task, self.policy, result)
        item = ReviewItem(round(confidence, 6), str(line["key"]), predicted, result)
        heap = self._heaps.setdefault(predicted if self.policy.diverse else "", [])
        entry = (-item.confidence, _reversed_key(item.key), item)  # the heap's top: evict first
        if len(heap) < self.policy.limit:
            heapq.heappush(heap, entry)
        elif entry > heap[0]:
            heapq.heapreplace(heap, entry)

    def selected(self) -> list[ReviewItem]:
        """The items to route, least confident first (in turns across classes if diverse)."""
        ranked = [sorted(entry[2] for entry in heap) for _, heap in sorted(self._heaps.items())]
        if len(ranked) == 1:
            return ranked[0]
        turns = itertools.chain.from_iterable(itertools.zip_longest(*ranked))
        return [item for item in turns if item is not None][: self.policy.limit]


def _reversed_key(key: str) -> tuple[int, ...]:
    """A sort key that orders strings backwards, so a later key is evicted before an earlier."""
    return (*(-ord(character) for character in key), 1)
