"""The log parse compiled with mypyc, as the container image ships it, against the tests.

The image builds its wheel with ``MAIL_EXPORTER_COMPILE=1`` (build_support/, the
Dockerfile): the modules every log line goes through are compiled from the same source.
Here that wheel is built (tests/compiled.py), every listed module is checked to import
from its extension, and the log tests (parsers on the recorded real logs, bounds,
properties, followers, reloads, the recorded exposition pinning every series, and the
refusals, which run a real Postfix and Dovecot) run against it in a pytest of their own. A compiled module may differ from its
source where Python is dynamic (runtime type checks, no monkeypatching); this is where
such a difference shows.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.compiled import SHOW_MODULE_FILES, build_compiled_tree, module_names, run_python

pytestmark = pytest.mark.integration

LOG_TESTS = (
    "tests/test_logs.py",
    "tests/test_logs_bounds.py",
    "tests/test_logs_followers.py",
    "tests/test_logs_parsers.py",
    "tests/test_logs_properties.py",
    "tests/test_logs_recorded_exposition.py",
    "tests/test_logs_refusals.py",
    "tests/test_logs_reload.py",
    "tests/test_logs_senders.py",
)


@pytest.fixture(scope="module")
def compiled_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_compiled_tree(tmp_path_factory.mktemp("compiled"))


def test_every_listed_module_imports_compiled(compiled_tree: Path) -> None:
    names = module_names()
    run = run_python(compiled_tree, "-c", SHOW_MODULE_FILES, *names, timeout=60)
    files = run.stdout.split()
    assert run.returncode == 0 and len(files) == len(names), run.stdout + run.stderr
    for name, file in zip(names, files, strict=True):
        assert file.startswith(str(compiled_tree)) and file.endswith(".so"), (name, file)


def test_the_log_tests_pass_against_the_compiled_modules(compiled_tree: Path) -> None:
    run = run_python(
        compiled_tree, "-m", "pytest", "-q", "-p", "no:cacheprovider", *LOG_TESTS, timeout=900
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    # Something ran, nothing failed; a skip shows only where the suite skips real servers.
    summary = run.stdout.strip().splitlines()[-1]
    assert re.fullmatch(
        r"\d+ passed(, \d+ skipped)?(, \d+ warnings?)? in [\d.]+s( \([\d:]+\))?", summary
    ), summary
