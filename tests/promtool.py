"""promtool, which the tests ask whether an exposition follows Prometheus' conventions."""

from __future__ import annotations

import asyncio
import shutil
import subprocess


async def check_metrics(text: str) -> None:
    """Fail unless ``promtool check metrics`` accepts ``text`` (it also lints names)."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: apt-get install prometheus"
    check = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
