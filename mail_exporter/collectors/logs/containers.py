"""Following the log files of many containers: found by a glob, picked by name.

A ``containers`` source follows every file its glob matches, each as a
:class:`~.files.FileFollower` would (rotation, positions, the runtime's records opened
by :mod:`.envelopes`), all in one thread and counted under the one ``source`` label:
containers come and go, and a label per container would be a series per container ID.

* **Names.** ``containers`` (shell patterns) picks files by their container's name:
  Docker's is ``Name`` in ``config.v2.json`` beside ``ID-json.log``; podman's is in
  ``overlay-containers/containers.json`` beside ``ID/userdata/ctr.log``; a kubelet's
  ``/var/log/pods/NAMESPACE_POD_UID/CONTAINER/N.log`` is ``NAMESPACE/POD/CONTAINER``;
  any other file is named by its path. A name is read once, when it is first found.
* **New containers**: the glob is matched again every ``SCAN_SECONDS``; a file found
  after the first scan is read from its start (all of it is new), as is, after a
  restart with a state file, one that has no recorded position (its container started
  while the exporter was down). At the first scan ``start_at`` decides.
* **Gone containers**: a file that the glob no longer matches (its container was
  removed) is read to its end through the open descriptor and dropped.
* **Bounded**: at most ``max_files`` files (the most recently written); the rest are
  left, with a warning naming how many, until a slot is free.

``mail_log_source_up`` is 0 while no file matches, while the runtime's directory cannot
be listed or a container's name cannot be read (as a user other than root, Docker's
0710 directories and 0600 ``config.v2.json`` just match nothing, which would be silent),
and while one of the files cannot be read; the reason is logged. The position is the
files' positions by path. Opening a Docker record (``json.loads``) costs about as much
as parsing the line inside: 134 000 records a second against 268 000 CRI records and
184 000 Postfix lines dispatched, on one core of the test machine.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import json
import logging
import os
import time
from pathlib import Path

from mail_exporter.collectors.logs.config import LogsConfig, LogSource
from mail_exporter.collectors.logs.files import FileFollower
from mail_exporter.collectors.logs.follower import Follower, Position
from mail_exporter.collectors.logs.lines import LineSplitter

logger = logging.getLogger(__name__)

SCAN_SECONDS = 5.0
METADATA_BYTES = 4 * 1024 * 1024
"""The most read of a runtime's metadata file for a name (podman's lists every container)."""


def _json_file(path: str) -> object:
    """The JSON in ``path``; None if there is none. Unreadable raises PermissionError:
    a name that cannot be read must not quietly become the path and miss its pattern."""
    try:
        with open(path, "rb") as file:
            return json.loads(file.read(METADATA_BYTES))
    except PermissionError:
        raise
    except (OSError, ValueError):
        return None


def unlistable(pattern: str) -> str | None:
    """The directory above the glob's first pattern when it cannot be listed, else None:
    glob() would just match nothing (Docker keeps /var/lib/docker/containers 0710 root)."""
    fixed = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    directory = str(Path(*fixed)) if fixed else "."
    readable = os.access(directory, os.R_OK | os.X_OK) or not os.path.isdir(directory)
    return None if readable else directory


def container_name(path: str) -> str:
    """The name of the container whose log ``path`` is, as its runtime records it.

    Raises PermissionError when the runtime's record of it cannot be read."""
    directory = os.path.dirname(path)
    docker = _json_file(os.path.join(directory, "config.v2.json"))
    if isinstance(docker, dict) and isinstance(docker.get("Name"), str):
        return str(docker["Name"]).lstrip("/")
    if os.path.basename(directory) == "userdata":  # podman: ID/userdata/ctr.log
        container = os.path.dirname(directory)
        listing = _json_file(os.path.join(os.path.dirname(container), "containers.json"))
        wanted = os.path.basename(container)
        for entry in listing if isinstance(listing, list) else []:
            names = entry.get("names") if isinstance(entry, dict) else None
            if entry.get("id") == wanted and isinstance(names, list) and names:
                return str(names[0])
    pod = os.path.basename(os.path.dirname(directory)).split("_")
    if len(pod) == 3:  # the kubelet's NAMESPACE_POD_UID/CONTAINER/N.log
        return f"{pod[0]}/{pod[1]}/{os.path.basename(directory)}"
    return path


