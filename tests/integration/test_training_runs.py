"""Training-run records and the per-model training lock, on a real Redis."""

from __future__ import annotations

import redis

from bucketvision.infra.training_runs import LOCK_TTL_SECONDS, TrainingRuns


def test_one_run_per_model_at_a_time(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.delete("bv:train:lock:lock-test")
    runs = TrainingRuns(client)
    assert runs.lock("lock-test", "run-a") is None
    assert runs.lock("lock-test", "run-b") == "run-a"  # a second run is refused
    assert runs.lock("lock-test", "run-a") == "run-a"  # redelivered while going: not twice
    assert 0 < client.ttl("bv:train:lock:lock-test") <= LOCK_TTL_SECONDS
    runs.unlock("lock-test", "run-b")  # only the holder can release it
    assert runs.lock("lock-test", "run-b") == "run-a"
    client.expire("bv:train:lock:lock-test", 5)
    runs.renew("lock-test", "run-a")
    assert client.ttl("bv:train:lock:lock-test") > 5
    runs.unlock("lock-test", "run-a")
    assert runs.lock("lock-test", "run-b") is None
    runs.unlock("lock-test", "run-b")


def test_run_records_round_trip(redis_url: str) -> None:
    runs = TrainingRuns(redis.Redis.from_url(redis_url))
    runs.create("train-x-1", {"name": "x", "task": "classify"})
    runs.update("train-x-1", state="running", epoch=2, epochs=5, logs={"loss": 0.5})
    record = runs.get("train-x-1")
    assert record["state"] == "running" and record["epoch"] == 2 and record["epochs"] == 5
    assert record["logs"] == {"loss": 0.5} and record["request"]["task"] == "classify"
    assert "train-x-1" in runs.recent(50)
