"""``python -m demo [--dir DIR] run | stop | break NAME | repair``: what the ``make demo…``
targets call.

``run`` stays in the foreground until Ctrl-C or ``stop`` (SIGTERM to the pid in the
directory's state file). ``break`` and ``repair`` post to the running demo's own HTTP
server (its URL is in the state file): the servers they act on are objects of that process.
A demo that died without its teardown (SIGKILL) left its servers running; ``stop`` ends
the processes its state file names.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any

from demo.control import Printer
from demo.stack import BREAKS, STATE_FILE, Demo
from tests.realservers.runtime import ServerStartError, end_session, process_alive

DEFAULT_DIRECTORY = Path(".cache/demo")
PROGRAMS = ("postfix", "dovecot", "prometheus", "prometheus-alertmanager")
STOP_SECONDS = 120.0
"""Hang guard for ``stop``: the teardown takes a few seconds."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIRECTORY, help="the demo's files and state"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="start the demo and stay in the foreground")
    commands.add_parser("stop", help="stop the running demo")
    breaking = commands.add_parser("break", help="break something in the running demo")
    breaking.add_argument("name", choices=list(BREAKS))
    commands.add_parser("repair", help="undo the breaks")
    arguments = parser.parse_args(argv)
    directory: Path = arguments.dir.resolve()
    if arguments.command == "run":
        return run(directory)
    if arguments.command == "stop":
        return stop(directory)
    return act(directory, arguments.name if arguments.command == "break" else "repair")


def _error(text: str) -> int:
    print(text, file=sys.stderr, flush=True)
    return 1


def _state(directory: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((directory / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    return state


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # One stop is enough: a second Ctrl-C must not cut the teardown short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def run(directory: Path) -> int:
    if os.geteuid() != 0:
        return _error("The demo runs Postfix and Dovecot, which start as root: run it as root.")
    missing = [program for program in PROGRAMS if shutil.which(program) is None]
    if missing:
        return _error(f"Not installed: {', '.join(missing)} (`make test-packages` installs them).")
    state = _state(directory)
    if state is not None and process_alive(state["pid"]):
        return _error(f"A demo already runs (pid {state['pid']}): `make demo-stop` ends it.")
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    printer = Printer(directory)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with ExitStack() as stack:
            stack.callback(shutil.rmtree, directory, ignore_errors=True)
            printer.say("Starting Postfix, Dovecot, the exporter, Alertmanager and Prometheus...")
            demo = Demo(directory, printer)
            demo.start(stack)
            demo.write_state(os.getpid())
            printer.say(demo.banner())
            while True:
                signal.pause()
    except KeyboardInterrupt:
        printer.say("The demo has stopped and its files are removed.")
    except ServerStartError as error:
        return _error(f"The demo could not start: {error}")
    return 0


def stop(directory: Path) -> int:
    state = _state(directory)
    if state is None:
        print(f"No demo runs with its files in {directory}.")
        return 0
    pid = state["pid"]
    if not process_alive(pid):
        print(f"The demo (pid {pid}) is gone; stopping what it left running.")
        _end_leftovers(state)
        shutil.rmtree(directory, ignore_errors=True)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    while process_alive(pid):
        if time.monotonic() > deadline:
            return _error(f"The demo (pid {pid}) did not stop within {STOP_SECONDS:.0f}s.")
        time.sleep(0.2)
    print("The demo has stopped.")
    return 0


def _end_leftovers(state: dict[str, Any]) -> None:
    for pid in state["pids"].values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for name, session in state["sessions"].items():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(session, signal.SIGTERM)
        end_session(session, name, timeout=10)


def act(directory: Path, name: str) -> int:
    state = _state(directory)
    if state is None or not process_alive(state["pid"]):
        return _error("No demo runs: start one with `make demo`.")
    request = urllib.request.Request(f"{state['control_url']}/break/{name}", b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            print(response.read().decode(), end="")
    except urllib.error.HTTPError as error:
        return _error(error.read().decode().strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
