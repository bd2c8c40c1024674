"""What each make target installs: `make run` the package and its runtime dependencies
only, `make lint` the lint tools, `make test` everything the suite needs (its tools and
the lint it runs first), as `make -n` (which runs nothing) shows, and the extras they name."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
TEST_TOOLS = {"pytest", "pytest-asyncio", "hypothesis", "promql-parser"}
LINT_TOOLS = {"ruff", "mypy", "types-PyYAML", "types-defusedxml"}


def installs(target: str, venv: Path) -> list[str]:
    """The `pip install` arguments `make -n TARGET` would run in a fresh ``venv``."""
    dry = subprocess.run(["make", "-n", target, f"VENV={venv}"], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=60)  # fmt: skip
    return [line.split(" install ", 1)[1] for line in dry.stdout.splitlines()
            if f"{venv}/bin/pip install" in line and "--upgrade pip" not in line]  # fmt: skip


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!\[ ;]", requirement, maxsplit=1)[0] for requirement in requirements}


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("run", ["."]),
        ("lint", ["'.[lint]'"]),
        # The suite, then the lint it runs first (already satisfied by then).
        ("test", ["'.[test,lint]'", "'.[lint]'"]),
        ("bin/.installed", ["'.[test,lint]'"]),  # the stamp the suite's own venv is made by
    ],
)
def test_each_target_installs_its_extras_only(
    target: str, expected: list[str], tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    if target.startswith("bin/"):
        target = f"{venv}/{target}"
    assert installs(target, venv) == [f"--quiet -e {extras}" for extras in expected]


def test_extras_split_running_testing_and_linting() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert names(project["dependencies"]).isdisjoint(TEST_TOOLS | LINT_TOOLS)
    assert names(extras["test"]) == TEST_TOOLS
    assert names(extras["lint"]) == LINT_TOOLS
