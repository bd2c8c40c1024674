"""The ``logs`` collector: followers in the background, counters rendered at scrape time.

Each configured source gets a follower thread (:mod:`.files`, :mod:`.journal`, or
standard input) feeding one :class:`~.dispatch.LineDispatcher`; a scrape only copies
the counters. Followers start with the collector and stop in :meth:`close`.

Reloads: the collector set of the old config is closed before the new one is built,
so a closing collector parks its followers' positions and its counters in a
:class:`Handover`, and the next logs collector takes them: a source that is still
configured continues exactly after the last line counted (nothing lost, nothing
counted twice) and counters keep counting instead of starting over. Positions go
to the state file as well, when one is configured, for restarts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from prometheus_client.core import Metric

from mail_exporter.collectors import register_collector
from mail_exporter.collectors.logs.counters import LogCounters
from mail_exporter.collectors.logs.dispatch import LineDispatcher
from mail_exporter.collectors.logs.files import FileFollower
from mail_exporter.collectors.logs.follower import Feed, Follower, Position, StdinFollower
from mail_exporter.collectors.logs.journal import JournalFollower
from mail_exporter.collectors.logs.render import Snapshot, families
from mail_exporter.collectors.logs.replies import ReplyReasons
from mail_exporter.collectors.logs.state import StateFile
from mail_exporter.config import Config
from mail_exporter.config.collectors import LogsConfig, LogSource


class Handover:
    """What a closed logs collector leaves to its successor: positions and counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._positions: dict[str, Position] = {}
        self._counters: LogCounters | None = None

    def park(self, positions: dict[str, Position], counters: LogCounters) -> None:
        with self._lock:
            self._positions, self._counters = positions, counters

    def claim(self) -> tuple[dict[str, Position], LogCounters | None]:
        with self._lock:
            taken = self._positions, self._counters
            self._positions, self._counters = {}, None
            return taken


HANDOVER = Handover()


def make_follower(source: LogSource, settings: LogsConfig) -> Follower:
    if source.type == "journal":
        return JournalFollower(source, settings)
    if source.type == "stdin":
        return StdinFollower(source, settings)
    return FileFollower(source, settings)


class LogsCollector:
    """Counts what the configured logs say; see the package docstring for the metrics."""

    def __init__(self, settings: LogsConfig, handover: Handover = HANDOVER) -> None:
        self.settings = settings
        self.handover = handover
        positions, counters = handover.claim()
        self.counters = counters or LogCounters(settings.top_domains)
        self.counters.set_top_domains(settings.top_domains)
        replies = ReplyReasons((entry.pattern, entry.reason) for entry in settings.reply_reasons)
        self.dispatcher = LineDispatcher(self.counters, settings.postfix_syslog_names, replies)
        self.state = StateFile(settings.state_file) if settings.state_file else None
        saved = self.state.load() if self.state else {}
        self.followers = [make_follower(source, settings) for source in settings.sources]
        self._closed = False
        for follower in self.followers:
            feed = Feed(
                self.dispatcher.feeder(follower.source.format),
                self.dispatcher.message,
                self.counters.lock,
                self._save_state,
            )
            follower.start(feed, positions.get(follower.key) or saved.get(follower.key))

    def positions(self) -> dict[str, Position]:
        return {f.key: f.checkpoint for f in self.followers if f.checkpoint}

    def _save_state(self, force: bool = False) -> None:
        if self.state is not None:
            self.state.save(self.positions(), force)

    def collect(self) -> Iterable[Metric]:
        return list(families(Snapshot.take(self.counters), self.followers))

    def close(self) -> None:
        """Stop following; leave positions and counters to the next logs collector."""
        if self._closed:
            return
        self._closed = True
        for follower in self.followers:
            follower.stop()
        self._save_state(force=True)
        self.handover.park(self.positions(), self.counters)


@register_collector("logs", "Counters from Postfix, Exim, Dovecot and content filter logs")
def _logs(config: Config) -> LogsCollector:
    return LogsCollector(config.collectors.logs)
