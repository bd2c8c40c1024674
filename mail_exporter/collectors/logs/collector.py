"""The ``logs`` collector: followers in the background, counters rendered at scrape time.

Each configured source gets a follower thread (:mod:`.files`, :mod:`.containers`,
:mod:`.journal`, or standard input) feeding one :class:`~.dispatch.LineDispatcher`; a
scrape only copies the counters. Followers start with the collector and stop in :meth:`close`.

Reloads: a logs collector rebuilt for a changed section is handed its predecessor and
takes over from it. It stops the predecessor's followers first, so that their positions
are final, then continues each source that is still configured exactly after the last
line counted (nothing lost, nothing counted twice), with the same counters (they go on
counting instead of starting over), the same per-message parser state (a message's
first line is not taken for a new one), and each source's own counts. Until the new
collector replaces it, scrapes read the shared counters through the predecessor, so no
counter ever moves backwards. Positions go to the state file as well, when one is
configured, for restarts.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import Metric

from mail_exporter.collectors.base import Collector, register_collector
from mail_exporter.collectors.logs.config import LogsConfig, LogSource
from mail_exporter.collectors.logs.containers import ContainersFollower
from mail_exporter.collectors.logs.counters import LogCounters
from mail_exporter.collectors.logs.dispatch import LineDispatcher
from mail_exporter.collectors.logs.files import FileFollower
from mail_exporter.collectors.logs.follower import Feed, Follower, Position, StdinFollower
from mail_exporter.collectors.logs.journal import JournalFollower
from mail_exporter.collectors.logs.render import Snapshot, families
from mail_exporter.collectors.logs.replies import ReplyReasons
from mail_exporter.collectors.logs.state import StateFile


def make_follower(source: LogSource, settings: LogsConfig) -> Follower:
    if source.type == "journal":
        return JournalFollower(source, settings)
    if source.type == "stdin":
        return StdinFollower(source, settings)
    if source.type == "containers":
        return ContainersFollower(source, settings)
    return FileFollower(source, settings)


class LogsCollector:
    """Counts what the configured logs say; see the package docstring for the metrics."""

    def __init__(self, settings: LogsConfig, previous: LogsCollector | None = None) -> None:
        self.settings = settings
        self.state = StateFile(settings.state_file) if settings.state_file else None
        saved = self.state.load() if self.state else {}
        self.followers: list[Follower] = [make_follower(s, settings) for s in settings.sources]
        self._closed = False
        earlier: dict[str, Follower] = {}
        if previous is None:
            self.counters = LogCounters(
                settings.top_domains, settings.top_accounts, settings.account_address_window
            )
            self.dispatcher = self._dispatcher()
        else:  # last: the predecessor stops counting only once this one is ready to
            previous.close()
            earlier = {follower.key: follower for follower in previous.followers}
            self.counters = previous.counters
            self.counters.set_top_domains(settings.top_domains)
            self.counters.set_accounts(settings.top_accounts, settings.account_address_window)
            self.dispatcher = previous.dispatcher
            if _parsing(previous.settings) != _parsing(settings):
                self.dispatcher = self._dispatcher()
        for follower in self.followers:
            feed = Feed(
                self.dispatcher.batch_feeder(follower.source.format),
                self.dispatcher.messages,
                self.counters.lock,
                self._save_state,
            )
            before = earlier.get(follower.key)
            if before is not None:
                follower.count_on(before)
            position = before.checkpoint if before is not None else None
            follower.start(feed, position or saved.get(follower.key))

    def positions(self) -> dict[str, Position]:
        return {f.key: f.checkpoint for f in self.followers if f.checkpoint}

    def _save_state(self, force: bool = False) -> None:
        if self.state is not None:
            self.state.save(self.positions(), force)

    def collect(self) -> Iterable[Metric]:
        return list(families(Snapshot.take(self.counters), self.followers))

    def close(self) -> None:
        """Stop following and save the positions; a successor may still take them over."""
        if self._closed:
            return
        self._closed = True
        for follower in self.followers:
            follower.stop()
        self._save_state(force=True)

    def _dispatcher(self) -> LineDispatcher:
        settings = self.settings
        replies = ReplyReasons((entry.pattern, entry.reason) for entry in settings.reply_reasons)
        return LineDispatcher(self.counters, settings.postfix_syslog_names, replies)


def _parsing(settings: LogsConfig) -> tuple[object, ...]:
    """What the dispatcher is built from: a reload that changes it starts a new dispatcher
    (without the predecessor's per-message state), any other keeps the running one."""
    return settings.postfix_syslog_names, settings.reply_reasons


@register_collector(
    "logs", "Counters from Postfix, Exim, Dovecot and content filter logs", LogsConfig
)
def _logs(section: LogsConfig, previous: Collector | None) -> LogsCollector:
    return LogsCollector(section, previous if isinstance(previous, LogsCollector) else None)