class ContainerLog(FileFollower):
    """One container's log file, read in its source's thread and counted as its source."""

    def __init__(self, owner: ContainersFollower, path: str, settings: LogsConfig) -> None:
        source = owner.source.model_copy(update={"type": "file", "path": Path(path)})
        super().__init__(source, settings)
        self.owner = owner
        self.label = f"{owner.label} {path}"

    def count(self, lines: list[str], splitter: LineSplitter) -> None:
        Follower.deliver(self.owner, lines, splitter)

    def progressed(self, checkpoint: Position) -> None:
        self.checkpoint = checkpoint
        self.owner.progressed(self.owner.files_position())

    def report(self, problem: str | None) -> None:
        """Kept for the source to report (see :meth:`ContainersFollower.report_files`)."""
        if problem != self.problem:
            logger.debug("log source %s: %s", self.label, problem or "reading")
        self.problem = problem

    def _count_rotation(self, kind: str) -> None:
        self.owner.rotations[kind] = self.owner.rotations.get(kind, 0) + 1

    def finish(self) -> None:
        """Read what the file still holds, then let it go."""
        with contextlib.suppress(OSError):
            self.cycle()
        self._finish()


class ContainersFollower(Follower):
    """The log files of the containers a source selects, as they come and go."""

    def __init__(self, source: LogSource, settings: LogsConfig) -> None:
        super().__init__(source, settings)
        self.settings = settings
        self.pattern = str(source.container_logs)
        self.logs: dict[str, ContainerLog] = {}
        self.names: dict[str, str] = {}
        self._resume: dict[str, Position] = {}
        self._restored = False  # positions recorded: a file without one is new
        self._scanned = False
        self._left_out = 0
        self._unreadable: str | None = None  # a container's name that could not be read

    def restore(self, position: Position) -> None:
        files = position.get("files")
        if isinstance(files, dict):
            self._resume = {path: p for path, p in files.items() if isinstance(p, dict)}
            self._restored = True

    def files_position(self) -> Position:
        return {"files": {path: log.checkpoint for path, log in self.logs.items()}}

    def run(self) -> None:
        next_scan = 0.0
        while not self.stopping():
            if time.monotonic() >= next_scan:
                self.scan()
                next_scan = time.monotonic() + SCAN_SECONDS
            if not self.cycle():
                self.wait(self.poll_interval)
        for log in self.logs.values():
            log.finish()

    def cycle(self) -> bool:
        """Read what is new in every file; True if anything was."""
        busy = False
        for log in self.logs.values():
            try:
                busy = log.cycle() or busy
            except OSError as error:
                log.report(f"cannot read {log.path}: {error}")
                log._drop_current()
        self.report_files()
        return busy

    def report_files(self) -> None:
        """Up unless a file cannot be read; one whose container is gone is no problem."""
        if not self.logs:
            return  # the scan says why
        troubled = [log.problem for log in self.logs.values() if log.problem]
        troubled = [problem for problem in troubled if not problem.startswith("waiting for")]
        self.report(troubled[0] if troubled else None)

    def scan(self) -> None:
        """Match the glob again: follow new files, let go of the ones gone."""
        self._unreadable = None
        selected = self._select(glob.glob(self.pattern))
        for path in [path for path in self.logs if path not in selected]:
            self.logs.pop(path).finish()
        for path in selected:
            if path not in self.logs:
                self.logs[path] = self._follow(path)
        first, self._scanned = not self._scanned, True
        if first or selected:
            self.progressed(self.files_position())
        if selected:
            self.report_files()
        elif (directory := unlistable(self.pattern)) is not None:
            self.report(f"cannot list {directory}: permission denied (see docs/container-logs.md)")
        elif self._unreadable is not None:
            self.report(f"cannot read the container's name in {self._unreadable}: "
                        "permission denied (see docs/container-logs.md)")  # fmt: skip
        else:
            names = ", ".join(self.source.containers) or "any container"
            self.report(f"waiting for a log of {names} at {self.pattern}")

    def _select(self, paths: list[str]) -> list[str]:
        patterns = self.source.containers
        names: dict[str, str] = {}
        for path in paths:
            try:
                names[path] = self.names.get(path) or container_name(path)
            except PermissionError as error:
                self._unreadable = str(error.filename)
        # a name not found (its runtime's record not written yet) is looked for again
        self.names = {path: name for path, name in names.items() if name != path}
        wanted = [
            path
            for path in names
            if not patterns or any(fnmatch.fnmatchcase(names[path], p) for p in patterns)
        ]
        limit = self.source.container_files
        if len(wanted) > limit:
            wanted.sort(key=lambda path: (path not in self.logs, -_modified(path)))
            if len(wanted) - limit != self._left_out:
                logger.warning(
                    "log source %s: %d container logs more than max_files %d are not read",
                    self.label, len(wanted) - limit, limit,
                )  # fmt: skip
        self._left_out = max(0, len(wanted) - limit)
        return wanted[:limit]

    def _follow(self, path: str) -> ContainerLog:
        log = ContainerLog(self, path, self.settings)
        position = self._resume.pop(path, None)
        if position is not None:
            log.restore(position)
        elif self._scanned or self._restored:
            log.start_at = "beginning"  # a container started after we did
        return log


def _modified(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0
