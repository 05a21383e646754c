"""After a worker death, a batch runs one item at a time, so the next death names its item.

A batch whose worker died (killed, crashed, out of memory) is delivered again.
Run whole, a poisonous image would take the worker down again and, after
``BV_MAX_ATTEMPTS`` deaths, every innocent image of its batch would be
dead-lettered with it. So a redelivered batch runs its items one by one,
keeping in Redis each finished item's manifest line and which item is in
flight. When the worker dies again, the next delivery charges that death to
the item in flight alone. An item is dead-lettered once the deaths charged to
it reach ``BV_MAX_ATTEMPTS``; every other item of the batch is processed.
Deaths while the batch ran whole (or between items) are charged to every item,
and once deaths are blamed on ``BV_MAX_ATTEMPTS`` different items the cause is
not one image (a model that crashes, a machine short of memory): the rest of the
batch is dead-lettered then, as a whole batch was before.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import redis

from bucketvision.infra import keys
from bucketvision.infra.jobs import JOB_TTL_SECONDS
from bucketvision.infra.messages import GenerateMessage, JobMessage
from bucketvision.worker.outcomes import BatchOutcome, dead_letter

# KEYS[1] = the ledger: the item in flight when the last delivery's worker died
# takes the blame for that death, once (a concurrent delivery finds nothing left).
_CHARGE = """
local index = redis.call('HGET', KEYS[1], 'in_flight')
if not index then return -1 end
redis.call('HDEL', KEYS[1], 'in_flight')
redis.call('HINCRBY', KEYS[1], 'charge:' .. index, 1)
return tonumber(index)
"""


class IsolationLedger:
    """What a batch run item by item has done: ``bv:job:<id>:isolate:<batch>`` in Redis."""

    def __init__(self, client: redis.Redis, job_id: str, batch: int) -> None:
        self.redis = client
        self.key = keys.job_isolation(job_id, batch)
        self._charge = client.register_script(_CHARGE)

    def charge_death(self) -> int | None:
        """Blame the last death on the item then in flight; its index, if there was one."""
        index = int(self._charge(keys=[self.key]))
        return None if index < 0 else index

    def state(self) -> tuple[dict[int, dict[str, Any]], dict[int, int]]:
        """Manifest lines of the finished items, and deaths charged to single items."""
        lines: dict[int, dict[str, Any]] = {}
        charges: dict[int, int] = {}
        for field, value in self.redis.hgetall(self.key).items():
            kind, _, index = field.decode().partition(":")
            if kind == "line":
                lines[int(index)] = json.loads(value)
            elif kind == "charge":
                charges[int(index)] = int(value)
        return lines, charges

    def start(self, index: int) -> None:
        pipe = self.redis.pipeline()
        pipe.hset(self.key, "in_flight", index)
        pipe.expire(self.key, JOB_TTL_SECONDS)
        pipe.execute()

    def finish(self, index: int, line: dict[str, Any]) -> None:
        pipe = self.redis.pipeline()
        pipe.hset(self.key, f"line:{index}", json.dumps(line))
        pipe.hdel(self.key, "in_flight")
        pipe.expire(self.key, JOB_TTL_SECONDS)
        pipe.execute()

    def clear(self) -> None:
        self.redis.delete(self.key)


def single_items(message: JobMessage) -> list[JobMessage]:
    """The message split into one message per item (same job, batch and model)."""
    if isinstance(message, GenerateMessage):
        return [dataclasses.replace(message, items=(item,)) for item in message.items]
    return [dataclasses.replace(message, keys=(key,)) for key in message.keys]


def run_isolated(
    message: JobMessage,
    *,
    attempt: int,
    deaths: int,
    max_attempts: int,
    ledger: IsolationLedger,
    run_one: Callable[[JobMessage], BatchOutcome],
) -> BatchOutcome:
    """Run a batch whose worker died ``deaths`` times one item at a time (see module doc).

    The caller charges the last death first (:meth:`IsolationLedger.charge_death`), once
    per delivery: this function may be repeated through an outage.
    """
    finished, charges = ledger.state()
    whole_batch_deaths = max(0, deaths - sum(charges.values()))
    # Deaths blamed on that many different items point at the model or the machine,
    # not at one image: the rest of the batch is dead-lettered, as a whole batch was.
    systematic = len(charges) >= max_attempts
    lines: list[dict[str, Any]] = []
    stages: Counter[str] = Counter()
    failure: str | None = None
    for index, part in enumerate(single_items(message)):
        if index in finished:
            lines.append(finished[index])
            continue
        charged = whole_batch_deaths + charges.get(index, 0)
        if systematic:
            outcome = dead_letter(part, attempt, deaths, max_attempts)
        elif charged >= max_attempts:
            alone = charges.get(index, 0) > 0
            outcome = dead_letter(part, attempt, charged, max_attempts, alone=alone)
        else:
            ledger.start(index)
            outcome = run_one(part)
        if outcome.stopped:  # its job was cancelled: the items that ran are the batch
            return BatchOutcome(lines, dict(stages), failure, stopped=True)
        ledger.finish(index, outcome.lines[0])
        lines.extend(outcome.lines)
        stages.update(outcome.stage_seconds)
        failure = failure or outcome.failure
    return BatchOutcome(lines, dict(stages), failure)
