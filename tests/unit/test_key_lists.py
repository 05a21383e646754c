"""The pure parts of a job's life (issue 14): key lists, exclude globs, job ids, the jobs table."""

from __future__ import annotations

import io
import json

import pytest

from bucketvision.infra.errors import EXIT_USAGE, UserError
from bucketvision.infra.s3 import S3Uri
from bucketvision.infra.vocabulary import CANCELLING, FINAL_STATES, JOB_STATES
from bucketvision.producer.key_lists import (
    KeyListError,
    check_job_id,
    check_listed_keys,
    parse_key_list,
    read_key_list,
    select_keys,
    selected,
)
from bucketvision.producer.lifecycle import DryRun, age, format_jobs, job_row

INPUT = S3Uri("b", "in/")


def test_a_key_list_is_one_full_key_per_line_in_order_each_once() -> None:
    text = "in/a.png\r\n\nin/b c.png \nin/a.png\n   \nin/d.jpg"
    assert parse_key_list(text) == ["in/a.png", "in/b c.png ", "in/d.jpg"]  # a key may end in " "
    assert parse_key_list("") == [] and parse_key_list("\n\n") == []


def test_a_manifest_is_read_as_a_key_list_of_its_key_fields() -> None:
    lines = [
        {"key": "in/a.png", "status": "ok"},
        {"key": "in/b.png", "status": "error", "error": {"type": "X", "message": "m"}},
        {"key": "in/a.png", "status": "ok"},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n"
    assert parse_key_list(text) == ["in/a.png", "in/b.png"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"key": "in/a.png"}\nin/b.png\n', "line 2: not a JSON manifest line"),
        ('{"key": "in/a.png"}\n{"status": "ok"}\n', "line 2: a manifest line needs a string 'key'"),
        ('{"key": ""}\n', "line 1: a manifest line needs"),
    ],
)
def test_a_broken_manifest_names_its_line(text: str, message: str) -> None:
    with pytest.raises(KeyListError, match=message) as caught:
        parse_key_list(text, "--keys-from m.jsonl")
    assert "--keys-from m.jsonl" in str(caught.value)
    assert caught.value.exit_code == EXIT_USAGE


def test_key_lists_come_from_a_file_or_stdin(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "keys.txt"
    path.write_text("in/a.png\nin/b.png\n", encoding="utf-8")
    assert read_key_list(str(path), store=None) == ["in/a.png", "in/b.png"]  # type: ignore[arg-type]
    stdin = io.StringIO("in/c.png\n")
    assert read_key_list("-", store=None, stdin=stdin) == ["in/c.png"]  # type: ignore[arg-type]
    with pytest.raises(KeyListError, match="No such file"):
        read_key_list(str(tmp_path / "missing.txt"), store=None)  # type: ignore[arg-type]


def test_an_empty_key_list_and_keys_outside_the_input_are_refused() -> None:
    with pytest.raises(KeyListError, match="lists no keys") as caught:
        check_listed_keys([], INPUT, "--keys-from -")
    assert caught.value.exit_code == EXIT_USAGE
    with pytest.raises(KeyListError, match=r"2 keys of --keys-from k\.txt are not under") as caught:
        check_listed_keys(["in/a.png", "a.png", "other/b.png"], INPUT, "--keys-from k.txt")
    assert "full object keys" in str(caught.value)
    check_listed_keys(["in/a.png"], INPUT, "k")  # no error


def test_exclude_globs_win_over_include_globs_case_insensitively() -> None:
    assert selected("a/b.png", ("*.png",))
    assert not selected("tmp/b.png", ("*.png",), ("tmp/*",))
    assert not selected("a/B.PNG", ("*.png",), ("*/b.png",))
    assert not selected("a/b.jpg", ("*.png",), ())
    assert selected("a/b.png", ("*.png",), ("*.jpg", "tmp/*"))
    keys = ["in/a.png", "in/tmp/b.png", "in/c.jpg", "in/d/"]
    taken = select_keys(keys, INPUT, S3Uri("b", "in/tmp/"), ("*",), ("*.jpg",))
    assert list(taken) == ["in/a.png"]


@pytest.mark.parametrize("job_id", ["nightly-2026-12-03", "a", "A.b_c-1", "x" * 64])
def test_job_ids_of_letters_digits_dots_dashes_underscores_are_taken(job_id: str) -> None:
    assert check_job_id(job_id) == job_id


@pytest.mark.parametrize(
    "job_id", ["", "-x", ".hidden", "..", "a/b", "a:b", "a b", "x" * 65, "é", "a\n"]
)
def test_other_job_ids_are_refused(job_id: str) -> None:
    with pytest.raises(UserError, match="--job-id") as caught:
        check_job_id(job_id)
    assert caught.value.exit_code == EXIT_USAGE


def test_cancelled_is_final_and_cancelling_is_not() -> None:
    assert "cancelled" in FINAL_STATES and CANCELLING not in FINAL_STATES
    assert set(JOB_STATES) >= {"queued", "running", CANCELLING, *set(FINAL_STATES) - {"skipped"}}


def test_the_jobs_table_shows_counts_model_and_age() -> None:
    record = {"job_id": "J1", "state": "finished", "task": "classify", "model": "digits@v1"}
    record |= {"ok": 9, "error": 1, "skipped": 0, "total": 10, "submitted_at": 1000.0}
    row = job_row({**record, "retry_of": "J0"}, now=1000.0 + 7260)
    assert row["age_seconds"] == 7260.0 and row["retry_of"] == "J0"
    table = format_jobs([row, job_row(record, now=1042.0)]).splitlines()
    assert table[0].split()[:2] == ["JOB", "STATE"]
    assert table[1].split() == ["J1", "finished", "9/1/0", "of", "10", "digits@v1", "2h"]
    assert table[2].endswith("42s")
    assert format_jobs([]) == "no jobs"
    ages = [age(seconds) for seconds in (0, 59, 60, 3599, 3600, 86400 * 3)]
    assert ages == ["0s", "59s", "1m", "59m", "1h", "3d"]


def test_a_dry_run_says_what_it_would_process() -> None:
    found = DryRun(3, 1234, 1, "digits@v1", "s3://b/out/").describe()
    assert found.startswith("would process 3 objects, 1234 bytes (1 listed keys not found")
