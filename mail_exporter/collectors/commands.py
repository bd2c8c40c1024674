"""Running the programs collectors ask (postqueue, exim -bpc, qmail-qread, …) safely.

Every command gets a time limit and is killed when it runs out, so a hung
program never outlives the scrape; a failure becomes a :class:`CollectorError`
that says which command failed and what it said.
"""

from __future__ import annotations

import shlex
import subprocess

from mail_exporter.collectors.base import CollectorError

COMMAND_ERROR_CHARS = 500
"""How much of a failing command's message goes into the error."""


def run_command(command: list[str], timeout: float) -> str:
    """A command's standard output; CollectorError saying why when it fails or hangs."""
    shown = shlex.join(command)
    try:
        completed = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
            encoding="utf-8", errors="replace", check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise CollectorError(f"{shown}: no answer within {timeout:.3g}s, killed") from None
    except OSError as error:
        raise CollectorError(f"{shown}: {error.strerror or error}") from None
    if completed.returncode != 0:
        said = _one_line(completed.stderr or completed.stdout)
        raise CollectorError(f"{shown}: exit status {completed.returncode}: {said}")
    return completed.stdout


def _one_line(text: str) -> str:
    """A command's message for the log: its lines joined, cut at COMMAND_ERROR_CHARS."""
    lines = [line.strip() for line in text.splitlines()]
    return " / ".join(line for line in lines if line)[:COMMAND_ERROR_CHARS]
