"""Running the programs collectors ask (postqueue, exim -bpc, qmail-qread, …) safely.

Every command gets a time limit and is killed when it runs out, so a hung
program never outlives the scrape; a failure becomes a :class:`CollectorError`
that says which command failed and what it said.
"""

from __future__ import annotations

import os
import selectors
import shlex
import subprocess
import time

from mail_exporter.collectors.base import CollectorError

COMMAND_ERROR_CHARS = 500
"""How much of a failing command's message goes into the error."""
READ_CHUNK_BYTES = 1 << 16


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


def run_bounded(command: list[str], timeout: float, max_bytes: int) -> str:
    """A command's standard output, at most ``max_bytes`` of it; CollectorError saying why
    when it fails, hangs or says more (the command is killed then, not read to its end)."""
    shown = shlex.join(command)
    try:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except FileNotFoundError:
        raise CollectorError(f"{command[0]} not found: is it installed, and on the PATH?") from None
    except OSError as error:
        raise CollectorError(f"{shown}: {error.strerror or error}") from None
    deadline = time.monotonic() + timeout
    assert process.stdout is not None and process.stderr is not None
    out, err = process.stdout.fileno(), process.stderr.fileno()
    streams = {out: bytearray(), err: bytearray()}
    with process, selectors.DefaultSelector() as selector:
        for fd in streams:
            selector.register(fd, selectors.EVENT_READ)
        try:
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CollectorError(f"{shown}: no answer within {timeout:.3g}s, killed")
                for key, _ in selector.select(remaining):
                    chunk = os.read(key.fd, READ_CHUNK_BYTES)
                    if not chunk:
                        selector.unregister(key.fileobj)
                    streams[key.fd] += chunk
                    if len(streams[key.fd]) > max_bytes:
                        raise CollectorError(f"{shown}: more than {max_bytes} bytes of output")
            returncode = process.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            process.kill()
            raise CollectorError(f"{shown}: no answer within {timeout:.3g}s, killed") from None
        except CollectorError:
            process.kill()
            raise
    stdout, stderr = (streams[fd].decode(errors="replace") for fd in (out, err))
    if returncode != 0:
        raise CollectorError(f"{shown}: exit status {returncode}: {_one_line(stderr or stdout)}")
    return stdout
