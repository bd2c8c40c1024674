"""The log parse compiled as the container image compiles it, for the tests that run against it.

build_support/mail_exporter_compiled.py names the modules mypyc compiles when
``MAIL_EXPORTER_COMPILE=1``; :func:`build_compiled_tree` builds the wheel that way from a
copy of the sources the Dockerfile copies (so the checkout gets no build directory) and
unpacks it beside a copy of the tests, where Python imports each compiled extension ahead
of its source.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.test_deploy import copied_sources

ROOT = Path(__file__).resolve().parent.parent
# The build's list, read without setuptools (which the test environment need not have).
_LIST = ROOT / "build_support" / "mail_exporter_compiled.py"
_spec = importlib.util.spec_from_file_location("mail_exporter_compiled", _LIST)
assert _spec and _spec.loader
_listed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_listed)

COMPILED_MODULES: tuple[str, ...] = _listed.COMPILED_MODULES
COMPILE_VARIABLE: str = _listed.COMPILE_VARIABLE
BUILD_TIMEOUT = 900.0


SHOW_MODULE_FILES = (
    "import importlib, sys\n"
    "for name in sys.argv[1:]: print(importlib.import_module(name).__file__)"
)
"""A ``python -c`` script: the file each module named in its arguments is imported from."""


def module_names() -> list[str]:
    """The compiled modules' import names."""
    return [path.removesuffix(".py").replace("/", ".") for path in COMPILED_MODULES]


def run_python(tree: Path, *arguments: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -P ARGUMENTS`` from ``tree``, importing the package from ``tree`` only
    (ahead of the venv's editable install of the checkout); its output as text."""
    return subprocess.run(
        [sys.executable, "-P", *arguments],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def build_compiled_tree(work: Path) -> Path:
    """A directory holding the compiled wheel unpacked, the tests and pyproject.toml (the
    tests' settings): run pytest from it and the package comes from the wheel."""
    source = work / "source"
    for name in copied_sources():  # what the image's wheel is built from
        origin = ROOT / name
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_dir():
            shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(origin, target)
    wheels = work / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels),
         str(source)],
        env={**os.environ, COMPILE_VARIABLE: "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        check=True,
        capture_output=True,
        timeout=BUILD_TIMEOUT,
    )  # fmt: skip
    (wheel,) = wheels.glob("*.whl")
    tree = work / "tree"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tree)
    shutil.copytree(ROOT / "tests", tree / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree
