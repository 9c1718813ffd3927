"""The package as it is installed: its data files, its version, and (under ``make test-wheel``) where it came from.

``make test-wheel`` installs the built wheel into a fresh environment and runs
this file, among others, from a folder where the source tree cannot be
imported, with ``WEBUI_INSIGHTS_TEST_INSTALLED=1``: a file left out of the
wheel (``py.typed``, the launcher's bootstrap) fails here, not on a user's
machine. In the development environment (an editable install) the same
checks read the source tree.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

import webui_insights
from webui_insights import launcher

PACKAGE = Path(webui_insights.__file__).resolve().parent
REPO = Path(__file__).resolve().parents[1]
INSTALLED = os.environ.get("WEBUI_INSIGHTS_TEST_INSTALLED", "").strip() == "1"

# Files the package needs at run time that are not imported as modules before they are needed.
DATA_FILES = ("py.typed", "_bootstrap/sitecustomize.py", "_bootstrap/__init__.py")


@pytest.mark.parametrize("name", DATA_FILES)
def test_the_package_ships_its_data_files(name: str) -> None:
    assert (PACKAGE / name).is_file(), f"{name} is missing from {PACKAGE}"


def test_the_launchers_bootstrap_folder_is_inside_the_installed_package() -> None:
    assert launcher.BOOTSTRAP_DIR == PACKAGE / "_bootstrap"
    # Only sitecustomize (and the package marker) in it: the folder goes first on PYTHONPATH.
    shipped = {p.name for p in launcher.BOOTSTRAP_DIR.iterdir() if p.name != "__pycache__"}
    assert shipped == {"__init__.py", "sitecustomize.py"}


def test_the_version_is_written_once_and_the_command_prints_it() -> None:
    version = webui_insights.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    script = Path(sys.executable).with_name("webui-insights")
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == f"webui-insights {version}"
    # The version lives in webui_insights/__init__.py only; pyproject reads it from there.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "webui_insights.__version__"}


def test_the_changelogs_top_entry_is_this_version() -> None:
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    top = re.search(r"^## (\S+)", changelog, flags=re.M)
    assert top is not None and top.group(1) == webui_insights.__version__


@pytest.mark.skipif(not INSTALLED, reason="only under `make test-wheel` (WEBUI_INSIGHTS_TEST_INSTALLED=1)")
def test_the_tests_run_against_the_installed_wheel_not_the_source_tree() -> None:
    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert PACKAGE.is_relative_to(purelib), f"webui_insights imported from {PACKAGE}, not from {purelib}"
    distribution = importlib.metadata.distribution("webui-insights")
    assert distribution.version == webui_insights.__version__
    recorded = {str(f) for f in distribution.files or []}
    for name in DATA_FILES:
        assert f"webui_insights/{name}" in recorded, f"{name} is not in the wheel's RECORD"
    assert any(f.endswith(".dist-info/licenses/LICENSE") for f in recorded), sorted(recorded)[:20]
