"""From a line to the parser of the program that wrote it, with plain string operations.

A syslog line is ``DATE HOST TAG: TEXT``: the tag is the last word before the first
``": "`` (no timestamp form, RFC 3164 or RFC 3339, contains ``": "``), its ``[pid]`` is
cut off, and the tag picks a route once: the route (handler, label, coverage keys) is
cached by tag, so the steady state costs one dict lookup per line before the handler
looks at the text. The cache holds at most ``MAX_ROUTES`` tags of at most
``MAX_TAG_CHARS`` each (512 KB of tag text, whatever tags a log is full of); any other
tag is routed line by line (and a longer one counts as ``program="other"``, see
:mod:`.labels`). Journal entries arrive as (SYSLOG_IDENTIFIER, MESSAGE) and take the
same routes. Sources in a program's own format (Dovecot's log_path, Exim's mainlog,
rspamd.log) go to that program's parser directly.

Every line counts in ``mail_log_lines_total{mta, result}`` (and by program): ``parsed``
when its handler recognised it, ``unsupported`` otherwise, including lines of programs
no parser knows (``mta="other"``). A handler that raises on a malformed line costs
that line (counted unsupported), never the follower.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from mail_exporter.collectors.logs.counters import Labels, LogCounters
from mail_exporter.collectors.logs.dovecot import DovecotParser
from mail_exporter.collectors.logs.exim import EximParser
from mail_exporter.collectors.logs.labels import MAX_NAME_CHARS
from mail_exporter.collectors.logs.postfix import Handler, PostfixParser
from mail_exporter.collectors.logs.replies import ReplyReasons
from mail_exporter.collectors.logs.spam import SpamParser

logger = logging.getLogger(__name__)

MAX_ROUTES = 4096
"""Distinct tags remembered; past that (a log full of random tags) routes are not cached."""
MAX_TAG_CHARS = MAX_NAME_CHARS
"""A longer tag is no program's name (RFC 5424: 48 characters): routed, never cached."""

Route = tuple[Handler, str, Labels, Labels]
"""Handler, its label argument, and the coverage keys for parsed and unsupported lines."""
LineFeeder = Callable[[str], None]
BatchFeeder = Callable[[list[str]], None]
"""Takes a follower's batch of lines (at most ``follower.DISPATCH_LINES``): the loop over
them runs in this module, which the container image compiles (build_support/), where it
costs 3 to 9 % less than a loop in the follower calling a compiled function per line
(docs/benchmarks.md, section 6)."""


def _unknown(label: str, text: str) -> bool:
    return False


class LineDispatcher:
    """Routes lines to the Postfix, Exim, Dovecot and content filter parsers."""

    def __init__(
        self,
        counters: LogCounters,
        postfix_syslog_names: Iterable[str] = (),
        replies: ReplyReasons | None = None,
    ) -> None:
        self.counters = counters
        replies = replies or ReplyReasons()
        self.postfix = PostfixParser(counters, postfix_syslog_names, replies=replies)
        self.exim = EximParser(counters, replies)
        self.dovecot = DovecotParser(counters)
        self.spam = SpamParser(counters)
        self._programs: dict[str, tuple[str, Handler]] = {
            "dovecot": ("dovecot", self.dovecot.syslog),
            "auth": ("dovecot", self.dovecot.auth_syslog),
            "dovecot-auth": ("dovecot", self.dovecot.auth_syslog),
            "exim": ("exim", self.exim.syslog),
            "exim4": ("exim", self.exim.syslog),
            "rspamd": ("rspamd", self.spam.rspamd),
            "amavis": ("amavis", self.spam.amavis),
            "amavisd": ("amavis", self.spam.amavis),
            "amavisd-new": ("amavis", self.spam.amavis),
            "spamd": ("spamassassin", self.spam.spamd),
            "clamd": ("clamav", self.spam.clamav),
            "clamav-milter": ("clamav", self.spam.clamav),
        }
        self._routes: dict[str, Route] = {}

    def feeder(self, log_format: str) -> LineFeeder:
        """The function that takes one line of a source in ``log_format``."""
        own = self._own_formats().get(log_format)
        return self.syslog_line if own is None else self._own_format(*own)

    def batch_feeder(self, log_format: str) -> BatchFeeder:
        """The function that takes a batch of lines of a source in ``log_format``."""
        own = self._own_formats().get(log_format)
        if own is None:
            return self.syslog_lines
        feed = self._own_format(*own)

        def feed_batch(lines: list[str]) -> None:
            for line in lines:
                feed(line)

        return feed_batch

    def syslog_lines(self, lines: list[str]) -> None:
        """A batch of syslog lines, one by one."""
        for line in lines:
            self.syslog_line(line)

    def messages(self, messages: list[tuple[str, str]]) -> None:
        """A batch of (program, text) messages, one by one."""
        for program, text in messages:
            self.syslog_line(text, program)

    def syslog_line(self, line: str, program: str | None = None) -> None:
        """One syslog line, or with ``program`` one message of that program (a journal
        entry, whose tag comes apart from its text). One function for both: a call less
        on every line is 3 % of the parse. partition() cuts head and text in one call, a
        third cheaper than find() and slices."""
        if program is not None:
            tag, text = program, line
        else:
            head, colon, text = line.partition(": ")
            tag = head.rpartition(" ")[2] if colon else ""
            if tag.endswith("]"):  # the tag without its [pid]
                name, bracket, _ = tag.rpartition("[")
                tag = name if bracket else tag[:-1]
        route = self._routes.get(tag) or self._route(tag)
        handler, label, parsed, unsupported = route
        try:
            understood = handler(label, text)
        except Exception:  # a malformed line must cost only itself
            logger.debug("log line not understood by %s: %r", tag, text, exc_info=True)
            understood = False
        self.counters.lines[parsed if understood else unsupported] += 1

    def _route(self, program: str) -> Route:
        found = self.postfix.route(program)
        if found is not None:
            mta, (handler, label) = "postfix", found
        else:
            mta, handler = self._programs.get(program, ("other", _unknown))
            label = program
        name = self.counters.programs(program or "none")
        route = (handler, label, (mta, name, "parsed"), (mta, name, "unsupported"))
        if len(self._routes) < MAX_ROUTES and len(program) <= MAX_TAG_CHARS:
            self._routes[program] = route
        return route

    def _dovecot_line(self, line: str) -> bool:
        """``DATE PROCESS: [Level: ]TEXT`` from Dovecot's own log file."""
        colon = line.find(": ")
        if colon < 0:
            return False
        process = line[line.rfind(" ", 0, colon) + 1 : colon]
        return self.dovecot.line(process, line[colon + 2 :])

    def _own_formats(self) -> dict[str, tuple[str, Callable[[str], bool]]]:
        """The formats of programs' own log files: each one's mta and line parser."""
        return {
            "dovecot": ("dovecot", self._dovecot_line),
            "exim": ("exim", self.exim.file_line),
            "rspamd": ("rspamd", self.spam.rspamd_line),
        }

    def _own_format(self, mta: str, parse: Callable[[str], bool]) -> LineFeeder:
        parsed, unsupported = (mta, mta, "parsed"), (mta, mta, "unsupported")
        lines = self.counters.lines

        def feed(line: str) -> None:
            try:
                understood = parse(line)
            except Exception:  # a malformed line must cost only itself
                logger.debug("%s log line not understood: %r", mta, line, exc_info=True)
                understood = False
            lines[parsed if understood else unsupported] += 1

        return feed
