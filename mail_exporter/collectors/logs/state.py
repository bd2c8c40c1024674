"""The state file: each source's read position, so a restart neither recounts nor skips.

JSON, written atomically (a temporary file renamed over the old one) at most once a
second while lines come in, and when the collector closes (stop or reload). A crash
loses at most the last second: those lines are counted again after the restart. A
missing, unreadable or foreign file means no positions (logged), never a failure.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from mail_exporter.collectors.logs.follower import Position

logger = logging.getLogger(__name__)

VERSION = 1
SAVE_EVERY_SECONDS = 1.0


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._saved_at = 0.0
        self._failing = False

    def load(self) -> dict[str, Position]:
        try:
            data: Any = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            logger.warning("log state file %s unusable, starting afresh: %s", self.path, error)
            return {}
        sources = data.get("sources") if isinstance(data, dict) else None
        if not isinstance(sources, dict) or data.get("version") != VERSION:
            logger.warning("log state file %s is not one of ours: ignored", self.path)
            return {}
        return {key: value for key, value in sources.items() if isinstance(value, dict)}

    def save(self, positions: dict[str, Position], force: bool = False) -> None:
        """Write the positions, unless the last write was less than a second ago."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._saved_at < SAVE_EVERY_SECONDS:
                return
            self._saved_at = now
            temporary = self.path.with_name(f".{self.path.name}.tmp")
            try:
                temporary.write_text(json.dumps({"version": VERSION, "sources": positions}))
                os.replace(temporary, self.path)
            except OSError as error:
                if not self._failing:
                    logger.error("cannot write log state file %s: %s", self.path, error)
                self._failing = True
                return
            self._failing = False
