"""docs/ keeps up with the code: every subcommand and flag, every BV_* setting, every link."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

from bucketvision.producer.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _commands(sub, (*path, name))


def test_every_subcommand_and_flag_is_in_commands_md() -> None:
    text = (DOCS / "commands.md").read_text(encoding="utf-8")
    missing = []
    for path, parser in _commands(build_parser()):
        if f"## {' '.join(path)}" not in text and f"`{' '.join(path)}" not in text:
            missing.append(" ".join(path))
        for action in parser._actions:
            if action.help == argparse.SUPPRESS and action.dest != "help":
                continue  # hidden on purpose, e.g. --steps-per-epoch
            missing += [
                f"{' '.join(path)} {flag}"
                for flag in action.option_strings
                if flag.startswith("--") and flag != "--help" and f"`{flag}" not in text
            ]
    assert missing == []


def test_every_setting_is_in_settings_md() -> None:
    source = (ROOT / "infra" / "settings.py").read_text(encoding="utf-8")
    names = set(re.findall(r'"(BV_[A-Z_]+|AWS_[A-Z_]+)"', source))
    assert len(names) > 15
    text = (DOCS / "settings.md").read_text(encoding="utf-8")
    assert sorted(name for name in names if f"`{name}`" not in text) == []


def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_docs_resolve() -> None:
    broken = []
    for page in [*DOCS.glob("*.md"), ROOT / "README.md"]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "#")):
                continue
            path, _, anchor = target.partition("#")
            linked = page.parent / path
            if not linked.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and linked.is_file():
                headings = re.findall(r"^#+ (.+)$", linked.read_text(encoding="utf-8"), re.M)
                if anchor not in {_slug(heading) for heading in headings}:
                    broken.append(f"{page.name}: {target}")
    assert broken == []
