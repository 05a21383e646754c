"""models.training: the promotion gate and the request parsing (no training is run)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from bucketvision.infra.messages import MessageError, TrainingRequest
from bucketvision.models.registry import ModelRef
from bucketvision.models.training import PROMOTE_MODES, promotion_decision

ROOT = Path(__file__).resolve().parents[2]


def current(metrics: dict[str, Any] | None = None, version: str = "v3") -> ModelRef:
    card: dict[str, Any] = {"task": "classify"}
    if metrics is not None:
        card["metrics"] = metrics
    return ModelRef("digits", version, card)


def test_importing_the_module_does_not_load_tensorflow() -> None:
    # in a fresh interpreter: other test modules may have imported TensorFlow already
    code = (
        "import sys\n"
        "import bucketvision.models.training\n"
        "sys.exit(sorted({'tensorflow', 'keras'} & set(sys.modules)) and 1 or 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()


def test_promote_modes() -> None:
    assert PROMOTE_MODES == ("auto", "always", "never")


# --- promotion_decision ------------------------------------------------------------------------


def test_the_first_version_is_promoted() -> None:
    promote, reason = promotion_decision("accuracy", 0.1, None, 0.0)
    assert promote is True
    assert reason == "promoted: the first version of this model"


@pytest.mark.parametrize("ref", [None, current({"accuracy": 0.99})])
def test_always_promotes_whatever_the_metric(ref: ModelRef | None) -> None:
    promote, reason = promotion_decision("accuracy", 0.01, ref, 0.0, mode="always")
    assert promote is True
    assert reason == "promoted: --promote always"


@pytest.mark.parametrize("ref", [None, current({"accuracy": 0.1})])
def test_never_keeps_a_candidate_even_when_better_or_first(ref: ModelRef | None) -> None:
    promote, reason = promotion_decision("accuracy", 0.99, ref, 0.0, mode="never")
    assert promote is False
    assert reason == "kept as a candidate: --promote never"


@pytest.mark.parametrize(
    "metrics",
    [None, {}, {"loss": 0.2}, {"accuracy": None}, {"accuracy": "0.9"}, {"accuracy": [0.9]}],
    ids=["no-metrics", "empty", "other-metric", "null", "string", "list"],
)
def test_a_current_without_the_metric_is_replaced(metrics: dict[str, Any] | None) -> None:
    promote, reason = promotion_decision("accuracy", 0.5, current(metrics), 0.0)
    assert promote is True
    assert reason == "promoted: CURRENT digits@v3 has no accuracy to compare with"


def test_an_equal_metric_is_promoted() -> None:
    promote, reason = promotion_decision("accuracy", 0.9, current({"accuracy": 0.9}), 0.0)
    assert promote is True
    assert reason.startswith("promoted: accuracy 0.9000 >= CURRENT digits@v3's 0.9000")
    assert "tolerance 0.0" in reason


def test_a_better_metric_is_promoted() -> None:
    promote, _ = promotion_decision("accuracy", 0.95, current({"accuracy": 0.9}), 0.0)
    assert promote is True


def test_an_integer_metric_is_compared() -> None:
    assert promotion_decision("count", 3, current({"count": 3}), 0.0)[0] is True
    assert promotion_decision("count", 2, current({"count": 3}), 0.0)[0] is False


def test_within_the_tolerance_is_promoted() -> None:
    promote, reason = promotion_decision("mean_iou", 0.88, current({"mean_iou": 0.9}), 0.05)
    assert promote is True
    assert reason == "promoted: mean_iou 0.8800 >= CURRENT digits@v3's 0.9000 - tolerance 0.05"


def test_exactly_at_the_tolerance_is_promoted() -> None:
    # binary-exact numbers: 0.75 - 0.25 == 0.5
    assert promotion_decision("map50", 0.5, current({"map50": 0.75}), 0.25)[0] is True


def test_below_the_tolerance_is_rejected() -> None:
    promote, reason = promotion_decision("accuracy", 0.8, current({"accuracy": 0.9}), 0.05)
    assert promote is False
    assert reason == (
        "rejected: accuracy 0.8000 < CURRENT digits@v3's 0.9000 - tolerance 0.05; CURRENT stays v3"
    )


def test_slightly_worse_without_tolerance_is_rejected() -> None:
    promote, reason = promotion_decision("accuracy", 0.8999, current({"accuracy": 0.9}), 0.0)
    assert promote is False
    assert reason.startswith("rejected:")


def test_the_metric_is_looked_up_by_name() -> None:
    ref = current({"accuracy": 0.2, "f1": 0.95})
    assert promotion_decision("f1", 0.5, ref, 0.0)[0] is False
    assert promotion_decision("accuracy", 0.5, ref, 0.0)[0] is True


# --- TrainingRequest.from_json -----------------------------------------------------------------


def test_from_json_ignores_unknown_keys() -> None:
    body = {
        "name": "digits",
        "task": "classify",
        "dataset": "s3://data/digits/",
        "epochs": 3,
        "learning_rate": 0.001,
        "promote": "never",
        "extra": {"width": 32},
        "run_id": "digits-20260101-abc",  # not a request field
        "submitted_by": "someone",
    }
    request = TrainingRequest.from_json(body)
    assert request == TrainingRequest(
        name="digits",
        task="classify",
        dataset="s3://data/digits/",
        epochs=3,
        learning_rate=0.001,
        promote="never",
        extra={"width": 32},
    )
    assert not hasattr(request, "run_id")


def test_from_json_fills_the_defaults() -> None:
    request = TrainingRequest.from_json({"name": "n", "task": "detect", "dataset": "s3://b/d/"})
    assert request.epochs is None
    assert request.minibatch_size is None
    assert request.learning_rate is None
    assert request.image_size is None
    assert request.steps_per_epoch is None
    assert request.seed == 0
    assert request.tolerance == 0.0
    assert request.promote == "auto"
    assert request.extra == {}


def test_from_json_round_trips_every_field() -> None:
    request = TrainingRequest(
        name="n",
        task="segment",
        dataset="s3://b/d/",
        epochs=2,
        minibatch_size=8,
        learning_rate=0.01,
        image_size=96,
        seed=5,
        tolerance=0.02,
        promote="always",
        steps_per_epoch=10,
        extra={"k": 1},
    )
    body = {field.name: getattr(request, field.name) for field in fields(TrainingRequest)}
    assert TrainingRequest.from_json({**body, "unknown": True}) == request


def test_from_json_needs_the_required_fields() -> None:
    with pytest.raises(MessageError, match="malformed training request"):
        TrainingRequest.from_json({"name": "n", "task": "classify", "bogus": 1})
