"""Which manifest lines go to review: thresholds per task, the cap, diversity, determinism."""

from __future__ import annotations

import random
from typing import Any

import pytest

from bucketvision.infra.review import ReviewPolicy, ReviewPolicyError
from bucketvision.worker.review_select import ReviewSelector


def _classified(key: str, *scores: tuple[str, float]) -> dict[str, Any]:
    top_k = [{"label": label, "score": score} for label, score in scores]
    result = {"label": scores[0][0], "score": scores[0][1], "top_k": top_k}
    return {"key": key, "status": "ok", "result": result}


def _select(task: str, policy: ReviewPolicy, lines: list[dict[str, Any]]) -> list[str]:
    selector = ReviewSelector(task, policy)
    for line in lines:
        selector.add(line)
    return [item.key for item in selector.selected()]


def test_classify_routes_exactly_the_scores_below_the_threshold_least_confident_first() -> None:
    lines = [_classified(f"k{i}", ("a", score), ("b", 1 - score)) for i, score in enumerate(
        [0.95, 0.5, 0.89999, 0.9, 0.7, 0.99]
    )]  # fmt: skip
    lines.append({"key": "broken", "status": "error", "result": None})
    assert _select("classify", ReviewPolicy(below=0.9), lines) == ["k1", "k4", "k2"]


def test_margin_compares_the_top_two() -> None:
    lines = [
        _classified("close", ("a", 0.55), ("b", 0.45)),  # margin 0.10
        _classified("clear", ("a", 0.6), ("b", 0.1)),  # margin 0.50
    ]
    assert _select("classify", ReviewPolicy(below=0.2, by="margin"), lines) == ["close"]
    assert _select("classify", ReviewPolicy(below=0.2), lines) == []


def test_the_cap_keeps_the_least_confident_whatever_the_order_and_ties_go_by_key() -> None:
    scores = [round(0.01 * i, 2) for i in range(90)] + [0.3] * 10
    keys = [f"k{i:03d}" for i in range(len(scores))]
    lines = [_classified(key, ("a", score)) for key, score in zip(keys, scores, strict=True)]
    expected = _select("classify", ReviewPolicy(below=0.9), lines)[:35]
    for seed in range(3):
        random.Random(seed).shuffle(lines)
        assert _select("classify", ReviewPolicy(below=0.9, limit=35), lines) == expected
    selector = ReviewSelector("classify", ReviewPolicy(below=0.9, limit=35))
    for line in lines:
        selector.add(line)
    assert selector.candidates == 100 and len(selector.selected()) == 35


def test_diverse_takes_turns_across_predicted_classes() -> None:
    lines = [_classified(f"a{i}", ("a", 0.1 + i / 100)) for i in range(10)]
    lines += [_classified(f"b{i}", ("b", 0.5 + i / 100)) for i in range(3)]
    assert _select("classify", ReviewPolicy(below=0.9, limit=4), lines) == [
        "a0",
        "a1",
        "a2",
        "a3",
    ]
    diverse = _select("classify", ReviewPolicy(below=0.9, limit=4, diverse=True), lines)
    assert diverse == ["a0", "b0", "a1", "b1"]


def test_detect_counts_boxes_between_the_floor_and_the_threshold() -> None:
    def detected(key: str, *scores: float) -> dict[str, Any]:
        boxes = [{"label": "x", "score": s, "box": [0, 0, 1, 1]} for s in scores]
        return {"key": key, "status": "ok", "result": {"detections": boxes}}

    lines = [
        detected("sure", 0.97, 0.99),
        detected("noise-only", 0.02, 0.98),
        detected("doubt", 0.4, 0.99),
        detected("nothing"),
    ]
    assert _select("detect", ReviewPolicy(below=0.8, floor=0.05), lines) == ["doubt"]


def test_segment_reads_the_mean_pixel_confidence() -> None:
    lines = [
        {"key": k, "status": "ok", "result": {"confidence": c, "pixel_fraction": {"bg": 1.0}}}
        for k, c in (("low", 0.6), ("high", 0.97))
    ]
    lines.append({"key": "class-map", "status": "ok", "result": {"pixel_fraction": {"bg": 1}}})
    assert _select("segment", ReviewPolicy(below=0.9), lines) == ["low"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"below": 0.0}, "--review-below must be a probability in (0, 1]"),
        ({"below": 0.5, "by": "entropy"}, "--review-by must be one of top, margin"),
        ({"below": 0.5, "floor": 0.5}, "--review-floor must be at least 0 and below"),
        ({"below": 0.5, "limit": 0}, "--review-max must be at least 1"),
    ],
)
def test_a_policy_out_of_range_is_refused_with_the_flag_named(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ReviewPolicyError, match=message.replace("(", r"\(").replace("]", r"\]")):
        ReviewPolicy(**options)


def test_the_policy_round_trips_through_the_job_record() -> None:
    policy = ReviewPolicy(below=0.7, by="margin", floor=0.1, limit=5, diverse=True, labels=("a",))
    assert ReviewPolicy.from_json(policy.to_json()) == policy
    assert ReviewPolicy.from_json("") is None and ReviewPolicy.from_json(None) is None


def test_a_job_takes_the_cards_threshold_unless_the_request_gives_one() -> None:
    from bucketvision.producer.submit import review_for

    card = {"labels": ["cat", "dog"], "review_below": 0.7}
    assert review_for("classify", None, card) == ReviewPolicy(below=0.7, labels=("cat", "dog"))
    asked = ReviewPolicy(below=0.5, by="margin")
    assert review_for("classify", asked, card) == ReviewPolicy(
        below=0.5, by="margin", labels=("cat", "dog")
    )
    assert review_for("classify", None, {"labels": ["cat"]}) is None
    with pytest.raises(ReviewPolicyError, match="applies to classify, detect, segment jobs"):
        review_for("generate", asked, card)
