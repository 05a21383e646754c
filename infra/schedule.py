"""The training schedule (``BV_SCHEDULE_FILE``, TOML) and its Celery beat entries.

```toml
[[train]]
name = "digits"
task = "classify"
dataset = "s3://data/datasets/digits/"
every = "6h"            # or: cron = "0 3 * * *"  (minute hour day month weekday, UTC)
epochs = 10             # optional: the family's default otherwise
min_new_items = 500     # optional: retrain only when the dataset grew by this much
```

Any field of a training request (``epochs``, ``minibatch_size``, ``learning_rate``,
``image_size``, ``seed``, ``tolerance``, ``promote``, ``steps_per_epoch``, ``shadow_jobs``,
``shadow_agreement``) may be set on an entry. An entry is an
:class:`infra.messages.ScheduledTraining`, which is also the ``scheduled_train`` message beat
sends.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from datetime import timedelta
from typing import Any

from bucketvision.infra.errors import UserError
from bucketvision.infra.messages import MessageError, ScheduledTraining, TrainingRequest
from bucketvision.infra.queue import TRAINING_QUEUE
from bucketvision.infra.vocabulary import FAMILY_TASKS, TASK_NAMES

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ScheduleError(UserError):
    """The schedule file is unusable; the message names the entry and the field."""


def parse_duration(text: str) -> float:
    """``"45s"``, ``"10m"``, ``"6h"``, ``"1d"`` in seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ScheduleError(f"{text!r} is not a duration; write e.g. 45s, 10m, 6h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2)]


_SCHEDULE_FIELDS = ("every", "cron", "min_new_items")
_REQUEST_FIELDS = tuple(item.name for item in fields(TrainingRequest) if item.name != "extra")


def _entry(raw: dict[str, Any], where: str) -> ScheduledTraining:
    missing = [name for name in ("name", "task", "dataset") if not raw.get(name)]
    if missing:
        raise ScheduleError(f"{where}: missing {', '.join(missing)}")
    if raw["task"] not in FAMILY_TASKS:
        raise ScheduleError(f"{where}: task must be one of {', '.join(FAMILY_TASKS)}")
    if not str(raw["dataset"]).startswith("s3://"):
        raise ScheduleError(f"{where}: dataset must be an s3:// URI")
    if ("every" in raw) == ("cron" in raw):
        raise ScheduleError(f'{where}: give exactly one of every = "45s" or cron = "0 3 * * *"')
    cron = raw.get("cron")
    if cron is not None and len(str(cron).split()) != 5:
        raise ScheduleError(f"{where}: cron {cron!r} needs 5 fields: minute hour day month weekday")
    every = parse_duration(str(raw["every"])) if "every" in raw else None
    if every is not None and every < 1:
        raise ScheduleError(f"{where}: every must be at least 1s")
    unknown = set(raw) - {*_SCHEDULE_FIELDS, *_REQUEST_FIELDS}
    if unknown:
        raise ScheduleError(f"{where}: unknown fields {', '.join(sorted(unknown))}")
    try:
        request = TrainingRequest.from_json({k: raw[k] for k in _REQUEST_FIELDS if k in raw})
    except MessageError as error:
        raise ScheduleError(f"{where}: {error}") from None
    return ScheduledTraining(
        request=request,
        every_seconds=every,
        cron=str(cron) if cron is not None else None,
        min_new_items=int(raw.get("min_new_items", 0)),
    )


def load_schedule(path: str) -> list[ScheduledTraining]:
    """The ``[[train]]`` entries of the TOML file at ``path``."""
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ScheduleError(f"BV_SCHEDULE_FILE={path}: no such file") from None
    except tomllib.TOMLDecodeError as error:
        raise ScheduleError(f"{path} is not valid TOML: {error}") from None
    entries = [
        _entry(raw, f"{path} [[train]] #{i + 1}") for i, raw in enumerate(document.get("train", []))
    ]
    if not entries:
        raise ScheduleError(f"{path} has no [[train]] entries")
    names = [entry.name for entry in entries]
    if len(set(names)) != len(names):
        raise ScheduleError(f"{path}: each model name may be scheduled once")
    return entries


def beat_schedule(entries: list[ScheduledTraining]) -> dict[str, dict[str, Any]]:
    """Celery's ``beat_schedule`` for the entries: one ``scheduled_train`` each."""
    from celery.schedules import crontab

    schedule: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if entry.every_seconds is not None:
            when: Any = timedelta(seconds=entry.every_seconds)
        else:
            minute, hour, day, month, weekday = str(entry.cron).split()
            when = crontab(minute, hour, weekday, day, month)
        schedule[f"train {entry.name}"] = {
            "task": TASK_NAMES["scheduled_train"],
            "schedule": when,
            "args": [entry.to_json()],
            "options": {"queue": TRAINING_QUEUE},
        }
    return schedule
