"""The package's build backend: setuptools, and with ``MAIL_EXPORTER_COMPILE=1`` the log
parse compiled with mypyc.

Every line of a followed log goes through the modules in :data:`COMPILED_MODULES` (routing
by syslog tag, the Postfix parser and the counts it keeps). Compiled with mypyc, mypy's
compiler, from the same source, unchanged, they take about a quarter less CPU per line
(docs/benchmarks.md, section 6: what makes the log collector three times as fast as
postfix_exporter). The container image sets the variable (its build stage has a C
compiler); a plain ``pip install`` stays pure Python and needs none. Nothing else differs:
the test suite runs the log tests against the compiled modules too
(tests/test_logs_compiled.py), and a module compiled or not imports under the same name.

This module is the PEP 517 backend named in pyproject.toml (``backend-path``): setuptools'
own, with mypy added to what a wheel's build needs when compiling; ``setup.py`` asks
:func:`ext_modules` for the extensions.
"""

from __future__ import annotations

import os
from typing import Any

from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F403  (the whole PEP 517 interface, as setuptools has it)

COMPILE_VARIABLE = "MAIL_EXPORTER_COMPILE"
MYPYC = "mypy==1.13.0"
"""The compiler: mypy's release the lint extra pins, so that what compiles is what is checked."""
COMPILED_MODULES = tuple(
    f"mail_exporter/collectors/logs/{name}.py"
    for name in (
        "dispatch", "postfix", "domains", "counters", "labels", "rejects", "replies", "senders"
    )
)  # fmt: skip
MYPYC_OPTIONS = ("--ignore-missing-imports", "--follow-imports=silent")
"""The build's environment holds the compiler, not the package's dependencies: the modules
compiled import none of them, and what the rest of the package imports is typed Any."""


def compiling() -> bool:
    """Whether this build compiles the log parse (``MAIL_EXPORTER_COMPILE=1``)."""
    return os.environ.get(COMPILE_VARIABLE, "") == "1"


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    # setuptools' answer comes from running setup.py, which needs the compiler when
    # compiling; setup.py asks for nothing else (no setup_requires), so the compiler is all.
    if compiling():
        return [MYPYC]
    requires: list[str] = build_meta.get_requires_for_build_wheel(config_settings)
    return requires


def ext_modules() -> list[Any]:
    """The compiled modules' extensions for setup(), or none."""
    if not compiling():
        return []
    from mypyc.build import mypycify

    return list(mypycify([*MYPYC_OPTIONS, *COMPILED_MODULES], opt_level="3"))
