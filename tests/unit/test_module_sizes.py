"""Small modules, short functions: every module of the four packages stays readable.

At most 300 lines a module and 80 lines a function (its decorators, signature and
docstring included), so a module has one job and a function fits on a screen.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("producer", "worker", "models", "infra")
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 80


def oversized(paths: list[Path], root: Path = ROOT) -> list[str]:
    found = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(root)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            found.append(f"{where}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = (node.end_lineno or node.lineno) - first + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{where}:{node.lineno} {node.name}: {length} lines")
    return found


def test_modules_and_functions_stay_small() -> None:
    paths = sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))
    assert oversized(paths) == []


def test_the_check_sees_a_long_module_and_a_long_function(tmp_path: Path) -> None:
    long_function = "def f():\n" + "    x = 1\n" * 80
    (tmp_path / "a.py").write_text(long_function, encoding="utf-8")
    (tmp_path / "b.py").write_text("x = 1\n" * 301, encoding="utf-8")
    found = oversized([tmp_path / "a.py", tmp_path / "b.py"], tmp_path)
    assert found == ["a.py:1 f: 81 lines", "b.py: 301 lines"]
