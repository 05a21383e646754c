"""Shadow runs on a real registry (moto server) and Redis: slots, per-job files, settling.

The worker's half (running the candidate, the tally) is in tests/unit/test_pipeline.py,
and the whole loop with trained models in tests/e2e/test_shadow_promotion.py.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
import redis

from bucketvision.infra.messages import MessageError, TrainingRequest
from bucketvision.infra.s3 import S3Store
from bucketvision.infra.settings import Settings
from bucketvision.models.registry import ModelRef, ModelRegistry
from bucketvision.models.shadow import (
    ShadowError,
    ShadowTally,
    claim_slot,
    record_job,
    settle,
    shadow_plan,
    start_shadow,
)

pytestmark = pytest.mark.integration

CARD = {"task": "classify", "input_shape": [28, 28, 1], "labels": ["0", "1"], "metrics": {}}


@pytest.fixture
def registry(settings: Settings, tmp_path: Path) -> ModelRegistry:
    """A registry of its own: v1 CURRENT, v2 a candidate, v3 another input size."""
    store = S3Store.from_settings(settings)
    found = ModelRegistry(store, f"s3://it-shadow/{secrets.token_hex(4)}/")
    path = tmp_path / "model.keras"
    path.write_bytes(b"the registry only reads the card here")
    found.add_version("digits", str(path), dict(CARD))
    found.add_version("digits", str(path), dict(CARD))
    found.add_version("digits", str(path), {**CARD, "input_shape": [32, 32, 1]})
    return found


@pytest.fixture
def client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.broker_url)


def _tally(items: int, agreed: float) -> ShadowTally:
    return ShadowTally(
        items=items,
        agreed=agreed,
        confidence_items=items,
        current_confidence=0.9 * items,
        candidate_confidence=0.8 * items,
    )


def _candidate(registry: ModelRegistry, version: str = "v2") -> ModelRef:
    return registry.resolve(f"digits@{version}")


def test_start_refuses_current_another_input_and_bad_values(registry: ModelRegistry) -> None:
    with pytest.raises(ShadowError, match="is CURRENT already"):
        start_shadow(registry, _candidate(registry, "v1"), jobs=2)
    with pytest.raises(ShadowError, match="differ in input_shape"):
        start_shadow(registry, _candidate(registry, "v3"), jobs=2)
    with pytest.raises(ShadowError, match="at least 1 job"):
        start_shadow(registry, _candidate(registry), jobs=0)
    with pytest.raises(ShadowError, match=r"share in \[0, 1\]"):
        start_shadow(registry, _candidate(registry), jobs=2, min_agreement=1.5)
    assert shadow_plan(registry, "digits") is None  # nothing half-started


def test_only_the_first_n_jobs_of_the_version_shadowed_get_a_slot(
    registry: ModelRegistry, client: redis.Redis
) -> None:
    plan = start_shadow(registry, _candidate(registry), jobs=2, min_agreement=0.9)
    assert registry.card("digits", "v2")["status"] == "shadow"
    assert claim_slot(registry, client, "digits@v3") is None  # pinned to another version
    slots = [claim_slot(registry, client, "digits@v1") for _ in range(3)]
    assert [slot.candidate if slot else None for slot in slots] == [plan.candidate] * 2 + [None]
    assert slots[0] is not None and slots[0].models_uri == str(registry.root)


def test_auto_promotes_a_candidate_that_agrees_once_n_jobs_are_in(
    registry: ModelRegistry, client: redis.Redis
) -> None:
    start_shadow(registry, _candidate(registry), jobs=2, min_agreement=0.9)
    record_job(registry, "digits@v2", "job-a", "digits@v1", _tally(100, 96))
    first = settle(registry, client, "digits@v2")
    assert "decision" not in first and first["jobs_seen"] == 1
    assert registry.current("digits") == "v1"
    record_job(registry, "digits@v2", "job-b", "digits@v1", _tally(100, 94))
    record_job(registry, "digits@v2", "job-b", "digits@v1", _tally(100, 94))  # written twice
    section = settle(registry, client, "digits@v2")
    assert section["jobs_seen"] == 2 and section["results"]["agreement"] == 0.95
    assert section["results"]["confidence_shift"] == pytest.approx(-0.1)
    assert section["decision"].startswith("promoted: shadow agreement 0.9500 >= 0.9")
    assert registry.current("digits") == "v2" and shadow_plan(registry, "digits") is None
    card = registry.card("digits", "v2")
    assert card["status"] == "promoted" and card["shadow"]["results"]["items"] == 200
    again = settle(registry, client, "digits@v2")  # a finaliser that runs again changes nothing
    assert again["decision"] == section["decision"] and registry.current("digits") == "v2"


def test_auto_rejects_a_candidate_below_the_agreement(
    registry: ModelRegistry, client: redis.Redis
) -> None:
    start_shadow(registry, _candidate(registry), jobs=1, min_agreement=0.9)
    record_job(registry, "digits@v2", "job-a", "digits@v1", _tally(50, 30))
    section = settle(registry, client, "digits@v2")
    assert section["decision"].startswith("rejected: shadow agreement 0.6000 < 0.9")
    assert registry.card("digits", "v2")["status"] == "rejected"
    assert registry.current("digits") == "v1" and shadow_plan(registry, "digits") is None


def test_current_moving_during_the_shadow_keeps_the_candidate(
    registry: ModelRegistry, client: redis.Redis
) -> None:
    start_shadow(registry, _candidate(registry), jobs=1)
    registry.promote("digits", "v3")
    record_job(registry, "digits@v2", "job-a", "digits@v1", _tally(10, 10))
    section = settle(registry, client, "digits@v2")
    assert "CURRENT moved from v1 to v3" in section["decision"]
    assert registry.current("digits") == "v3"


def test_stop_decides_on_the_jobs_that_came_in(
    registry: ModelRegistry, client: redis.Redis
) -> None:
    start_shadow(registry, _candidate(registry), jobs=5, promote="never")
    record_job(registry, "digits@v2", "job-a", "digits@v1", _tally(10, 9))
    section = settle(registry, client, "digits@v2", force=True)
    assert section["decision"].startswith("shadow ended: agreement 0.9000")
    assert registry.card("digits", "v2")["status"] == "candidate"
    assert registry.current("digits") == "v1"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"shadow_jobs": -1}, "shadow_jobs must be a whole number"),
        ({"shadow_agreement": 2}, r"shadow_agreement must be a share in \[0, 1\]"),
    ],
)
def test_training_requests_refuse_bad_shadow_values(fields: dict[str, Any], message: str) -> None:
    body = {"name": "digits", "task": "classify", "dataset": "s3://b/d/", **fields}
    with pytest.raises(MessageError, match=message):
        TrainingRequest.from_json(body)
