"""The built wheel installs under ``bucketvision.*`` and lives beside a user's own ``models``.

The wheel is built from a copy of the sources (nothing is written into the
checkout) with this venv's setuptools, and installed without dependencies into
a fresh venv. The project's dependencies come from this test venv through a
``.pth`` line naming its site-packages: a directory listed in a ``.pth`` file is
appended to ``sys.path``, but the ``.pth`` files inside it are not processed,
so the editable install's finder of this checkout cannot leak in. Nothing is
downloaded (``--no-index``). See docs/packaging.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("producer", "worker", "models", "infra")
PROBE = """
import json, sys
import models
import bucketvision
import bucketvision.models.registry
import bucketvision.producer.cli
print(json.dumps({
    "marker": models.MARKER,
    "user_models": models.__file__,
    "namespace": list(bucketvision.__path__),
    "registry": bucketvision.models.registry.__file__,
    "cli": bucketvision.producer.cli.__file__,
    "editable_finders": [name for name in sys.modules if "__editable__" in name],
}))
"""


def _run(command: list[str], **options: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False, **options
    )
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done


def _build_wheel(tmp: Path) -> Path:
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    wheels = tmp / "wheels"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "-w",
            str(wheels),
            str(source),
        ]
    )
    (wheel,) = wheels.glob("bucketvision-*.whl")
    return wheel


def test_wheel_installs_beside_a_user_models_package(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
        console = archive.read(entry_points).decode()
    top_level = {name.split("/", 1)[0] for name in names}
    assert top_level == {"bucketvision", wheel.name.split("-py3")[0] + ".dist-info"}, top_level
    assert {f"bucketvision/{package}/__init__.py" for package in PACKAGES} <= set(names)
    assert "bucketvision = bucketvision.producer.cli:main" in console

    fresh = tmp_path / "fresh-venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(fresh)])
    python = fresh / "bin" / "python"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            str(wheel),
        ]
    )
    fresh_site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        ).stdout.strip()
    )
    assert fresh_site.is_relative_to(fresh)
    (fresh_site / "bucketvision-test-deps.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8"
    )

    project = tmp_path / "user-project"  # the user's own code, with a top-level `models`
    (project / "models").mkdir(parents=True)
    (project / "models" / "__init__.py").write_text('MARKER = "user"\n', encoding="utf-8")
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSAFEPATH")
    }
    environment["PYTHONPATH"] = str(project)

    probe = _run([str(python), "-c", PROBE], cwd=project, env=environment)
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    assert found["marker"] == "user"
    assert Path(found["user_models"]).is_relative_to(project)
    assert found["namespace"] and all(
        Path(portion).is_relative_to(fresh) for portion in found["namespace"]
    ), found["namespace"]
    assert Path(found["registry"]).is_relative_to(fresh_site), found["registry"]
    assert Path(found["cli"]).is_relative_to(fresh_site), found["cli"]
    assert found["editable_finders"] == []

    helped = _run([str(fresh / "bin" / "bucketvision"), "--help"], cwd=project, env=environment)
    for command in ("submit", "generate", "watch", "train", "models", "datasets", "doctor"):
        assert command in helped.stdout
