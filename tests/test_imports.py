"""Every module of the package imports first, on its own: no import cycle hides behind an order.

A cycle between two modules works as long as something imports them in the right order
first, and breaks the day a new entry point (a test, a tool, a plugin) starts from the
other side. So each module is imported as the very first module of the package in a
process of its own. Third-party libraries are loaded once before, in a parent process
that has not imported this package, and each module's process is forked from it: what
is fresh in each is everything of ``mail_exporter``, which is what the test is about,
and a few hundred imports take seconds instead of minutes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mail_exporter

PACKAGE = Path(mail_exporter.__file__).parent

# ``python -m mail_exporter``: importing it runs the command line.
ENTRY_POINT = "mail_exporter.__main__"

# Prints the third-party modules the whole package loads, one a line (a module that fails
# here is reported by the next step, on its own).
LIST_DEPENDENCIES = """
import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:
        pass
print("\\n".join(n for n in sorted(sys.modules) if n.partition(".")[0] != "mail_exporter"))
"""

# Loads the modules named on stdin, then imports each module of argv first in a fork.
IMPORT_EACH_FIRST = """
import importlib, os, sys
for name in sys.stdin.read().split():
    try:
        importlib.import_module(name)
    except Exception:  # an alias in sys.modules, or a module only loadable as a side effect
        pass
assert not any(n.partition(".")[0] == "mail_exporter" for n in sys.modules)
for name in sys.argv[1:]:
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException as error:
            print(f"{name}: {error!r}", flush=True)
            os._exit(1)
        os._exit(0)
    os.waitpid(pid, 0)
"""


def package_modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return [name for name in names if name != ENTRY_POINT]


def test_every_module_imports_first_on_its_own() -> None:
    modules = package_modules()
    assert "mail_exporter.config.probes" in modules and len(modules) > 50
    listed = subprocess.run(
        [sys.executable, "-c", LIST_DEPENDENCIES, *modules],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    imported = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_FIRST, *modules],
        input=listed.stdout,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    assert imported.stdout == "", imported.stdout
