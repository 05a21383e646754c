"""A redelivered batch runs item by item, so a death is blamed on the image that caused it.

Deaths are simulated in process: ``run_one`` raises where a real child would
have been killed, which leaves the ledger just as a killed child leaves it.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from bucketvision.infra.messages import BatchMessage, GenerateItem, GenerateMessage
from bucketvision.infra.s3 import S3Uri
from bucketvision.worker.isolation import IsolationLedger, run_isolated, single_items
from bucketvision.worker.pipeline import BatchOutcome

pytestmark = pytest.mark.integration


class Died(Exception):
    """Stands for the SIGKILL of the child running the item."""


def _message(count: int) -> BatchMessage:
    keys = tuple(f"in/{index}.png" for index in range(count))
    uri = S3Uri("b", "in/")
    return BatchMessage("J-iso", 0, "classify", keys, uri, S3Uri("b", "out/"), "m@v1")


def _deliver(
    message: BatchMessage, ledger: IsolationLedger, deaths: int, kills: set[str], ran: list[str]
) -> Any:
    """One delivery after ``deaths`` deaths: charge the last one, then run item by item."""

    def run_one(part: Any) -> BatchOutcome:
        ran.append(part.keys[0])
        if part.keys[0] in kills:
            raise Died(part.keys[0])
        return BatchOutcome([{"key": part.keys[0], "status": "ok", "error": None}], {"infer": 1})

    ledger.charge_death()
    return run_isolated(
        message, attempt=deaths + 1, deaths=deaths, max_attempts=2, ledger=ledger, run_one=run_one
    )


@pytest.fixture
def ledger(redis_url: str) -> IsolationLedger:
    client = redis.Redis.from_url(redis_url)
    isolation = IsolationLedger(client, "J-iso", 0)
    isolation.clear()
    return isolation


def test_only_the_image_that_kills_its_worker_is_dead_lettered(ledger: IsolationLedger) -> None:
    message, ran = _message(6), []
    with pytest.raises(Died):  # the first death was with the batch whole; now alone
        _deliver(message, ledger, deaths=1, kills={"in/3.png"}, ran=ran)
    run = _deliver(message, ledger, deaths=2, kills={"in/3.png"}, ran=ran)
    assert ran == [f"in/{index}.png" for index in (0, 1, 2, 3, 4, 5)]  # none twice
    assert [line["status"] for line in run.lines] == ["ok"] * 3 + ["error"] + ["ok"] * 2
    error = run.lines[3]["error"]
    assert (
        error["type"] == "DeadLetter"
        and "died 2 times while processing this image" in (error["message"])
    )
    assert run.dead_lettered() == 1
    assert run.stage_seconds == {"infer": 2}  # this delivery's items only


def test_deaths_blamed_on_several_images_dead_letter_the_rest(ledger: IsolationLedger) -> None:
    message, ran = _message(5), []
    everything = {f"in/{index}.png" for index in range(5)}  # a model that kills every child
    for deaths in (1, 2):
        with pytest.raises(Died):
            _deliver(message, ledger, deaths=deaths, kills=everything, ran=ran)
    run = _deliver(message, ledger, deaths=3, kills=everything, ran=ran)
    assert ran == ["in/0.png", "in/1.png"]  # two deaths blamed on two images: then it stops
    assert [line["error"]["type"] for line in run.lines] == ["DeadLetter"] * 5
    assert "died 2 times while processing this image" in run.lines[0]["error"]["message"]
    assert "running this batch died 3 times" in run.lines[1]["error"]["message"]
    assert run.dead_lettered() == 5


def test_a_delivery_without_an_item_in_flight_blames_nobody(ledger: IsolationLedger) -> None:
    assert ledger.charge_death() is None
    ledger.start(2)
    assert ledger.charge_death() == 2 and ledger.charge_death() is None  # once per death
    assert ledger.state() == ({}, {2: 1})


def test_messages_split_into_one_item_each() -> None:
    message = _message(3)
    assert [part.keys for part in single_items(message)] == [
        ("in/0.png",),
        ("in/1.png",),
        ("in/2.png",),
    ]
    items = tuple(GenerateItem(index, 10 + index, None) for index in range(2))
    generate = GenerateMessage("J-gen", 4, S3Uri("b", "gen/"), "gan@v1", items)
    parts = single_items(generate)
    assert [part.items for part in parts] == [(items[0],), (items[1],)]
    assert all(part.batch == 4 and part.job_id == "J-gen" for part in parts)
