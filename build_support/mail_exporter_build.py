"""The package's build backend: setuptools' own, and a wheel built with
``MAIL_EXPORTER_COMPILE=1`` has the log parse compiled with mypyc
(:mod:`mail_exporter_compiled` says which modules, and why).

This module is the PEP 517 backend named in pyproject.toml (``backend-path``); ``setup.py``
asks :func:`ext_modules` for the extensions. Only :func:`build_wheel` compiles: every other
hook (metadata, sdist, editable) runs ``setup.py`` without extensions, so none of them needs
the compiler, and an editable install never puts compiled modules into the checkout. When
compiling, mypy (the release the lint extra pins, so that what compiles is what is checked)
joins what a wheel's build needs.
"""

from __future__ import annotations

from typing import Any

from mail_exporter_compiled import COMPILED_MODULES, compiling
from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F403  (the whole PEP 517 interface, as setuptools has it)

MYPYC = "mypy==2.4.1"
MYPYC_OPTIONS = ("--ignore-missing-imports", "--follow-imports=silent")
"""The build's environment holds the compiler, not the package's dependencies: the modules
compiled import none of them, and what the rest of the package imports is typed Any."""


class _Hook:
    """Which hook is running: :func:`ext_modules` compiles only inside :func:`build_wheel`."""

    building_wheel = False


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    requires: list[str] = build_meta.get_requires_for_build_wheel(config_settings)
    return [*requires, MYPYC] if compiling() else requires


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    _Hook.building_wheel = True  # setup.py runs in this process, within this call
    try:
        name: str = build_meta.build_wheel(wheel_directory, config_settings, metadata_directory)
        return name
    finally:
        _Hook.building_wheel = False


def ext_modules() -> list[Any]:
    """The compiled modules' extensions for setup(): none unless a wheel is being built
    with ``MAIL_EXPORTER_COMPILE=1``."""
    if not (_Hook.building_wheel and compiling()):
        return []
    from mypyc.build import mypycify

    return list(mypycify([*MYPYC_OPTIONS, *COMPILED_MODULES], opt_level="3"))
