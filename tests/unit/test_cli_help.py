"""Every command's ``--help``: no reStructuredText markup, no flag without help; values checked."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import pytest

from bucketvision.producer.cli import build_parser, main

MARKUP = re.compile(r"``|:(class|mod|func|meth|data):`")


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, (*path, name))


COMMANDS = list(_commands(build_parser()))


def test_every_command_is_reached() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    expected = {"submit", "watch", "train", "models shadow", "models register", "review import"}
    assert expected <= names and len(names) > 20


@pytest.mark.parametrize(
    ("path", "parser"), COMMANDS, ids=[" ".join(p) or "-" for p, _ in COMMANDS]
)
def test_help_has_no_markup_and_explains_every_flag(
    path: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    text = parser.format_help()
    assert not MARKUP.search(text), f"markup in `bucketvision {' '.join(path)} --help`"
    unexplained = [
        action.option_strings[0] if action.option_strings else action.dest
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
        and action.help != argparse.SUPPRESS
        and not action.help
    ]
    assert not unexplained, f"bucketvision {' '.join(path)}: no help for {unexplained}"


def test_subcommand_groups_list_their_subcommands() -> None:
    text = dict(COMMANDS)[("models",)].format_help()
    for name in ("list", "show", "promote", "rollback", "register", "shadow"):
        assert name in text


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "--task", "classify", "--input", "s3://b/p/", "--batch-size", "0"],
        [
            "watch",
            "s3://b/p/",
            "--task",
            "classify",
            "--output",
            "s3://b/o/",
            "--max-in-flight",
            "0",
        ],
        ["watch", "s3://b/p/", "--task", "classify", "--output", "s3://b/o/", "--interval", "0"],
        ["worker", "--concurrency", "0"],
        ["train", "m", "--task", "classify", "--dataset", "s3://b/d/", "--minibatch-size", "-1"],
        ["generate", "--output", "s3://b/o/", "--count", "0"],
        ["jobs", "--limit", "many"],
    ],
)
def test_counts_below_one_are_refused_naming_the_flag(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    flag = argv[-2]  # each case ends with the flag under test and its value
    assert f"error: argument {flag}: " in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and re.match(r"bucketvision \d+\.\d+", capsys.readouterr().out)


def test_progress_off_a_terminal_is_a_plain_line_every_few_seconds() -> None:
    import io

    from bucketvision.producer.follow import PlainProgress, progress_bar

    stream = io.StringIO()  # not a terminal, like a CI log or `docker logs`
    assert isinstance(
        progress_bar("job", total=10, unit="img", enabled=True, stream=stream), PlainProgress
    )
    now = [0.0]
    bar = PlainProgress("job J", total=100, unit="img", stream=stream, clock=lambda: now[0])
    for second in range(12):
        now[0] = float(second)
        bar.set_postfix(ok=bar.n + 5, error=0, refresh=False)  # as --wait draws: postfix, then
        bar.update(5)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines == [
        "job J: 5/100 img (ok=5, error=0)",
        "job J: 30/100 img (ok=30, error=0)",
        "job J: 55/100 img (ok=55, error=0)",
        "job J: 60/100 img (ok=60, error=0)",
    ]


def test_watch_can_wait_for_its_model_on_a_fresh_stack() -> None:
    from bucketvision.models.registry import ModelNotFound
    from bucketvision.producer.cli_watch import wait_for_model

    answers: list[Exception | None] = [ModelNotFound("no model named 'digits'")] * 2 + [None]

    class Registry:
        def resolve(self, name: str, *, task: str) -> None:
            assert (name, task) == ("digits", "classify")
            answer = answers.pop(0)
            if answer is not None:
                raise answer

    said: list[str] = []
    slept: list[float] = []
    wait_for_model(Registry(), "digits", "classify", said.append, sleep=slept.append)
    assert said == ["waiting for the model: no model named 'digits'"] * 2 and len(slept) == 2
