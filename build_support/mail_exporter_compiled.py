"""Which modules the compiled build compiles, and how a build is asked to: read by the build
backend (:mod:`mail_exporter_build`) and by the tests, so it imports nothing of setuptools.

Every line of a followed log goes through these modules (routing by syslog tag, the Postfix
parser and the counts it keeps). Compiled with mypyc, mypy's compiler, from the same source,
unchanged, they take about 40 % less CPU per line (docs/benchmarks.md, section 6: what
makes the log collector three times as fast as postfix_exporter). The container image asks
for it (its build stage has a C compiler); a plain ``pip install`` stays pure Python and
needs none, and an editable install is always pure (compiled modules in the checkout would
shadow its sources). The test suite runs the log tests against the compiled modules too
(tests/test_logs_compiled.py); a module compiled or not imports under the same name.
"""

from __future__ import annotations

import os

COMPILE_VARIABLE = "MAIL_EXPORTER_COMPILE"
"""Set to 1, a wheel's build compiles :data:`COMPILED_MODULES`."""
COMPILED_MODULES = tuple(
    f"mail_exporter/collectors/logs/{name}.py"
    for name in (
        "dispatch", "postfix", "domains", "counters", "labels", "rejects", "replies", "senders"
    )
)  # fmt: skip


def compiling() -> bool:
    """Whether the environment asks for the compiled build (``MAIL_EXPORTER_COMPILE=1``)."""
    return os.environ.get(COMPILE_VARIABLE, "") == "1"
