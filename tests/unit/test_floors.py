"""The floors: producer over worker over models over infra; a module never imports upward.

Every import is read from the source (AST), function-local, ``TYPE_CHECKING`` and
relative ones included, so a lazy import cannot hide a climb. The project's own
packages are imported through the ``bucketvision`` namespace only: a bare
``import models`` would load a second copy of the module (or a user's package).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLOORS = {"producer": 4, "worker": 3, "models": 2, "infra": 1}
NAMESPACE = "bucketvision"


def project_modules() -> list[Path]:
    return sorted(path for package in FLOORS for path in (ROOT / package).rglob("*.py"))


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((NAMESPACE, *parts))


def imported_modules(path: Path, root: Path = ROOT) -> Iterator[tuple[int, str]]:
    """(line, absolute dotted name) of every import in ``path``, wherever it stands."""
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                yield node.lineno, ".".join([*base, *([node.module] if node.module else [])])
            elif node.module:
                yield node.lineno, node.module


def floor_of(dotted: str) -> int | None:
    """The floor a dotted module name belongs to; None for a third-party module."""
    parts = dotted.split(".")
    if parts[0] == NAMESPACE and len(parts) > 1:
        return FLOORS.get(parts[1])
    return None


def climbs(paths: list[Path], root: Path = ROOT) -> list[str]:
    """Every import that climbs a floor or bypasses the namespace, as ``file:line -> name``."""
    found = []
    for path in paths:
        own = FLOORS[path.relative_to(root).parts[0]]
        for line, dotted in imported_modules(path, root):
            where = f"{path.relative_to(root)}:{line}"
            if dotted.split(".")[0] in FLOORS:
                found.append(f"{where} -> {dotted} (import it as {NAMESPACE}.{dotted})")
            target = floor_of(dotted)
            if target is not None and target > own:
                found.append(f"{where} -> {dotted} (floor {target} above floor {own})")
    return found


def test_no_module_imports_a_floor_above_its_own() -> None:
    assert climbs(project_modules()) == []


@pytest.mark.parametrize(
    ("source", "importer"),
    [
        ("def f():\n    from bucketvision.worker.decode import decode_image\n", "models/x.py"),
        ("from bucketvision.producer.cli import main\n", "infra/x.py"),
        ("import bucketvision.worker.outputs\n", "infra/x.py"),
        ("if TYPE_CHECKING:\n    import bucketvision.worker.hooks\n", "models/x.py"),
        ("import models.imaging\n", "models/x.py"),
        ("from ..producer import cli\n", "infra/x.py"),
        ("from ...worker import pipeline\n", "models/detection/x.py"),
    ],
)
def test_the_check_catches_each_kind_of_climb(tmp_path: Path, source: str, importer: str) -> None:
    """Today's climbs put back (function-local, TYPE_CHECKING, relative, bare) are found."""
    path = tmp_path / importer
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source, encoding="utf-8")
    assert climbs([path], tmp_path) != []


def test_imports_within_and_below_a_floor_are_allowed(tmp_path: Path) -> None:
    path = tmp_path / "worker" / "x.py"
    path.parent.mkdir()
    path.write_text(
        "from bucketvision.worker.tasks import register_tasks\n"
        "from bucketvision.models.decoding import decode_image\n"
        "from bucketvision.infra.s3 import S3Store\n"
        "from . import hooks\n"
        "import numpy\n",
        encoding="utf-8",
    )
    assert climbs([path], tmp_path) == []


def test_the_producer_imports_no_tensorflow() -> None:
    """Every producer module, imported in a fresh interpreter, leaves TensorFlow unloaded."""
    names = [module_name(path) for path in (ROOT / "producer").rglob("*.py")]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
