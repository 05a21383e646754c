"""Every family's served class offers all of what the worker uses (``models.family``).

The pipeline reads ``ServedModel``'s fields without defaults, so a family that left one
out would fail at run time; these checks catch it first. Building a served model traces
nothing, so a placeholder stands in for the Keras model.
"""

from __future__ import annotations

import pytest

from bucketvision.models.families import FAMILIES
from bucketvision.models.family import ServedGenerativeModel, ServedModel

CARDS = {
    "classify": {"input_shape": [28, 28, 1], "labels": ["a", "b"], "preprocess": "raw"},
    "detect": {"input_shape": [128, 128, 3], "labels": ["a", "b"]},
    "segment": {"input_shape": [64, 64, 3], "labels": ["background", "a"]},
    "generate": {"latent_dim": 8, "image_shape": [28, 28, 1], "labels": [], "conditional": False},
}


@pytest.mark.parametrize("task", sorted(FAMILIES))
def test_the_served_class_of_every_family_implements_its_protocol(task: str) -> None:
    entry = FAMILIES[task]
    served = entry.resolve("serve")(object(), CARDS[task], 4)
    protocol = ServedGenerativeModel if task == "generate" else ServedModel
    assert isinstance(served, protocol)
    assert served.task == task and served.forward_batch == 4
    if task != "generate":
        assert served.resize in ("stretch", "letterbox")
        assert served.preview_size == (640 if task == "detect" else None)


@pytest.mark.parametrize("task", sorted(FAMILIES))
def test_every_role_of_a_family_resolves_to_a_callable(task: str) -> None:
    entry = FAMILIES[task]
    assert entry.task == task
    assert all(callable(entry.resolve(role)) for role in ("fit", "score", "serve"))
