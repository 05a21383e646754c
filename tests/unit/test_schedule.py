"""The training schedule file: parsing, errors a user can make, beat entries, min_new_items."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from bucketvision.infra.messages import ScheduledTraining, TrainingRequest
from bucketvision.infra.schedule import (
    ScheduleError,
    beat_schedule,
    load_schedule,
    parse_duration,
)
from bucketvision.worker.scheduled import grown_enough


def entry(name: str, task: str, dataset: str, every: float, **fields: object) -> ScheduledTraining:
    schedule = {key: fields.pop(key) for key in ("cron", "min_new_items") if key in fields}
    request = TrainingRequest(name, task, dataset, **fields)  # type: ignore[arg-type]
    return ScheduledTraining(request, every_seconds=every, **schedule)  # type: ignore[arg-type]


GOOD = """
[[train]]
name = "digits"
task = "classify"
dataset = "s3://data/digits/"
every = "45s"
epochs = 3
min_new_items = 100

[[train]]
name = "shapes"
task = "detect"
dataset = "s3://data/scenes/"
cron = "30 3 * * 1"
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "schedule.toml"
    path.write_text(text)
    return str(path)


def test_a_schedule_parses_into_entries_and_beat_entries(tmp_path: Path) -> None:
    entries = load_schedule(write(tmp_path, GOOD))
    assert entries[0] == entry(
        "digits", "classify", "s3://data/digits/", 45.0, epochs=3, min_new_items=100
    )
    assert entries[1].cron == "30 3 * * 1" and entries[1].every_seconds is None
    schedule = beat_schedule(entries)
    assert schedule["train digits"]["schedule"] == timedelta(seconds=45)
    assert schedule["train digits"]["task"] == "bucketvision.scheduled_train"
    assert schedule["train digits"]["options"] == {"queue": "training"}
    assert schedule["train digits"]["args"] == [entries[0].to_json()]
    cron = schedule["train shapes"]["schedule"]
    assert cron.minute == {30} and cron.hour == {3} and cron.day_of_week == {1}


@pytest.mark.parametrize(
    ("text", "duration"), [("45s", 45), ("10m", 600), ("1.5h", 5400), (" 2d ", 172800)]
)
def test_durations(text: str, duration: float) -> None:
    assert parse_duration(text) == duration


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('name = "a"\ntask = "classify"\ndataset = "s3://b/d/"', "exactly one of every"),
        ('name = "a"\ntask = "classify"\ndataset = "s3://b/d/"\nevery = "5x"', "not a duration"),
        ('name = "a"\ntask = "sort"\ndataset = "s3://b/d/"\nevery = "5s"', "task must be one of"),
        ('name = "a"\ntask = "classify"\ndataset = "/tmp/d"\nevery = "5s"', "s3:// URI"),
        ('task = "classify"\ndataset = "s3://b/d/"\nevery = "5s"', "missing name"),
        ('name = "a"\ntask = "classify"\ndataset = "s3://b/d/"\ncron = "0 3 *"', "5 fields"),
        (
            'name = "a"\ntask = "classify"\ndataset = "s3://b/d/"\nevery = "5s"\nepoch = 1',
            "unknown fields epoch",
        ),
    ],
)
def test_schedule_errors_name_the_entry_and_field(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message) as raised:
        load_schedule(write(tmp_path, f"[[train]]\n{body}\n"))
    assert "[[train]] #1" in str(raised.value) or "duration" in message


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(ScheduleError, match="no such file"):
        load_schedule(str(tmp_path / "missing.toml"))
    with pytest.raises(ScheduleError, match="not valid TOML"):
        load_schedule(write(tmp_path, "[[train]\n"))
    with pytest.raises(ScheduleError, match="no \\[\\[train\\]\\] entries"):
        load_schedule(write(tmp_path, "title = 'x'\n"))
    with pytest.raises(ScheduleError, match="scheduled once"):
        load_schedule(write(tmp_path, GOOD + GOOD))


def test_min_new_items_gate() -> None:
    gated = entry("d", "classify", "s3://b/d/", 60.0, min_new_items=100)
    assert grown_enough(gated, 1000, None)  # never trained: train
    assert not grown_enough(gated, 1099, 1000)
    assert grown_enough(gated, 1100, 1000)
    assert grown_enough(entry("d", "classify", "s3://b/d/", 60.0), 5, 5)  # no minimum
